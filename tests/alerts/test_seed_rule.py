"""The seed's rule end to end: real store (uvicorn, SQLite and PostgreSQL), real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import time

from otel_audit import webhook_signature
from otel_audit.store.events import format_time

from .conftest import Served
from .helpers import NS, login_event, wait_for


def _seed(served: Served) -> tuple[dict, dict]:
    webhook = served.acme.create_webhook(served.receiver.url, description="security channel")
    rule = served.acme.create_rule(webhook_ids=[webhook["id"]])
    return webhook, rule


def _times(count: int, step_seconds: float, start: int | None = None) -> list[int]:
    base = start if start is not None else time.time_ns() - 3600 * NS
    return [base + int(index * step_seconds * NS) for index in range(count)]


def test_five_failed_logins_within_the_window_send_one_signed_delivery(served: Served) -> None:
    webhook, rule = _seed(served)
    events = [login_event("mallory") for _ in range(5)]
    served.acme.ingest(events, _times(5, 30))
    delivery = wait_for(lambda: served.acme.deliveries(status="delivered"), "the delivery")
    assert len(delivery) == 1 and delivery[0]["attempts"] == 1 and delivery[0]["last_status_code"] == 200
    assert len(served.receiver.received) == 1
    received = served.receiver.received[0]
    assert webhook_signature.verify(received.body, received.headers, webhook["secret"]) > 0
    alert = received.json["alert"]
    assert alert["rule"]["id"] == rule["id"] and alert["rule"]["name"] == "Excessive Failed Logins"
    assert alert["rule"]["severity"] == "high"
    assert alert["group"] == {"user.id": "mallory"}
    assert alert["count"] == 5 and alert["threshold"] == 5 and alert["window_seconds"] == 300
    assert alert["event_ids"] == [event["log.record.uid"] for event in events]
    assert received.headers[webhook_signature.DELIVERY_HEADER] == delivery[0]["id"]
    assert served.acme.alerts() == [alert]
    assert delivery[0]["alert_id"] == alert["id"]


def test_four_failed_logins_fire_nothing(served: Served) -> None:
    _seed(served)
    served.acme.ingest([login_event("mallory") for _ in range(4)], _times(4, 30))
    assert served.acme.alerts() == []
    assert served.acme.deliveries() == []


def test_five_spread_over_more_than_the_window_fire_nothing(served: Served) -> None:
    _seed(served)
    served.acme.ingest([login_event("mallory") for _ in range(5)], _times(5, 76))
    assert served.acme.alerts() == []
    assert served.acme.deliveries() == []


def test_five_different_users_fire_nothing_when_grouped_by_user(served: Served) -> None:
    _seed(served)
    served.acme.ingest([login_event(f"user-{index}") for index in range(5)], _times(5, 1))
    assert served.acme.alerts() == []


def test_ten_in_the_window_fire_once_then_the_cooldown_holds(served: Served) -> None:
    _seed(served)
    events = [login_event("mallory") for _ in range(10)]
    served.acme.ingest(events[:3], _times(3, 10))
    served.acme.ingest(events[3:], _times(7, 10, start=_times(4, 10)[3]))
    wait_for(lambda: served.acme.deliveries(status="delivered"), "the delivery")
    alerts = served.acme.alerts()
    assert len(alerts) == 1 and alerts[0]["event_ids"] == [event["log.record.uid"] for event in events[:5]]
    assert len(served.acme.deliveries()) == 1


def test_after_the_cooldown_a_new_burst_fires_again(served: Served) -> None:
    _seed(served)
    first = _times(5, 1)
    served.acme.ingest([login_event("mallory") for _ in range(5)], first)
    second = _times(5, 1, start=first[-1] + 301 * NS)
    served.acme.ingest([login_event("mallory") for _ in range(5)], second)
    alerts = served.acme.alerts()
    assert len(alerts) == 2
    assert {alert["window_end"] for alert in alerts} == {format_time(first[-1]), format_time(second[-1])}
    wait_for(lambda: len(served.acme.deliveries(status="delivered")) == 2, "two deliveries")


def test_out_of_order_batches_are_counted_by_event_time(served: Served) -> None:
    _seed(served)
    times = _times(5, 20)
    events = [login_event("mallory") for _ in range(5)]
    for index in (4, 0, 3, 1):
        served.acme.ingest([events[index]], [times[index]])
    assert served.acme.alerts() == []
    served.acme.ingest([events[2]], [times[2]])
    alerts = served.acme.alerts()
    assert len(alerts) == 1 and sorted(alerts[0]["event_ids"]) == sorted(e["log.record.uid"] for e in events)


def test_other_actions_outcomes_and_duplicates_do_not_count(served: Served) -> None:
    _seed(served)
    times = _times(4, 1)
    events = [login_event("mallory") for _ in range(4)]
    served.acme.ingest(events, times)
    served.acme.ingest(events, times)
    served.acme.ingest([login_event("mallory", outcome="success"), login_event("mallory", action="user.logout")],
                       _times(2, 1))
    assert served.acme.alerts() == []
    served.acme.ingest([login_event("mallory")], [times[-1] + NS])
    assert len(served.acme.alerts()) == 1
