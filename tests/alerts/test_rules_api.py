"""The alert-rule API: validation errors name the field; update, disable, delete; windows survive restarts."""

from __future__ import annotations

import time

import pytest

from otel_audit.store import Storage
from otel_audit.store.events import format_time

from .conftest import Served, tenant_api
from .helpers import NS, SEED_RULE, login_event, wait_for

CONDITION = SEED_RULE["condition"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("change, field", [
    ({"name": ""}, "name"),
    ({"type": "anomaly"}, "type"),
    ({"severity": "urgent"}, "severity"),
    ({"condition": {**CONDITION, "count": 0}}, "condition.count"),
    ({"condition": {**CONDITION, "count": "5"}}, "condition.count"),
    ({"condition": {**CONDITION, "window_seconds": -1}}, "condition.window_seconds"),
    ({"condition": {**CONDITION, "window_seconds": True}}, "condition.window_seconds"),
    ({"condition": {**CONDITION, "outcome": "failed"}}, "condition.outcome"),
    ({"condition": {**CONDITION, "action": "user login"}}, "condition.action"),
    ({"condition": {**CONDITION, "group_by": "user.id"}}, "condition.group_by"),
    ({"condition": {**CONDITION, "attributes": {"client.address": {"nested": 1}}}},
     "condition.attributes.client.address"),
    ({"condition": {**CONDITION, "threshold": 5}}, "condition.threshold"),
    ({"condition": {"action": "user.login", "count": 5}}, "condition.window_seconds"),
    ({"condition": "5 failed logins"}, "condition"),
    ({"cooldown_seconds": -5}, "cooldown_seconds"),
    ({"webhook_ids": ["whk_missing"]}, "webhook_ids"),
    ({"enabled": "yes"}, "enabled"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_rules_get_400_naming_the_field(served: Served, change: dict, field: str) -> None:
    response = served.acme.http.post("/v1/alert-rules", json={**SEED_RULE, **change})
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == field, response.json()
    assert response.json()["message"].startswith(field)
    assert served.acme.http.get("/v1/alert-rules").json()["rules"] == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_malformed_bodies_and_unknown_ids_get_clear_errors(served: Served) -> None:
    response = served.acme.http.post("/v1/alert-rules", content=b"{not json",
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "malformed_json"
    assert served.acme.http.post("/v1/alert-rules", json=[1]).json()["parameter"] == "body"
    assert served.acme.http.get("/v1/alert-rules/rul_nope").status_code == 404
    assert served.acme.http.get("/v1/alerts", params={"limit": "0"}).json()["parameter"] == "limit"
    assert served.acme.http.get("/v1/webhook-deliveries", params={"status": "lost"}).json()["parameter"] == "status"
    assert served.acme.http.get("/healthz").status_code == 200


def test_update_disable_and_delete(served: Served) -> None:
    rule = served.acme.create_rule()
    assert rule["cooldown_seconds"] is None and rule["enabled"] is True and rule["type"] == "threshold"
    patched = served.acme.http.patch(f"/v1/alert-rules/{rule['id']}", json={"enabled": False})
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    base = time.time_ns() - 600 * NS
    served.acme.ingest([login_event() for _ in range(6)], [base + index for index in range(6)])
    assert served.acme.alerts() == []
    replaced = served.acme.http.put(f"/v1/alert-rules/{rule['id']}", json={**SEED_RULE, "severity": "critical",
                                                                          "condition": {**CONDITION, "count": 7}})
    assert replaced.status_code == 200 and replaced.json()["condition"]["count"] == 7
    partial = served.acme.http.patch(f"/v1/alert-rules/{rule['id']}", json={"condition": {"count": 0}})
    assert partial.status_code == 400 and partial.json()["parameter"] == "condition.count"
    served.acme.ingest([login_event()], [base + 10])
    alerts = served.acme.alerts()
    assert len(alerts) == 1 and alerts[0]["count"] == 7 and alerts[0]["rule"]["severity"] == "critical"
    assert served.acme.http.get(f"/v1/alerts/{alerts[0]['id']}").json()["deliveries"] == []
    assert served.acme.http.delete(f"/v1/alert-rules/{rule['id']}").status_code == 200
    assert served.acme.http.get(f"/v1/alert-rules/{rule['id']}").status_code == 404
    assert len(served.acme.alerts()) == 1


def test_glob_actions_and_attribute_filters(served: Served) -> None:
    served.acme.create_rule(condition={"action": "user.*", "outcome": "failure", "count": 3, "window_seconds": 60,
                                       "attributes": {"client.address": ["203.0.113.7", "203.0.113.8"]},
                                       "group_by": ["client.address"]})
    base = time.time_ns() - 600 * NS
    served.acme.ingest([login_event("a", action="user.mfa"), login_event("b", action="user.password.reset"),
                        login_event("c", **{"client.address": "198.51.100.1"})], [base, base + 1, base + 2])
    assert served.acme.alerts() == []
    served.acme.ingest([login_event("d")], [base + 3])
    alerts = served.acme.alerts()
    assert len(alerts) == 1 and alerts[0]["group"] == {"client.address": "203.0.113.7"}


def test_a_restart_keeps_the_window_and_a_new_rule_sees_recent_events(storage: Storage, serve) -> None:
    base = time.time_ns() - 120 * NS
    first = serve(storage)
    api = tenant_api(storage, first, "acme")
    api.ingest([login_event() for _ in range(3)], [base, base + NS, base + 2 * NS])
    api.create_rule()
    api.ingest([login_event()], [base + 3 * NS])
    api.close()
    first.__exit__()
    second = serve(storage)
    api = tenant_api(storage, second, "acme")
    assert api.alerts() == []
    api.ingest([login_event()], [base + 4 * NS])
    alerts = api.alerts()
    assert len(alerts) == 1 and alerts[0]["count"] == 5
    api.close()


def test_a_failed_evaluation_is_caught_up_from_the_stored_events(served: Served, monkeypatch) -> None:
    engine = served.server.app.state.store.alerting.engine
    served.acme.create_rule()
    real_evaluate = engine.evaluate
    failures: list[int] = []

    def failing_once(tenant_id, hits):
        if not failures:
            failures.append(len(hits))
            raise ConnectionError("database went away mid-evaluation")
        return real_evaluate(tenant_id, hits)

    monkeypatch.setattr(engine, "evaluate", failing_once)
    base = time.time_ns() - 600 * NS
    served.acme.ingest([login_event() for _ in range(5)], [base + index for index in range(5)])
    # the hook runs once the batch is stored (with SQLite after ingest answered, when the journal is merged)
    assert wait_for(lambda: failures, "the ingest hook's evaluation") == [5]
    alerts = wait_for(served.acme.alerts, "the rebuild to fire the alert")
    assert len(alerts) == 1 and alerts[0]["count"] == 5


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_new_rule_fires_at_the_first_window_of_the_stored_history(served: Served) -> None:
    base = time.time_ns() - 900 * NS
    early = [base + index * NS for index in range(5)]
    others = [base + 10 * NS + index for index in range(1000)]
    late = [base + (100 + index) * NS for index in range(5)]
    served.acme.ingest([login_event("mallory") for _ in early], early)
    served.acme.ingest([login_event(f"user-{index}") for index in range(len(others))], others)
    served.acme.ingest([login_event("mallory") for _ in late], late)
    served.acme.create_rule()
    alerts = served.acme.alerts()
    assert len(alerts) == 1
    assert alerts[0]["window_end"] == format_time(early[-1]) and alerts[0]["group"] == {"user.id": "mallory"}
