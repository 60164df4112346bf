"""Webhook deliveries: retries with backoff, receiver down then up, exhaustion, slow receivers, secret rotation."""

from __future__ import annotations

import time

import pytest

from otel_audit import webhook_signature
from otel_audit.store import Storage

from .conftest import Served, tenant_api
from .helpers import NS, WebhookReceiver, login_event, wait_for


def _fire(served: Served, webhook_id: str, user: str = "mallory") -> None:
    base = time.time_ns() - 600 * NS
    served.acme.ingest([login_event(user) for _ in range(5)], [base + index * NS for index in range(5)])


def _rule(served: Served, url: str, **webhook: object) -> dict:
    created = served.acme.create_webhook(url, **webhook)
    served.acme.create_rule(webhook_ids=[created["id"]])
    return created


def test_receiver_down_then_up_gets_the_delivery_after_retries(served: Served) -> None:
    down = WebhookReceiver().bind()
    webhook = _rule(served, down.url)
    _fire(served, webhook["id"])
    failing = wait_for(lambda: [d for d in served.acme.deliveries() if d["attempts"] >= 3], "failed attempts")
    assert failing[0]["status"] == "pending"
    assert "ConnectError" in failing[0]["last_error"] and failing[0]["last_status_code"] is None
    with down.start():
        delivered = wait_for(lambda: served.acme.deliveries(status="delivered"), "the delivery after retries")
        assert delivered[0]["attempts"] >= 3 and delivered[0]["last_error"] is None
        assert len(down.received) == 1
        webhook_signature.verify(down.received[0].body, down.received[0].headers, webhook["secret"])


def test_error_statuses_are_retried_and_counted(served: Served) -> None:
    served.receiver.statuses[:] = [500, 503]
    _rule(served, served.receiver.url)
    _fire(served, "")
    delivered = wait_for(lambda: served.acme.deliveries(status="delivered"), "the delivery")
    assert delivered[0]["attempts"] == 3 and delivered[0]["last_status_code"] == 200
    assert served.receiver.answered == [500, 503, 200]
    assert len(served.receiver.received) == 1


def test_a_delivery_gives_up_after_max_attempts_and_says_why(storage: Storage, serve) -> None:
    with WebhookReceiver(statuses=[500] * 10) as receiver:
        server = serve(storage, max_attempts=3)
        api = tenant_api(storage, server, "acme")
        webhook = api.create_webhook(receiver.url)
        api.create_rule(webhook_ids=[webhook["id"]])
        base = time.time_ns() - 600 * NS
        api.ingest([login_event() for _ in range(5)], [base + index for index in range(5)])
        failed = wait_for(lambda: api.deliveries(status="failed"), "the delivery to fail")
        assert failed[0]["attempts"] == 3 and failed[0]["last_status_code"] == 500
        assert failed[0]["last_error"] == "gave up after 3 attempts: HTTP 500"
        assert receiver.answered == [500, 500, 500]
        api.close()


def test_a_blocked_receiver_does_not_hold_up_ingest(served: Served) -> None:
    served.receiver.release.clear()
    _rule(served, served.receiver.url)
    try:
        _fire(served, "", user="first")
        wait_for(lambda: served.acme.deliveries()[0]["attempts"] == 1, "the delivery to be in flight")
        _fire(served, "", user="second")
        assert len(served.acme.alerts()) == 2
        assert served.receiver.received == []
    finally:
        served.receiver.release.set()
    wait_for(lambda: len(served.acme.deliveries(status="delivered")) == 2, "both deliveries")


def test_rotation_signs_with_both_secrets_during_the_grace_period(served: Served) -> None:
    webhook = _rule(served, served.receiver.url, secret="an-old-secret-of-16+")
    rotated = served.acme.http.post(f"/v1/webhooks/{webhook['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != webhook["secret"]
    assert "secret" not in served.acme.http.get(f"/v1/webhooks/{webhook['id']}").json()
    _fire(served, webhook["id"])
    wait_for(lambda: served.receiver.received, "the delivery")
    received = served.receiver.received[0]
    assert received.headers[webhook_signature.SIGNATURE_HEADER].count("v1=") == 2
    for secret in (new_secret, "an-old-secret-of-16+"):
        webhook_signature.verify(received.body, received.headers, secret)
    with pytest.raises(webhook_signature.WebhookSignatureError, match="mismatch"):
        webhook_signature.verify(received.body, received.headers, "some-other-secret-value")


def test_a_webhook_in_use_cannot_be_deleted_and_deleting_fails_pending_deliveries(served: Served) -> None:
    webhook = _rule(served, served.receiver.url)
    response = served.acme.http.delete(f"/v1/webhooks/{webhook['id']}")
    assert response.status_code == 409 and "remove it from them first" in response.json()["message"]
    rule_id = served.acme.http.get("/v1/alert-rules").json()["rules"][0]["id"]
    assert served.acme.http.delete(f"/v1/alert-rules/{rule_id}").status_code == 200
    assert served.acme.http.delete(f"/v1/webhooks/{webhook['id']}").status_code == 200
    assert served.acme.http.get("/v1/webhooks").json()["webhooks"] == []


def test_signature_helper_rejects_stale_tampered_and_unsigned_requests() -> None:
    body = b'{"alert":{}}'
    now = 1_800_000_000
    headers = {webhook_signature.TIMESTAMP_HEADER: str(now),
               webhook_signature.SIGNATURE_HEADER: webhook_signature.signature_header(["s3cret"], now, body)}
    assert webhook_signature.verify(body, headers, "s3cret", now=now + 299) == now
    with pytest.raises(webhook_signature.WebhookSignatureError, match="tolerance"):
        webhook_signature.verify(body, headers, "s3cret", now=now + 301)
    with pytest.raises(webhook_signature.WebhookSignatureError, match="mismatch"):
        webhook_signature.verify(body + b" ", headers, "s3cret", now=now)
    with pytest.raises(webhook_signature.WebhookSignatureError, match="missing"):
        webhook_signature.verify(body, {}, "s3cret", now=now)
    lower = {name.lower(): value for name, value in headers.items()}
    assert webhook_signature.verify(body, lower, "s3cret", now=now) == now
