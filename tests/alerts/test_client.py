"""AuditClient and AsyncAuditClient against a served store: rules, webhooks, alerts and the delivery log."""

from __future__ import annotations

import asyncio
import time

import pytest

from otel_audit import webhook_signature
from otel_audit.client import AsyncAuditClient, AuditClient, AuditClientError
from otel_audit.store import create_key

from .conftest import Served
from .helpers import NS, login_event, wait_for

FAILED_LOGINS = {"action": "user.login", "outcome": "failure", "count": 5, "window_seconds": 300,
                 "group_by": ["user.id"]}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_sync_client_manages_rules_and_reads_alerts_and_deliveries(served: Served) -> None:
    key = create_key(served.storage, "acme", ["ingest", "read", "admin"])[1]
    with AuditClient(served.server.url, api_key=key) as client:
        webhook = client.create_webhook(served.receiver.url, description="#security")
        assert webhook.secret and webhook.secret.startswith("whsec_")
        assert [item.id for item in client.list_webhooks()] == [webhook.id]
        assert client.list_webhooks()[0].secret is None
        rule = client.create_alert_rule("Excessive Failed Logins", FAILED_LOGINS, severity="high",
                                        webhook_ids=[webhook.id])
        assert client.get_alert_rule(rule.id) == rule and client.list_alert_rules() == [rule]
        with pytest.raises(AuditClientError) as invalid:
            client.create_alert_rule("bad", {**FAILED_LOGINS, "count": -1})
        assert invalid.value.status == 400 and invalid.value.parameter == "condition.count"

        base = time.time_ns() - 600 * NS
        served.acme.ingest([login_event("mallory") for _ in range(5)], [base + index for index in range(5)])
        alerts = client.list_alerts()
        assert len(alerts) == 1 and alerts[0].group == {"user.id": "mallory"} and alerts[0].count == 5
        delivered = wait_for(lambda: client.list_webhook_deliveries(status="delivered"), "the delivery")
        assert delivered[0].alert_id == alerts[0].id and delivered[0].attempts == 1
        assert client.get_alert(alerts[0].id).deliveries == delivered
        received = served.receiver.received[0]
        webhook_signature.verify(received.body, received.headers, webhook.secret)

        assert client.disable_alert_rule(rule.id).enabled is False
        assert client.update_alert_rule(rule.id, severity="critical", enabled=True).severity == "critical"
        rotated = client.rotate_webhook_secret(webhook.id)
        assert rotated.secret and rotated.secret != webhook.secret
        client.delete_alert_rule(rule.id)
        client.delete_webhook(webhook.id)
        assert client.list_alert_rules() == [] and client.list_webhooks() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_async_client_mirrors_the_sync_one(served: Served) -> None:
    key = create_key(served.storage, "acme", ["ingest", "read", "admin"])[1]

    async def scenario() -> None:
        async with AsyncAuditClient(served.server.url, api_key=key) as client:
            webhook = await client.create_webhook(served.receiver.url)
            rule = await client.create_alert_rule("logins", FAILED_LOGINS, webhook_ids=[webhook.id])
            assert (await client.list_alert_rules()) == [rule]
            base = time.time_ns() - 600 * NS
            served.acme.ingest([login_event("eve") for _ in range(5)], [base + index for index in range(5)])
            alerts = await client.list_alerts(rule_id=rule.id)
            assert len(alerts) == 1 and alerts[0].rule["id"] == rule.id
            for _ in range(500):
                deliveries = await client.list_webhook_deliveries(alert_id=alerts[0].id, status="delivered")
                if deliveries:
                    break
                await asyncio.sleep(0.02)
            assert deliveries and deliveries[0].webhook_id == webhook.id
            assert (await client.disable_alert_rule(rule.id)).enabled is False

    asyncio.run(scenario())
