"""The compiled per-request bookkeeping (instrumentation/_request.c) against its Python reference in asgi.py and
_http.py: the same RequestState from the same ASGI scope, the same audit context, the same status noted, the same
request ids accepted and rejected, the same route template, the same event, and the same errors for what a server
should never send."""

from __future__ import annotations

import gc
import re
import time
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.authentication import SimpleUser

import otel_audit
from otel_audit.context import AuditContext, audit_context, current_audit_context
from otel_audit.instrumentation import _http, asgi
from otel_audit.instrumentation._http import (
    AuditOptions,
    PythonRequestState,
    python_emit_request_event,
    python_request_id_from,
)
from otel_audit.logger import get_audit_logger
from otel_audit.model import Actor
from otel_audit.stats import STATS
from otel_audit.testing import AuditCapture

_request = pytest.importorskip("otel_audit.instrumentation._request", reason="the _request extension is not built here")

PROPERTY = settings(max_examples=200, deadline=None)
GENERATED_ID = re.compile(r"[0-9a-f]{16}-[0-9a-f]{12,16}")
FIELDS = [name for name in PythonRequestState.__slots__ if name not in ("request_id", "started_ns")]

header_names = st.sampled_from([b"x-request-id", b"X-Request-ID", b"user-agent", b"x-correlation-id", b"host", b""])
header_values = st.one_of(
    st.binary(max_size=40),
    st.from_regex(rb"[A-Za-z0-9._:@/+=-]{1,130}", fullmatch=True),
    st.binary(min_size=500, max_size=600),
)
scopes = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "DELETE"]),
        "path": st.text(max_size=20),
        "headers": st.lists(st.tuples(header_names, header_values), max_size=6),
    },
    optional={
        "client": st.one_of(st.none(), st.tuples(st.text(max_size=600), st.integers(0, 65535))),
        "root_path": st.text(max_size=10),
    },
)


def both(scope: dict[str, Any], header: bytes) -> tuple[Any, Any]:
    """The compiled and the Python state of one scope, with their start times checked against the clock."""
    before = time.perf_counter_ns()
    compiled = _request.begin_request(scope, header)
    python = asgi.python_begin_request(scope, header)
    after = time.perf_counter_ns()
    assert before <= compiled.started_ns <= python.started_ns <= after
    return compiled, python


@PROPERTY
@given(scopes, st.sampled_from([b"x-request-id", b"x-correlation-id"]))
@example({"method": "POST", "path": "/", "headers": [(b"x-request-id", b"id\n")]}, b"x-request-id")
@example({"method": "POST", "path": "/", "headers": [(b"x-request-id", b"a"), (b"x-request-id", b"b")]}, b"x-request-id")
def test_begin_request_builds_the_state_the_python_reference_builds(scope: dict[str, Any], header: bytes) -> None:
    compiled, python = both(scope, header)
    assert type(compiled) is _request.RequestState
    assert {name: getattr(compiled, name) for name in FIELDS} == {name: getattr(python, name) for name in FIELDS}
    # The client's id kept by both, or a new one made by each.
    assert compiled.request_id == python.request_id or (
        GENERATED_ID.fullmatch(compiled.request_id) and GENERATED_ID.fullmatch(python.request_id)
    )


@PROPERTY
@given(st.one_of(st.none(), st.text(max_size=140), st.from_regex(r"[A-Za-z0-9._:@/+=-]{1,130}", fullmatch=True)))
@example("id\n")
@example("é")
def test_request_ids_are_accepted_and_replaced_alike(value: str | None) -> None:
    compiled, python = _request.request_id_from(value), python_request_id_from(value)
    assert compiled == python or (GENERATED_ID.fullmatch(compiled) and GENERATED_ID.fullmatch(python))


