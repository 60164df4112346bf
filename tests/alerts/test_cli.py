"""`otel-audit alerts ...` against a served store (SQLite)."""

from __future__ import annotations

import json
import time

import pytest

from otel_audit.cli import main
from otel_audit.store import create_key

from .conftest import Served
from .helpers import NS, login_event, wait_for


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_alerts_commands(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    key = create_key(served.storage, "acme", ["ingest", "read", "admin"])[1]
    remote = ["--url", served.server.url, "--api-key", key]

    def run(*args: str) -> str:
        assert main(["alerts", *args, *remote]) == 0
        return capsys.readouterr().out

    secret = run("webhooks", "create", served.receiver.url, "--description", "security").strip()
    assert secret.startswith("whsec_")
    webhook_id = json.loads(run("webhooks", "list", "--json"))[0]["id"]
    created = json.loads(run("rules", "create", "--name", "Excessive Failed Logins", "--action", "user.login",
                             "--outcome", "failure", "--count", "5", "--window", "300", "--group-by", "user.id",
                             "--where", "client.address=203.0.113.7", "--severity", "high", "--webhook", webhook_id,
                             "--json"))
    assert created["condition"]["attributes"] == {"client.address": "203.0.113.7"}
    assert "[high] Excessive Failed Logins: 5x user.login/failure in 300 s by user.id" in run("rules", "list")

    base = time.time_ns() - 600 * NS
    served.acme.ingest([login_event("mallory") for _ in range(5)], [base + index for index in range(5)])
    assert "5 events  user.id=mallory" in run("list")
    wait_for(lambda: served.acme.deliveries(status="delivered"), "the delivery")
    assert "delivered  attempts 1/" in run("deliveries")
    assert json.loads(run("deliveries", "--status", "delivered", "--json"))[0]["webhook_id"] == webhook_id
    assert "disabled" in run("rules", "disable", created["id"])

    assert main(["alerts", "rules", "create", "--name", "x", "--action", "a b", "--count", "1", "--window", "1",
                 *remote]) == 1
    assert "condition.action" in capsys.readouterr().err
