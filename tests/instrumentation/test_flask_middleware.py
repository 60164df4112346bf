"""Flask under werkzeug's threaded WSGI server on 127.0.0.1, driven by httpx, events from a real OTLP receiver."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from flask import Flask, abort, g, request, stream_with_context
from instr_helpers import records_by_action, serve_wsgi, wait_for_action

import otel_audit
from otel_audit.instrumentation.flask import instrument_flask, uninstrument_flask
from otel_audit.testing import OTLPReceiver

service_audit = otel_audit.get_audit_logger("tests.flask_service")


class LedgerError(RuntimeError):
    """An application error Flask turns into a 500."""


def build_app(**options: Any) -> Flask:
    app = Flask("audited")

    @app.before_request
    def load_user() -> None:
        header = request.headers.get("Authorization", "")
        g.user = {"id": header.removeprefix("Bearer "), "roles": ["editor"]} if header.startswith("Bearer ") else None

    @app.post("/documents/<int:document_id>")
    def update_document(document_id: int) -> dict[str, int]:
        with service_audit.action("search.reindex", resource=("document", str(document_id))):
            pass
        return {"id": document_id}

    @app.get("/documents/<document_id>")
    def read_document(document_id: str) -> dict[str, str]:
        if g.user is None:
            abort(401)
        if document_id == "secret":
            abort(403)
        return {"id": document_id}

    @app.delete("/ledgers/<ledger_id>")
    def delete_ledger(ledger_id: str) -> str:
        raise LedgerError(f"ledger {ledger_id} is closed")

    @app.post("/exports")
    def export() -> Any:
        def rows() -> Iterator[str]:
            for index in range(3):
                service_audit.emit("export.row", metadata={"index": index})
                yield f"row {index}\n"

        return app.response_class(stream_with_context(rows()), mimetype="text/plain")

    @app.post("/healthz")
    def health() -> str:
        return "ok"

    instrument_flask(app, tenant_resolver=lambda: request.headers.get("X-Tenant"), **options)
    return app


@pytest.fixture
def server(audit_pipeline: otel_audit.AuditPipeline) -> Iterator[str]:
    with serve_wsgi(build_app(excluded_urls=["^/healthz$"], trusted_proxies=["127.0.0.1/32"])) as base_url:
        yield base_url


def test_post_is_audited_with_route_rule_actor_tenant_and_nested_event(server: str, otlp_receiver: OTLPReceiver) -> None:
    response = httpx.post(f"{server}/documents/17", headers={
        "Authorization": "Bearer alice", "X-Tenant": "acme", "X-Request-ID": "flask-1", "User-Agent": "ua/2",
    })
    assert response.status_code == 200
    [record] = wait_for_action(otlp_receiver, "document.update")
    [nested] = wait_for_action(otlp_receiver, "search.reindex")
    attributes = record.attributes
    assert attributes["http.route"] == "/documents/<int:document_id>"
    assert attributes["url.path"] == "/documents/17"
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.response.status_code"] == 200
    assert attributes["audit.resource.type"] == "document"
    assert attributes["audit.resource.id"] == "17"
    assert attributes["audit.outcome"] == "success"
    assert attributes["user_agent.original"] == "ua/2"
    assert attributes["audit.metadata"]["duration_ms"] > 0
    for event in (attributes, nested.attributes):
        assert event["user.id"] == "alice"
        assert event["user.roles"] == ["editor"]
        assert event["audit.tenant.id"] == "acme"
        assert event["audit.request.id"] == "flask-1"
        assert event["client.address"] == "127.0.0.1"


def test_401_and_403_on_get_are_denials_and_plain_reads_are_not_audited(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.get(f"{server}/documents/a", headers={"Authorization": "Bearer bob"}).status_code == 200
    assert httpx.get(f"{server}/documents/a").status_code == 401
    assert httpx.get(f"{server}/documents/secret", headers={"Authorization": "Bearer bob"}).status_code == 403
    records = wait_for_action(otlp_receiver, "document.read", 2)
    by_status = {record.attributes["http.response.status_code"]: record for record in records}
    assert sorted(by_status) == [401, 403]
    assert by_status[401].attributes["audit.actor.type"] == "anonymous"
    assert by_status[403].attributes["user.id"] == "bob"
    assert {record.attributes["audit.outcome"] for record in records} == {"denied"}
    assert {record.severity_text for record in records} == {"WARN"}


def test_exception_is_a_failure_with_error_type_and_flask_answers_500(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.delete(f"{server}/ledgers/L1").status_code == 500
    [record] = wait_for_action(otlp_receiver, "ledger.delete")
    assert record.attributes["audit.outcome"] == "failure"
    assert record.attributes["error.type"] == f"{LedgerError.__module__}.LedgerError"
    assert record.attributes["audit.reason"] == "ledger L1 is closed"
    assert record.attributes["http.response.status_code"] == 500


def test_streamed_body_keeps_the_context_and_the_event_follows_the_body(server: str, otlp_receiver: OTLPReceiver) -> None:
    response = httpx.post(f"{server}/exports", headers={"X-Request-ID": "export-1", "Authorization": "Bearer eve"})
    assert response.text == "row 0\nrow 1\nrow 2\n"
    rows = wait_for_action(otlp_receiver, "export.row", 3)
    [record] = wait_for_action(otlp_receiver, "export.create")
    assert {row.attributes["audit.request.id"] for row in rows} == {"export-1"}
    assert {row.attributes["user.id"] for row in rows} == {"eve"}
    assert max(row.timestamp for row in rows) < record.timestamp


def test_excluded_url_is_not_audited(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.post(f"{server}/healthz").status_code == 200
    assert httpx.post(f"{server}/documents/1").status_code == 200
    wait_for_action(otlp_receiver, "document.update")
    assert "http.post" not in records_by_action(otlp_receiver)


def test_forwarded_for_is_honoured_from_a_trusted_proxy(server: str, otlp_receiver: OTLPReceiver) -> None:
    # The client put a spoofed hop first; the trusted proxy (127.0.0.1) appended the address it saw.
    httpx.post(f"{server}/documents/2", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
    [record] = wait_for_action(otlp_receiver, "document.update")
    assert record.attributes["client.address"] == "203.0.113.9"


def test_forwarded_for_from_an_untrusted_peer_is_ignored(audit_pipeline: otel_audit.AuditPipeline,
                                                         otlp_receiver: OTLPReceiver) -> None:
    with serve_wsgi(build_app(trusted_proxies=["10.0.0.0/8"])) as base_url:
        httpx.post(f"{base_url}/documents/3", headers={"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=198.51.100.4"})
        [record] = wait_for_action(otlp_receiver, "document.update")
    assert record.attributes["client.address"] == "127.0.0.1"


def test_200_requests_over_keep_alive_threads_do_not_bleed_context(server: str, otlp_receiver: OTLPReceiver) -> None:
    def call(index: int) -> int:
        headers = {"Authorization": f"Bearer u{index}", "X-Tenant": f"t{index % 5}", "X-Request-ID": f"r{index}"}
        return client.post(f"/documents/{index}", headers=headers).status_code

    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    with httpx.Client(base_url=server, limits=limits) as client, ThreadPoolExecutor(max_workers=32) as pool:
        assert list(pool.map(call, range(200))) == [200] * 200
    requests = wait_for_action(otlp_receiver, "document.update", 200)
    nested = wait_for_action(otlp_receiver, "search.reindex", 200)
    assert len(requests) == len(nested) == 200
    for record in requests + nested:
        index = int(record.attributes["audit.request.id"].removeprefix("r"))
        assert record.attributes["user.id"] == f"u{index}"
        assert record.attributes["audit.tenant.id"] == f"t{index % 5}"
        assert record.attributes["audit.resource.id"] == str(index)


def test_uninstrument_flask_restores_the_app(audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    app = build_app()
    uninstrument_flask(app)
    with serve_wsgi(app) as base_url:
        assert httpx.post(f"{base_url}/documents/5").status_code == 200
        [nested] = wait_for_action(otlp_receiver, "search.reindex")
    assert [record.attributes["audit.action"] for record in otlp_receiver.records] == ["search.reindex"]
    assert "audit.request.id" not in nested.attributes


def test_flask_login_current_user_is_the_default_actor(audit_pipeline: otel_audit.AuditPipeline,
                                                       otlp_receiver: OTLPReceiver) -> None:
    flask_login = pytest.importorskip("flask_login")

    class User(flask_login.UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id
            self.email = f"{user_id}@example.com"

    app = Flask("with_login")
    login_manager = flask_login.LoginManager(app)
    login_manager.request_loader(
        lambda req: User(req.headers["X-User"]) if "X-User" in req.headers else None
    )

    @app.post("/tickets/<ticket_id>/close")
    def close_ticket(ticket_id: str) -> dict[str, str]:
        service_audit.emit("ticket.notify", resource=("ticket", ticket_id))
        return {"closed": ticket_id}

    instrument_flask(app)
    with serve_wsgi(app) as base_url:
        assert httpx.post(f"{base_url}/tickets/t-1/close", headers={"X-User": "frank"}).status_code == 200
        assert httpx.post(f"{base_url}/tickets/t-2/close").status_code == 200
        closes = wait_for_action(otlp_receiver, "ticket.close", 2)
        notifications = wait_for_action(otlp_receiver, "ticket.notify", 2)
    by_ticket = {record.attributes["audit.resource.id"]: record.attributes for record in closes}
    assert by_ticket["t-1"]["user.id"] == "frank"
    assert by_ticket["t-1"]["user.email"] == "frank@example.com"
    assert by_ticket["t-2"]["audit.actor.type"] == "anonymous"
    notified_by_ticket = {record.attributes["audit.resource.id"]: record.attributes for record in notifications}
    assert notified_by_ticket["t-1"]["user.id"] == "frank"
    assert "user.id" not in notified_by_ticket["t-2"]


def test_strict_mode_fails_the_request_when_auditing_fails(otlp_receiver: OTLPReceiver, tmp_path: Any) -> None:
    otel_audit.configure(endpoint=otlp_receiver.endpoint, flush_interval=0.05, spool_dir=str(tmp_path / "spool"),
                         delivery="strict")
    app = Flask("strict")

    @app.post("/payments")
    def pay() -> dict[str, bool]:
        return {"paid": True}

    def tenant_lookup() -> str:
        raise LookupError("tenant directory down")

    instrument_flask(app, tenant_resolver=tenant_lookup)
    with serve_wsgi(app) as base_url:
        assert httpx.post(f"{base_url}/payments").status_code == 500
        [record] = wait_for_action(otlp_receiver, "payment.create")
    assert record.attributes["audit.outcome"] == "failure"
    assert record.attributes["error.type"] == "LookupError"