def test_generated_request_ids_count_up_from_the_seed_and_widen_past_twelve_digits() -> None:
    try:
        _request.seed_request_ids("abcdefabcdefabcd-", 0xFFFFFFFFFFFF)
        assert [_request.next_request_id() for _ in range(2)] == ["abcdefabcdefabcd-ffffffffffff",
                                                                 "abcdefabcdefabcd-1000000000000"]
    finally:
        _http._seed_request_ids()
    assert not _request.next_request_id().startswith("abcdefabcdefabcd-")


@pytest.mark.parametrize(
    ("scope", "error"),
    [
        ({"path": "/", "headers": []}, KeyError),
        ({"method": "POST", "path": "/", "headers": [(b"user-agent", "text, not bytes")]}, (TypeError, AttributeError)),
        ({"method": "POST", "path": "/", "headers": [(b"user-agent",)]}, ValueError),
        ({"method": "POST", "path": "/", "headers": 42}, TypeError),
    ],
)
def test_a_malformed_scope_is_an_error_in_both(scope: dict[str, Any], error: Any) -> None:
    with pytest.raises(error):
        asgi.python_begin_request(scope, b"x-request-id")
    with pytest.raises(error):
        _request.begin_request(scope, b"x-request-id")


def test_the_request_context_is_the_python_reference_context() -> None:
    scope = {"method": "POST", "path": "/", "headers": [(b"user-agent", b"curl")], "client": ("192.0.2.1", 5)}
    state = _request.begin_request(scope, b"x-request-id")
    state.actor, state.tenant, state.session_id = Actor(id="alice"), "acme", "s1"
    with audit_context(impersonator="admin", tenant="outer"):
        outer = current_audit_context()
        token = _request.enter_request_context(state)
        compiled = current_audit_context()
        asgi._reset_context(token)
        assert current_audit_context() is outer
        token = asgi.python_enter_request_context(state)
        python = current_audit_context()
        asgi._reset_context(token)
    assert type(compiled) is AuditContext and compiled == python
    assert compiled == AuditContext(Actor(id="alice"), "acme", state.request_id, "s1", "admin", "192.0.2.1", "curl")


class _Message(dict):  # type: ignore[type-arg]
    """A mapping that is not exactly a dict, as some servers send."""


@pytest.mark.parametrize("recorder", [_request.StatusRecorder, asgi.python_status_recorder], ids=["compiled", "python"])
def test_the_status_recorder_notes_the_status_and_hands_back_the_servers_awaitable(recorder: Any) -> None:
    state = _request.begin_request({"method": "POST", "path": "/", "headers": []}, b"x-request-id")
    sent: list[Any] = []

    def send(message: Any) -> str:
        sent.append(message)
        return f"awaitable {len(sent)}"

    record = recorder(send, state)
    assert record({"type": "http.response.body", "status": 999}) == "awaitable 1"
    assert state.status is None
    assert record(_Message(type="http.response.start", status=201, headers=[])) == "awaitable 2"
    assert state.status == 201 and len(sent) == 2
    with pytest.raises(KeyError):
        record({"status": 500})
    with pytest.raises(KeyError):
        record({"type": "http.response.start"})
    assert len(sent) == 2


def test_request_state_takes_the_dataclass_arguments_and_defaults() -> None:
    arguments = ("POST", "/x", "r1", "10.0.0.1", "ua", "s", None, "t", 7)
    compiled, python = _request.RequestState(*arguments), PythonRequestState(*arguments)
    assert [getattr(compiled, name) for name in PythonRequestState.__slots__] == [
        getattr(python, name) for name in PythonRequestState.__slots__
    ]
    keywords = dict(zip(PythonRequestState.__slots__, arguments, strict=False), status=204, emitted=True)
    assert _request.RequestState(**keywords).status == 204 and _request.RequestState(**keywords).emitted is True
    with pytest.raises(TypeError):
        _request.RequestState("POST", "/x")
    with pytest.raises(AttributeError):
        compiled.not_a_field = 1  # type: ignore[attr-defined]


