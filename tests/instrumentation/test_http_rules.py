"""The shared rules: route -> action/resource, outcome by status, proxies, request/session ids, option errors;
and the ASGI middleware called directly where a server would hide what is asserted (the exception object)."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.authentication import SimpleUser, UnauthenticatedUser

import otel_audit
from otel_audit.config import ConfigurationError
from otel_audit.context import audit_context, current_audit_context
from otel_audit.instrumentation._http import (
    AuditOptions,
    RouteAudit,
    TrustedProxies,
    _RequestIds,
    analyze_route,
    outcome_for_status,
    request_id_from,
    session_id_from_cookie,
    singular,
    to_actor,
)
from otel_audit.instrumentation.asgi import AuditMiddleware
from otel_audit.model import Actor, ActorType, Outcome
from otel_audit.processors.redact import Redactor
from otel_audit.testing import AuditCapture


@pytest.mark.parametrize(
    ("method", "template", "expected"),
    [
        ("PUT", "/documents/{document_id}", RouteAudit("document.update", "document", "document_id")),
        ("DELETE", "/documents/{document_id}", RouteAudit("document.delete", "document", "document_id")),
        ("GET", "/documents/{document_id}", RouteAudit("document.read", "document", "document_id")),
        ("POST", "/documents/{document_id}/share", RouteAudit("document.share", "document", "document_id")),
        ("POST", "/documents", RouteAudit("document.create", "document")),
        ("POST", "/api/v1/policies", RouteAudit("policy.create", "policy")),
        ("DELETE", "/projects/{project_id}/members/{user_id}", RouteAudit("member.delete", "member", "user_id")),
        ("POST", "/documents/<int:document_id>", RouteAudit("document.update", "document", "document_id")),
        ("PATCH", "/{tenant_id}", RouteAudit("tenant.update", "tenant", "tenant_id")),
        ("POST", "/files/{path:path}", RouteAudit("file.update", "file", "path")),
        ("POST", "/login", RouteAudit("http.post")),
        ("POST", "/", RouteAudit("http.post")),
        ("POST", None, RouteAudit("http.post")),
        ("PURGE", "/cache", RouteAudit("http.purge")),
    ],
)
def test_route_templates_map_to_actions_and_resources(method: str, template: str | None, expected: RouteAudit) -> None:
    assert analyze_route(method, template) == expected


@given(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "M-SEARCH"]), st.text(max_size=60))
def test_any_template_yields_a_valid_action(method: str, template: str) -> None:
    route = analyze_route(method, template)
    assert route.action is not None
    otel_audit.AuditEvent(action=route.action)  # raises AuditEventError if the derived action were invalid


@pytest.mark.parametrize(("plural", "singular_form"), [
    ("documents", "document"), ("policies", "policy"), ("addresses", "address"), ("boxes", "box"),
    ("batches", "batch"), ("status", "statu"), ("access", "access"), ("data", "data"),
])
def test_singular(plural: str, singular_form: str) -> None:
    assert singular(plural) == singular_form


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.SUCCESS), (201, Outcome.SUCCESS), (302, Outcome.SUCCESS), (401, Outcome.DENIED),
    (403, Outcome.DENIED), (404, Outcome.FAILURE), (409, Outcome.FAILURE), (500, Outcome.FAILURE),
])
def test_outcome_by_status(status: int, outcome: Outcome) -> None:
    assert outcome_for_status(status) is outcome


def test_untrusted_peer_cannot_spoof_its_address() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    assert proxies.client_address("198.51.100.7", ["203.0.113.1"], ["for=203.0.113.2"]) == "198.51.100.7"


def test_trusted_proxy_chain_is_read_right_to_left() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    # client spoofed "1.2.3.4"; the real client 203.0.113.5 went through two trusted proxies
    assert proxies.client_address("10.0.0.2", ["1.2.3.4, 203.0.113.5, 10.0.0.1"], []) == "203.0.113.5"
    assert proxies.client_address("10.0.0.2", ["10.0.0.9"], []) == "10.0.0.9"
    assert proxies.client_address("10.0.0.2", ["not-an-ip"], []) == "10.0.0.2"
    assert proxies.client_address("10.0.0.2", [], []) == "10.0.0.2"


def test_forwarded_header_is_preferred_and_parsed() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    header = 'for=1.2.3.4, for="[2001:db8::17]:4711";proto=https, for=10.0.0.1'
    assert proxies.client_address("10.0.0.3", ["9.9.9.9"], [header]) == "2001:db8::17"
    assert proxies.client_address("10.0.0.3", [], ["for=192.0.2.60:8080"]) == "192.0.2.60"


def test_bad_trusted_proxy_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="trusted_proxies.*'10.0.0.300'"):
        TrustedProxies(["10.0.0.300"])


def test_request_id_is_kept_when_sane_and_replaced_otherwise() -> None:
    assert request_id_from("abc-123_X.y:z") == "abc-123_X.y:z"
    generated = [request_id_from(hostile) for hostile in ("", "a b", "x" * 129, "<script>", "id\r\nSet-Cookie: x")]
    assert all(re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{12}", request_id) for request_id in generated)
    assert len(set(generated)) == len(generated)


def test_generated_request_ids_differ_between_forked_processes() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, request_id_from(None).encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 100).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    parent_id = request_id_from(None)
    assert child_id.split("-")[0] != parent_id.split("-")[0]


def test_generated_request_ids_do_not_look_like_card_or_phone_numbers() -> None:
    ids = _RequestIds()
    screen = Redactor()
    for _ in range(200):
        ids.renew()
        request_id = ids.next()
        prefix, counter = request_id.split("-")
        assert not re.search(r"[0-9]{5}", prefix) and not prefix[-1].isdigit()
        # the counter's word starts with a letter, so no run of it is a whole all-digit word: the redaction
        # pre-screen passes every id (a counter like 066646086400 sent each event down the full redaction path)
        assert counter[0] == "a"
        assert screen.surely_clean(request_id), request_id
    generated = [ids.next() for _ in range(1000)]
    assert all(screen.surely_clean(request_id) for request_id in generated)
    assert len(set(generated)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{12}", request_id) for request_id in generated)


def test_session_id_is_a_hash_never_the_cookie() -> None:
    session_id = session_id_from_cookie("theme=dark; sid=s3cr3t-token; x=1", "sid")
    assert session_id is not None and "s3cr3t" not in session_id and len(session_id) == 32
    assert session_id == session_id_from_cookie("sid=s3cr3t-token", "sid")
    assert session_id_from_cookie("theme=dark", "sid") is None


class OrmUser:
    """A typical ORM user row."""

    is_authenticated = True

    def __init__(self) -> None:
        self.id = 7
        self.email = "grace@example.com"
        self.name = "Grace"
        self.roles = ["admin"]


def test_user_objects_become_actors() -> None:
    assert to_actor(SimpleUser("ann")) == Actor(id="ann", name="ann")
    assert to_actor(UnauthenticatedUser()) is None
    assert to_actor(OrmUser()) == Actor(id="7", email="grace@example.com", name="Grace", roles=("admin",))
    assert to_actor({"id": "svc-1", "type": "service", "password": "x"}) == Actor(id="svc-1", type=ActorType.SERVICE)
    assert to_actor("u-1") == Actor(id="u-1")


@pytest.mark.parametrize(("options", "message"), [
    ({"methods": ["POST", "P O"]}, "methods"),
    ({"excluded_urls": ["("]}, "excluded_urls"),
    ({"actions": {"/x": "Not Valid"}}, r"actions\['/x'\]"),
    ({"tenant_resolver": "acme"}, "tenant_resolver"),
    ({"trusted_proxies": "nope"}, "trusted_proxies"),
])
def test_bad_options_fail_at_setup_naming_the_argument(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AuditOptions.build(**options)


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": [], "client": ("192.0.2.1", 5000),
            "root_path": ""}


async def _call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


class SettlementError(Exception):
    """Raised by the app below."""


def test_exception_is_re_raised_unchanged(audit_events: AuditCapture) -> None:
    raised = SettlementError("bank unreachable")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise raised

    with pytest.raises(SettlementError) as caught:
        asyncio.run(_call(AuditMiddleware(app), _scope("POST", "/settlements")))
    assert caught.value is raised
    event = audit_events.assert_emitted(action="http.post", outcome="failure")
    assert event["error.type"].endswith("SettlementError")
    assert event["http.response.status_code"] == 500
    assert event["client.address"] == "192.0.2.1"


def test_websocket_and_lifespan_pass_through_untouched(audit_events: AuditCapture) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = AuditMiddleware(app)
    asyncio.run(_call(middleware, {"type": "lifespan"}))
    asyncio.run(_call(middleware, {"type": "websocket", "path": "/ws", "headers": []}))
    assert seen == ["lifespan", "websocket"]
    assert len(audit_events) == 0


def test_strict_mode_emits_before_the_status_line(tmp_path: Any) -> None:
    capture = AuditCapture()
    otel_audit.configure(delivery_processor=capture, delivery="strict", spool_dir=str(tmp_path / "spool"))
    events_when_status_sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def watch(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            events_when_status_sent.append(len(capture))

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        await AuditMiddleware(app)(_scope("POST", "/orders"), receive, watch)

    asyncio.run(run())
    assert events_when_status_sent == [1]
    capture.assert_emitted(action="http.post", http_status_code=201, count=1)


def test_request_context_replaces_the_outer_one_inherits_the_impersonator_and_is_restored(
        audit_events: AuditCapture) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_audit_context())
        if scope["method"] == "DELETE":
            raise SettlementError("refused")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    scope = _scope("POST", "/orders")
    scope["headers"] = [(b"x-request-id", b"req-77"), (b"user-agent", b"agent/1.0"), (b"cookie", b"sid=1")]
    middleware = AuditMiddleware(app, actor_resolver=lambda scope: "alice", tenant_resolver=lambda scope: "acme")
    with audit_context(impersonator="admin-7", request_id="outer-request", client_address="10.9.9.9") as outer:
        asyncio.run(_call(middleware, scope))
        with pytest.raises(SettlementError):
            asyncio.run(_call(middleware, {**_scope("DELETE", "/orders/1"), "headers": []}))
        assert current_audit_context() == outer
    inside, failing = seen
    assert inside.actor == Actor(id="alice")
    assert (inside.tenant_id, inside.request_id, inside.impersonator_id) == ("acme", "req-77", "admin-7")
    assert (inside.client_address, inside.user_agent, inside.session_id) == ("192.0.2.1", "agent/1.0", None)
    assert failing.impersonator_id == "admin-7" and failing.request_id != "outer-request"
    created = audit_events.assert_emitted(action="http.post", outcome="success")
    assert created["audit.actor.impersonator.id"] == "admin-7"
    assert created["user_agent.original"] == "agent/1.0"
    audit_events.assert_emitted(action="http.delete", outcome="failure")
