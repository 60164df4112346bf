"""FastAPI under uvicorn on 127.0.0.1, driven by httpx, events read back from a real OTLP receiver."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from instr_helpers import records_by_action, serve_asgi, wait_for_action
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import otel_audit
from otel_audit.instrumentation.fastapi import instrument_app, uninstrument_app
from otel_audit.stats import STATS
from otel_audit.testing import OTLPReceiver

service_audit = otel_audit.get_audit_logger("tests.service")


class BoomError(RuntimeError):
    """An application error that escapes the endpoint."""


class BearerBackend(AuthenticationBackend):
    """`Authorization: Bearer <user>` authenticates <user> (enough auth to have a scope["user"])."""

    async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser] | None:
        header = conn.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(header.removeprefix("Bearer "))


def tenant_from_header(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-tenant":
            return value.decode()
    return None


def build_app(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/documents")
    def create_document() -> dict[str, str]:
        return {"id": "new"}

    @app.put("/documents/{document_id}")
    def update_document(document_id: int) -> dict[str, int]:
        return {"id": document_id}

    @app.post("/documents/{document_id}/share")
    async def share_document(document_id: str) -> dict[str, str]:
        with service_audit.action("mail.send", resource=("document", document_id)):
            await asyncio.sleep(0)
        return {"shared": document_id}

    @app.get("/documents/{document_id}")
    def read_document(document_id: str, request: Request) -> dict[str, str]:
        if request.headers.get("authorization") is None:
            raise HTTPException(status_code=401, detail="login required")
        if document_id == "secret":
            raise HTTPException(status_code=403, detail="forbidden")
        return {"id": document_id}

    @app.delete("/documents/{document_id}")
    def delete_document(document_id: str) -> None:
        raise BoomError(f"cannot delete {document_id}")

    @app.post("/login")
    def login() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/internal/sync")
    def internal_sync() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/stream")
    def stream(fail: bool = False) -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            for index in range(3):
                service_audit.emit("stream.chunk", metadata={"index": index})
                yield b"chunk\n"
            if fail:
                raise BoomError("stream broke")

        return StreamingResponse(chunks(), media_type="text/plain")

    def current_user(request: Request) -> str:
        request.state.user = {"id": "dora", "email": "dora@example.com"}
        return "dora"

    @app.patch("/profile")
    def update_profile(user: str = Depends(current_user)) -> dict[str, str]:
        return {"user": user}

    @app.post("/work/{item_id}")
    async def work(item_id: str) -> dict[str, str]:
        for _ in range(3):
            await asyncio.sleep(0)
        service_audit.emit("work.step", resource=("item", item_id))
        return {"item": item_id}

    instrument_app(app, **options)
    app.add_middleware(AuthenticationMiddleware, backend=BearerBackend())
    return app


@pytest.fixture
def server(audit_pipeline: otel_audit.AuditPipeline) -> Iterator[str]:
    with serve_asgi(build_app(tenant_resolver=tenant_from_header, excluded_urls=["^/internal/"])) as base_url:
        yield base_url


def test_state_changing_request_is_audited_with_every_http_field(server: str, otlp_receiver: OTLPReceiver) -> None:
    response = httpx.put(
        f"{server}/documents/42",
        headers={"X-Request-ID": "req-1", "User-Agent": "audit-test/1.0", "Authorization": "Bearer alice",
                 "X-Tenant": "acme"},
    )
    assert response.status_code == 200
    [record] = wait_for_action(otlp_receiver, "document.update")
    attributes = record.attributes
    assert record.event_name == "audit.document.update"
    assert record.severity_text == "INFO"
    assert attributes["audit.outcome"] == "success"
    assert attributes["audit.resource.type"] == "document"
    assert attributes["audit.resource.id"] == "42"
    assert attributes["http.request.method"] == "PUT"
    assert attributes["http.route"] == "/documents/{document_id}"
    assert attributes["url.path"] == "/documents/42"
    assert attributes["http.response.status_code"] == 200
    assert attributes["audit.request.id"] == "req-1"
    assert attributes["user_agent.original"] == "audit-test/1.0"
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["user.id"] == "alice"
    assert attributes["audit.actor.type"] == "user"
    assert attributes["audit.tenant.id"] == "acme"
    assert attributes["audit.metadata"]["duration_ms"] > 0
    assert "error.type" not in attributes


def test_collection_post_is_a_create_and_unknown_routes_use_the_method(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.post(f"{server}/documents").status_code == 200
    assert httpx.post(f"{server}/login").status_code == 200
    assert httpx.post(f"{server}/no/such/route").status_code == 404
    [create] = wait_for_action(otlp_receiver, "document.create")
    assert create.attributes["audit.resource.type"] == "document"
    assert "audit.resource.id" not in create.attributes
    assert create.attributes["audit.actor.type"] == "anonymous"
    posts = wait_for_action(otlp_receiver, "http.post", 2)
    by_path = {record.attributes["url.path"]: record.attributes for record in posts}
    assert by_path["/login"]["http.route"] == "/login"
    assert by_path["/login"]["audit.outcome"] == "success"
    assert "http.route" not in by_path["/no/such/route"]
    assert by_path["/no/such/route"]["audit.outcome"] == "failure"
    assert by_path["/no/such/route"]["error.type"] == "404"


def test_reads_are_not_audited_but_401_and_403_on_get_are_denials(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.get(f"{server}/documents/7", headers={"Authorization": "Bearer bob"}).status_code == 200
    assert httpx.get(f"{server}/documents/7").status_code == 401
    assert httpx.get(f"{server}/documents/secret", headers={"Authorization": "Bearer bob"}).status_code == 403
    denials = wait_for_action(otlp_receiver, "document.read", 2)
    assert sorted(record.attributes["http.response.status_code"] for record in denials) == [401, 403]
    for record in denials:
        assert record.attributes["audit.outcome"] == "denied"
        assert record.severity_text == "WARN"
        assert record.attributes["http.request.method"] == "GET"
    by_status = {record.attributes["http.response.status_code"]: record.attributes for record in denials}
    assert by_status[401]["audit.actor.type"] == "anonymous"
    assert by_status[403]["user.id"] == "bob"
    assert by_status[403]["audit.resource.id"] == "secret"


def test_validation_error_is_a_failure(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.put(f"{server}/documents/not-a-number").status_code == 422
    [record] = wait_for_action(otlp_receiver, "document.update")
    assert record.attributes["audit.outcome"] == "failure"
    assert record.attributes["error.type"] == "422"
    assert record.severity_text == "WARN"


def test_exception_escaping_the_app_is_a_failure_and_the_client_gets_500(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.delete(f"{server}/documents/9").status_code == 500
    [record] = wait_for_action(otlp_receiver, "document.delete")
    assert record.attributes["audit.outcome"] == "failure"
    assert record.attributes["error.type"] == f"{BoomError.__module__}.BoomError"
    assert record.attributes["audit.reason"] == "cannot delete 9"
    assert record.attributes["http.response.status_code"] == 500
    assert record.attributes["audit.resource.id"] == "9"


def test_streaming_response_is_audited_after_the_body_and_chunks_inherit_context(server: str, otlp_receiver: OTLPReceiver) -> None:
    response = httpx.post(f"{server}/stream", headers={"X-Request-ID": "stream-1"})
    assert response.text == "chunk\n" * 3
    [record] = wait_for_action(otlp_receiver, "http.post")
    chunks = wait_for_action(otlp_receiver, "stream.chunk", 3)
    assert record.attributes["audit.outcome"] == "success"
    assert record.attributes["http.route"] == "/stream"
    assert {chunk.attributes["audit.request.id"] for chunk in chunks} == {"stream-1"}
    # The request event is emitted once the body is finished: after every chunk's event.
    assert max(chunk.timestamp for chunk in chunks) < record.timestamp


def test_error_while_streaming_is_a_failure_with_the_status_already_sent(server: str, otlp_receiver: OTLPReceiver) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{server}/stream", params={"fail": "true"})
    [record] = wait_for_action(otlp_receiver, "http.post")
    assert record.attributes["audit.outcome"] == "failure"
    assert record.attributes["error.type"].endswith("BoomError")
    assert record.attributes["http.response.status_code"] == 200


def test_excluded_urls_are_not_audited(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.post(f"{server}/internal/sync").status_code == 200
    assert httpx.post(f"{server}/login").status_code == 200
    wait_for_action(otlp_receiver, "http.post")
    paths = [record.attributes.get("url.path") for record in otlp_receiver.records]
    assert paths == ["/login"]


def test_otel_python_excluded_urls_is_honoured(audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz,/login$")
    with serve_asgi(build_app()) as base_url:
        assert httpx.post(f"{base_url}/login").status_code == 200
        assert httpx.post(f"{base_url}/documents").status_code == 200
        wait_for_action(otlp_receiver, "document.create")
    assert [record.attributes["audit.action"] for record in otlp_receiver.records] == ["document.create"]


def test_nested_service_events_inherit_actor_tenant_and_request(server: str, otlp_receiver: OTLPReceiver) -> None:
    response = httpx.post(
        f"{server}/documents/d-1/share",
        headers={"Authorization": "Bearer carol", "X-Tenant": "globex", "X-Request-ID": "req-share"},
    )
    assert response.status_code == 200
    [nested] = wait_for_action(otlp_receiver, "mail.send")
    [outer] = wait_for_action(otlp_receiver, "document.share")
    for attributes in (nested.attributes, outer.attributes):
        assert attributes["user.id"] == "carol"
        assert attributes["audit.tenant.id"] == "globex"
        assert attributes["audit.request.id"] == "req-share"
        assert attributes["client.address"] == "127.0.0.1"
    assert nested.attributes["audit.resource.id"] == "d-1"
    assert outer.attributes["audit.resource.id"] == "d-1"


def test_actor_set_by_a_dependency_on_request_state_is_used(server: str, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.patch(f"{server}/profile").status_code == 200
    [record] = wait_for_action(otlp_receiver, "http.patch")
    assert record.attributes["user.id"] == "dora"
    assert record.attributes["user.email"] == "dora@example.com"


def test_generated_request_id_when_the_header_is_missing_or_hostile(server: str, otlp_receiver: OTLPReceiver) -> None:
    httpx.post(f"{server}/documents")
    httpx.post(f"{server}/documents", headers={"X-Request-ID": "bad id with spaces <script>"})
    records = wait_for_action(otlp_receiver, "document.create", 2)
    ids = [record.attributes["audit.request.id"] for record in records]
    assert len(set(ids)) == 2
    assert all(re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{12}", request_id) for request_id in ids)


def test_200_concurrent_requests_do_not_bleed_context(server: str, otlp_receiver: OTLPReceiver) -> None:
    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(*(
                client.post(f"/work/item-{index}", headers={
                    "X-Request-ID": f"req-{index}", "Authorization": f"Bearer user-{index}", "X-Tenant": f"t-{index % 7}",
                })
                for index in range(200)
            ))
        return [response.status_code for response in responses]

    assert asyncio.run(run()) == [200] * 200
    steps = wait_for_action(otlp_receiver, "work.step", 200)
    requests = wait_for_action(otlp_receiver, "work.update", 200)
    assert len(steps) == len(requests) == 200
    for record in steps + requests:
        index = int(record.attributes["audit.request.id"].removeprefix("req-"))
        assert record.attributes["user.id"] == f"user-{index}"
        assert record.attributes["audit.tenant.id"] == f"t-{index % 7}"
        assert record.attributes["audit.resource.id"] == f"item-{index}"


def test_action_overrides_rename_and_silence_routes(audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    actions = {"POST /documents/{document_id}/share": "document.share_link", "/login": None}
    with serve_asgi(build_app(actions=actions)) as base_url:
        assert httpx.post(f"{base_url}/login").status_code == 200
        assert httpx.post(f"{base_url}/documents/d-9/share").status_code == 200
        [record] = wait_for_action(otlp_receiver, "document.share_link")
    assert record.attributes["audit.resource.id"] == "d-9"
    assert "http.post" not in records_by_action(otlp_receiver)


def test_mounted_app_route_includes_the_mount_prefix(audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    async def rotate(request: Any) -> PlainTextResponse:
        return PlainTextResponse("rotated")

    app = build_app()
    app.mount("/admin", Starlette(routes=[Route("/keys/{key_id}/rotate", rotate, methods=["POST"])]))
    with serve_asgi(app) as base_url:
        assert httpx.post(f"{base_url}/admin/keys/k1/rotate").status_code == 200
        [record] = wait_for_action(otlp_receiver, "key.rotate")
    assert record.attributes["http.route"] == "/admin/keys/{key_id}/rotate"
    assert record.attributes["audit.resource.id"] == "k1"


def test_failing_resolver_never_breaks_the_app_and_the_request_is_still_audited(
    audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver
) -> None:
    def broken_tenant(scope: Any) -> str:
        raise LookupError("tenant service down")

    before = STATS.snapshot()["instrumentation_errors"]
    with serve_asgi(build_app(tenant_resolver=broken_tenant)) as base_url:
        response = httpx.post(f"{base_url}/documents", headers={"Authorization": "Bearer erin"})
        [record] = wait_for_action(otlp_receiver, "document.create")
    assert response.status_code == 200
    assert record.attributes["user.id"] == "erin"
    assert "audit.tenant.id" not in record.attributes
    assert STATS.snapshot()["instrumentation_errors"] > before


def test_strict_mode_fails_the_request_when_it_cannot_be_audited(otlp_receiver: OTLPReceiver, tmp_path: Any) -> None:
    otel_audit.configure(endpoint=otlp_receiver.endpoint, flush_interval=0.05, spool_dir=str(tmp_path / "spool"),
                         delivery="strict")

    def broken_tenant(scope: Any) -> str:
        raise LookupError("tenant service down")

    with serve_asgi(build_app(tenant_resolver=broken_tenant)) as base_url:
        assert httpx.post(f"{base_url}/documents").status_code == 500


def test_uninstrument_app_stops_auditing(audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    app = build_app()
    with serve_asgi(app) as base_url:
        assert httpx.post(f"{base_url}/login").status_code == 200
        wait_for_action(otlp_receiver, "http.post")
        uninstrument_app(app)
        assert httpx.post(f"{base_url}/login").status_code == 200
        assert httpx.post(f"{base_url}/documents/d-2/share").status_code == 200
        wait_for_action(otlp_receiver, "mail.send")
    assert [record.attributes["audit.action"] for record in otlp_receiver.records] == ["http.post", "mail.send"]


def test_spoofed_forwarded_for_is_ignored_without_trusted_proxies(server: str, otlp_receiver: OTLPReceiver) -> None:
    httpx.post(f"{server}/documents", headers={"X-Forwarded-For": "203.0.113.66", "Forwarded": "for=203.0.113.67"})
    [record] = wait_for_action(otlp_receiver, "document.create")
    assert record.attributes["client.address"] == "127.0.0.1"


def test_forwarded_headers_from_a_trusted_proxy_give_the_client(audit_pipeline: otel_audit.AuditPipeline,
                                                                otlp_receiver: OTLPReceiver) -> None:
    with serve_asgi(build_app(trusted_proxies=["127.0.0.0/8"])) as base_url:
        # The client's own (spoofed) hop comes first; the proxy appended the peer it saw.
        httpx.post(f"{base_url}/documents", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.10"})
        httpx.put(f"{base_url}/documents/5", headers={"Forwarded": 'for="[2001:db8::5]:443"'})
        [created] = wait_for_action(otlp_receiver, "document.create")
        [updated] = wait_for_action(otlp_receiver, "document.update")
    assert created.attributes["client.address"] == "198.51.100.10"
    assert updated.attributes["client.address"] == "2001:db8::5"


def test_session_cookie_gives_a_hashed_session_id_to_the_request_and_nested_events(
        audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    with serve_asgi(build_app(session_cookie="sessionid", trusted_proxies=["127.0.0.0/8"])) as base_url:
        response = httpx.post(f"{base_url}/documents/d-9/share",
                              headers={"Cookie": "theme=dark; sessionid=s3cr3t-cookie", "X-Forwarded-For": "198.51.100.7"})
        assert response.status_code == 200
        httpx.post(f"{base_url}/documents")
        [nested] = wait_for_action(otlp_receiver, "mail.send")
        [outer] = wait_for_action(otlp_receiver, "document.share")
        [no_cookie] = wait_for_action(otlp_receiver, "document.create")
    expected = hashlib.sha256(b"s3cr3t-cookie").hexdigest()[:32]
    for attributes in (nested.attributes, outer.attributes):
        assert attributes["session.id"] == expected
        assert attributes["client.address"] == "198.51.100.7"
        assert "s3cr3t-cookie" not in repr(attributes)
    assert "session.id" not in no_cookie.attributes


@pytest.mark.parametrize("auth_added", ["before instrument_app", "after instrument_app"])
def test_service_events_get_the_actor_whichever_side_the_auth_middleware_is_on(
        auth_added: str, audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    app = FastAPI()

    @app.post("/reports")
    async def create_report() -> dict[str, bool]:
        service_audit.emit("report.render")
        return {"ok": True}

    if auth_added == "before instrument_app":
        app.add_middleware(AuthenticationMiddleware, backend=BearerBackend())
        instrument_app(app)  # auth sits between the audit layers: only the inner one sees scope["user"]
    else:
        instrument_app(app)
        app.add_middleware(AuthenticationMiddleware, backend=BearerBackend())  # outermost: seen at the start
    with serve_asgi(app) as base_url:
        assert httpx.post(f"{base_url}/reports", headers={"Authorization": "Bearer erin"}).status_code == 200
        [nested] = wait_for_action(otlp_receiver, "report.render")
        [request] = wait_for_action(otlp_receiver, "report.create")
    assert nested.attributes["user.id"] == request.attributes["user.id"] == "erin"
    assert nested.attributes["audit.request.id"] == request.attributes["audit.request.id"]