def test_a_state_in_a_reference_cycle_is_collected() -> None:
    state = _request.begin_request({"method": "POST", "path": "/", "headers": []}, b"x-request-id")
    state.path_params = {"state": state}
    state.error = ValueError("boom")
    marker = id(state)
    del state
    gc.collect()
    assert all(id(item) != marker for item in gc.get_objects() if type(item) is _request.RequestState)


class _Route:
    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


@pytest.mark.parametrize(
    ("scope", "root_path"),
    [
        ({"route": _Route(path_format="/documents/{id}"), "path_params": {"id": "7"}}, ""),
        ({"route": _Route(path_format="", path="/plain")}, ""),
        ({"route": _Route(path="/only-path")}, ""),
        ({"route": _Route(path_format=None, path=42)}, ""),
        ({"route": _Route(path_format="/items/{id}"), "root_path": "/api/v1//"}, ""),
        ({"route": _Route(path_format="/items"), "root_path": "/outer/inner"}, "/outer"),
        ({"route": _Route(path_format=""), "root_path": "/"}, ""),
        ({"route": _Route(path_format="/x"), "root_path": "/a"}, "/a/b"),
        ({"route": None, "path_params": {"a": 1}}, ""),
        ({}, ""),
    ],
)
def test_route_of_reads_the_template_the_python_reference_reads(scope: dict[str, Any], root_path: str) -> None:
    assert _request.route_of(scope, root_path) == asgi.python_route_of(scope, root_path)


def _finished(status: Any, **fields: Any) -> tuple[Any, Any]:
    """One finished request's state, compiled and Python, identical but for the class."""
    scope = {"method": "PUT", "path": "/documents/7", "headers": [(b"user-agent", b"curl")], "client": ("192.0.2.9", 1)}
    compiled = _request.begin_request(scope, b"x-request-id")
    python = PythonRequestState(*(getattr(compiled, name) for name in PythonRequestState.__slots__))
    for state in (compiled, python):
        state.status, state.route_template, state.path_params = status, "/documents/{document_id}", {"document_id": 7}
        for name, value in fields.items():
            setattr(state, name, value)
    return compiled, python


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (200, {}),
        (None, {}),
        (0, {}),
        (403, {"method": "GET"}),
        (404, {"actor": Actor(id="alice"), "tenant": "acme", "session_id": "s"}),
        (302, {"path_params": None}),
        (500, {"error": RuntimeError("boom")}),
        (200, {"method": "GET"}),
        (200, {"emitted": True}),
        (200, {"route_template": "/documents/{document_id}/archive"}),
    ],
)
def test_emit_request_event_emits_what_the_python_reference_emits(status: Any, fields: dict[str, Any]) -> None:
    capture = AuditCapture()
    otel_audit.configure(delivery_processor=capture)
    try:
        logger = get_audit_logger("test")
        options = AuditOptions.build(actions={"/documents/{document_id}/archive": None})
        compiled, python = _finished(status, **fields)
        _request.emit_request_event(logger, options, compiled)
        python_emit_request_event(logger, options, python)
        assert compiled.emitted == python.emitted
        emitted = capture.attributes
    finally:
        otel_audit.shutdown()
    assert len(emitted) in (0, 2)
    for event in emitted:
        assert event.pop("log.record.uid") and event.pop("audit.metadata")["duration_ms"] >= 0
    if emitted:
        assert emitted[0] == emitted[1]
        assert emitted[0]["http.response.status_code"] == (status or 500)


class _BrokenRoute:
    @property
    def path_format(self) -> str:
        raise RuntimeError("route table gone")


async def _endpoint(scope: Any, receive: Any, send: Any) -> None:
    """The app behind the middleware in the finisher tests (never called: they finish states directly)."""


