"""Tenant isolation: one tenant's rules, webhooks, alerts and deliveries are invisible and inert for another."""

from __future__ import annotations

import time

import httpx
import pytest

from otel_audit.store import create_key

from .conftest import Served
from .helpers import NS, login_event, wait_for


def test_another_tenant_can_neither_see_nor_touch_anything(served: Served) -> None:
    acme, globex = served.acme, served.globex
    webhook = acme.create_webhook(served.receiver.url)
    rule = acme.create_rule(webhook_ids=[webhook["id"]])
    base = time.time_ns() - 600 * NS
    acme.ingest([login_event() for _ in range(5)], [base + index for index in range(5)])
    alert = acme.alerts()[0]
    delivery = wait_for(lambda: acme.deliveries(status="delivered"), "acme's delivery")[0]

    for listing, field in (("/v1/alert-rules", "rules"), ("/v1/webhooks", "webhooks"), ("/v1/alerts", "alerts"),
                           ("/v1/webhook-deliveries", "deliveries")):
        assert globex.http.get(listing).json()[field] == [], listing
    assert globex.http.get("/v1/alerts", params={"rule_id": rule["id"]}).json()["alerts"] == []
    assert globex.http.get("/v1/webhook-deliveries", params={"alert_id": alert["id"]}).json()["deliveries"] == []
    for method, path in (
        ("GET", f"/v1/alert-rules/{rule['id']}"), ("PUT", f"/v1/alert-rules/{rule['id']}"),
        ("PATCH", f"/v1/alert-rules/{rule['id']}"), ("DELETE", f"/v1/alert-rules/{rule['id']}"),
        ("GET", f"/v1/webhooks/{webhook['id']}"), ("DELETE", f"/v1/webhooks/{webhook['id']}"),
        ("POST", f"/v1/webhooks/{webhook['id']}/rotate-secret"), ("GET", f"/v1/alerts/{alert['id']}"),
    ):
        body = {"name": "x", "condition": {"action": "a", "count": 1, "window_seconds": 1}, "enabled": False}
        response = globex.http.request(method, path, json=body if method in ("PUT", "PATCH") else None)
        assert response.status_code == 404, (method, path, response.text)
    stolen = globex.http.post("/v1/alert-rules", json={"name": "steal", "webhook_ids": [webhook["id"]],
                                                        "condition": {"action": "*", "count": 1, "window_seconds": 1}})
    assert stolen.status_code == 400 and stolen.json()["parameter"] == "webhook_ids"

    globex.ingest([login_event() for _ in range(10)], [base + 100 + index for index in range(10)])
    assert acme.alerts() == [alert] and globex.alerts() == []
    assert acme.http.get(f"/v1/alert-rules/{rule['id']}").json()["enabled"] is True
    assert [item["id"] for item in acme.deliveries()] == [delivery["id"]]
    assert len(served.receiver.received) == 1


def test_a_tenants_rule_only_counts_its_own_events(served: Served) -> None:
    served.globex.create_rule()
    base = time.time_ns() - 600 * NS
    served.acme.ingest([login_event() for _ in range(4)], [base + index for index in range(4)])
    served.globex.ingest([login_event() for _ in range(4)], [base + 10 + index for index in range(4)])
    assert served.globex.alerts() == [] and served.acme.alerts() == []
    served.globex.ingest([login_event()], [base + 20])
    assert len(served.globex.alerts()) == 1 and served.acme.alerts() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_scopes_are_enforced(served: Served) -> None:
    read_key = create_key(served.storage, "acme", ["read"], "reader")[1]
    headers = {"authorization": f"Bearer {read_key}"}
    url = served.server.url
    assert httpx.get(f"{url}/v1/alert-rules", headers=headers).status_code == 200
    assert httpx.post(f"{url}/v1/alert-rules", headers=headers, json={}).status_code == 403
    assert httpx.get(f"{url}/v1/webhooks", headers=headers).status_code == 403
    assert httpx.post(f"{url}/v1/webhooks", headers=headers, json={"url": "https://x"}).status_code == 403
    assert httpx.get(f"{url}/v1/alerts").status_code == 401