@pytest.mark.parametrize(
    ("scope_extra", "options", "status", "method"),
    [
        ({}, {}, 201, "POST"),
        ({"user": SimpleUser("alice")}, {}, 200, "PUT"),
        ({"state": {"user": "bob"}}, {}, 200, "DELETE"),
        ({}, {"tenant_resolver": lambda scope: "acme"}, 200, "POST"),
        ({}, {"actor_resolver": lambda scope: "carol"}, 200, "POST"),
        ({}, {}, 403, "GET"),
        ({}, {}, 200, "GET"),
        ({"route": _BrokenRoute()}, {}, 200, "POST"),
    ],
    ids=["anonymous", "scope-user", "request-state-user", "tenant-resolver", "actor-resolver", "denied-get",
         "unaudited-get", "failing-route"],
)
def test_the_compiled_finish_does_what_the_python_finish_does(
    scope_extra: dict[str, Any], options: dict[str, Any], status: int, method: str,
) -> None:
    capture = AuditCapture()
    otel_audit.configure(delivery_processor=capture)
    try:
        middleware = asgi.AuditMiddleware(_endpoint, **options)
        assert isinstance(middleware._finish, _request.RequestFinisher)
        outcomes = []
        for finish in (middleware._finish, middleware._python_finish):
            scope = {"type": "http", "method": method, "path": "/documents/7", "headers": [], "root_path": "",
                     "route": _Route(path_format="/documents/{document_id}"), "path_params": {"document_id": "7"},
                     **scope_extra}
            state = _request.begin_request(scope, b"x-request-id")
            middleware._resolve({**scope, "user": None, "state": {}}, state)
            state.status = status
            errors_before = STATS.snapshot()["instrumentation_errors"]
            finish(scope, state)
            finish(scope, state)  # once only
            outcomes.append((
                state.emitted, state.actor, state.tenant, state.route_template, state.path_params,
                STATS.snapshot()["instrumentation_errors"] - errors_before,
            ))
        emitted = capture.attributes
    finally:
        otel_audit.shutdown()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][5] == (1 if "route" in scope_extra else 0)  # a failure is reported once, by either
    assert len(emitted) in (0, 2)
    for event in emitted:
        assert event.pop("log.record.uid") and event.pop("audit.request.id") and event.pop("audit.metadata")
    if emitted:
        assert emitted[0] == emitted[1]


@pytest.mark.parametrize(
    ("scope_extra", "options", "strict"),
    [
        ({}, {}, False),
        ({"user": SimpleUser("alice")}, {}, False),
        ({"headers": [(b"x-forwarded-for", b"198.51.100.7")]}, {"trusted_proxies": ["127.0.0.0/8"]}, False),
        ({}, {"tenant_resolver": lambda scope: "acme", "session_cookie": "sid"}, False),
        ({}, {}, True),
    ],
    ids=["plain", "scope-user", "trusted-proxy", "tenant-and-session", "strict"],
)
def test_the_compiled_start_does_what_the_python_start_does(
    scope_extra: dict[str, Any], options: dict[str, Any], strict: bool,
) -> None:
    middleware = asgi.AuditMiddleware(_endpoint, **options)
    assert isinstance(middleware._start, _request.RequestStarter)
    started = []
    for start in (middleware._start, middleware._python_start):
        scope = {"type": "http", "method": "POST", "path": "/documents/7", "client": ("127.0.0.1", 9),
                 "headers": [(b"cookie", b"sid=s3cret"), (b"x-request-id", b"req-1")], "state": {}}
        scope.update(scope_extra, headers=scope["headers"] + scope_extra.get("headers", []))
        outer = current_audit_context()
        state, send, token = start(scope, print, strict)
        context = current_audit_context()
        asgi._reset_context(token)
        assert current_audit_context() is outer and scope[asgi.STATE_KEY] is state
        started.append(([getattr(state, name) for name in FIELDS + ["request_id"]], context, callable(send)))
        assert (type(send) is _request.StatusRecorder) == (not strict)
    assert started[0] == started[1]


def test_a_request_the_compiled_start_cannot_read_leaves_no_state_and_no_context() -> None:
    middleware = asgi.AuditMiddleware(_endpoint)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"user-agent", "not bytes")]}
    outer = current_audit_context()
    with pytest.raises(TypeError):
        middleware._start(scope, print, False)
    assert asgi.STATE_KEY not in scope and current_audit_context() is outer
