"""emit() builds plainly valid events straight into attributes and sends everything else through AuditEvent: both
paths must produce the same record, and inputs the fast path skips must still be validated."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_audit import (
    Actor,
    AuditEvent,
    AuditEventError,
    Outcome,
    audit_context,
    configure,
    get_audit_logger,
    semconv,
    shutdown,
)
from otel_audit.logger import AuditLogger
from otel_audit.model import MAX_DEPTH, Change
from otel_audit.testing import AuditCapture

from .strategies import actions, actors, ids, plain_values, resources

nested_values = st.recursive(
    plain_values,
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Values to_any_value converts (the AuditEvent path), alone or inside a container.
converted_values = st.sampled_from([
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), {3, 1, 2}, UUID(int=7), Decimal("1.50"), Outcome.DENIED,
    [1, frozenset({"x"})], {"at": date(2026, 1, 2)},
])
calls = st.fixed_dictionaries(
    {
        "action": actions,
        "outcome": st.sampled_from([*Outcome, *(member.value for member in Outcome)]),
        "actor": st.none() | actors | st.text(max_size=12),  # a string is an actor's id
        # a (type, id) pair, a Resource, or None: the pair and the Resource must give the same attributes
        "resource": st.none() | resources,
        "resource_as_pair": st.booleans(),
        "tenant": ids,
        "client_address": ids,
        "user_agent": ids,
        "session_id": ids,
        "request_id": ids,
        "http_method": st.none() | st.sampled_from(["GET", "POST", "DELETE"]),
        "http_route": ids,
        "url_path": ids,
        "http_status_code": st.none() | st.integers(100, 599),
        "error_type": ids,
        "reason": ids,
        # plain metadata, flat or nested, takes the fast path; metadata to convert takes the AuditEvent path
        "metadata": st.dictionaries(st.text(max_size=8), nested_values | converted_values, max_size=4),
        # changes in each form, plain (the fast path) or holding a value to convert (the AuditEvent path)
        "changes": st.dictionaries(
            st.text(min_size=1, max_size=6),
            st.builds(Change, nested_values | converted_values, nested_values)
            | st.tuples(nested_values, nested_values | converted_values)
            | st.fixed_dictionaries({}, optional={"old": nested_values, "new": nested_values}),
            max_size=2,
        ),
    }
)


@pytest.fixture
def capture() -> Iterator[AuditCapture]:
    """The real pipeline without redaction (random text may look like a secret; that is tested elsewhere)."""
    sink = AuditCapture()
    configure(service_name="paths", delivery_processor=sink, redaction=False)
    try:
        yield sink
    finally:
        shutdown()


def _emit_arguments(call: dict[str, Any]) -> dict[str, Any]:
    arguments = {key: value for key, value in call.items() if key not in ("action", "resource_as_pair")}
    resource = call["resource"]
    if call["resource_as_pair"] and resource is not None and resource.name is None:
        arguments["resource"] = (resource.type, resource.id)
    return arguments


def _expected(call: dict[str, Any], ambient_actor: Actor | None = None) -> dict[str, Any]:
    """What the AuditEvent path makes of the same call (the reference: semconv.event_to_attributes)."""
    event = AuditEvent(
        action=call["action"],
        outcome=call["outcome"],
        actor=_as_actor(call["actor"]) or ambient_actor,
        resource=call["resource"],
        tenant_id=call["tenant"],
        client_address=call["client_address"],
        user_agent=call["user_agent"],
        session_id=call["session_id"],
        request_id=call["request_id"],
        http_method=call["http_method"],
        http_route=call["http_route"],
        url_path=call["url_path"],
        http_status_code=call["http_status_code"],
        error_type=call["error_type"],
        reason=call["reason"],
        changes=call["changes"],
        metadata=call["metadata"],
    )
    return semconv.event_to_attributes(event, "uid")


def _needs_conversion(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_needs_conversion(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_needs_conversion(item) for item in value)
    return not (value is None or type(value) in (str, bool, int, float))


def _as_actor(actor: Actor | str | None) -> Actor | None:
    return Actor(id=actor) if isinstance(actor, str) else actor


def _change_values(change: Any) -> tuple[Any, Any]:
    if isinstance(change, Change):
        return change.old, change.new
    if isinstance(change, dict):
        return change.get("old"), change.get("new")
    return change


def _received(capture: AuditCapture) -> dict[str, Any]:
    (attributes,) = capture.attributes
    assert attributes.pop(semconv.LOG_RECORD_UID)
    return attributes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=calls)
def test_both_paths_give_the_same_record(
    capture: AuditCapture, monkeypatch: pytest.MonkeyPatch, call: dict[str, Any]
) -> None:
    logger = get_audit_logger("paths")
    logger.emit(call["action"])  # a new action is validated once; the call under test may then take the fast path
    capture.clear()
    validated: list[str] = []
    original = AuditLogger._emit_validated
    monkeypatch.setattr(AuditLogger, "_emit_validated", lambda self, *args: validated.append(args[0]) or original(self, *args))
    logger.emit(call["action"], **_emit_arguments(call))
    monkeypatch.undo()
    changed = [value for change in call["changes"].values() for value in _change_values(change)]
    plain = not any(_needs_conversion(value) for value in [*call["metadata"].values(), *changed])
    assert validated == ([] if plain else [call["action"]])
    expected = _expected(call)
    expected.pop(semconv.LOG_RECORD_UID)
    received = _received(capture)
    assert received == expected
    assert list(received) == list(expected)  # same order, so the same bytes on the wire


def test_context_fills_the_fast_path_like_the_event_path(capture: AuditCapture) -> None:
    logger = get_audit_logger("paths")
    alice = Actor(id="alice", email="alice@example.com")
    with audit_context(actor=alice, tenant="acme", request_id="req-1", session_id="s-1", impersonator="root",
                       client_address="10.0.0.1", user_agent="curl/8"):
        logger.emit("document.read", resource=("document", "d-1"), metadata={"n": 1})
        logger.emit("document.read", resource=("document", "d-1"), metadata={"n": {"nested": 1}})
    fast, validated = capture.attributes
    assert fast.pop(semconv.LOG_RECORD_UID) and validated.pop(semconv.LOG_RECORD_UID)
    fast.pop(semconv.AUDIT_METADATA), validated.pop(semconv.AUDIT_METADATA)
    assert fast == validated
    assert fast[semconv.AUDIT_ACTOR_IMPERSONATOR_ID] == "root"
    assert fast[semconv.AUDIT_TENANT_ID] == "acme" and fast[semconv.CLIENT_ADDRESS] == "10.0.0.1"


_LOOP: dict[str, Any] = {}
_LOOP["self"] = _LOOP


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"resource": ("document", 42)}, "resource.id"),
        ({"resource": ("", "d-1")}, "resource.type"),
        ({"resource": (None, "d-1")}, "resource.type"),
        ({"resource": ("x" * 129, "d-1")}, "resource.type"),
        ({"tenant": "t" * 1025}, "tenant_id"),
        ({"request_id": 7}, "request_id"),
        ({"reason": "r" * 4097}, "reason"),
        ({"http_status_code": True}, "http_status_code"),
        ({"http_status_code": 600}, "http_status_code"),
        ({"outcome": "won"}, "outcome"),
        ({"outcome": ["success"]}, "outcome"),
        ({"metadata": {"when": object()}}, "metadata.when"),
        ({"metadata": {1: "one"}}, "metadata"),
        ({"metadata": {"a": {"b": math.nan}}}, "metadata.a.b"),
        ({"metadata": {"tags": ["x", 2**64]}}, "metadata.tags[1]"),
        ({"metadata": {"a": [{1: "one"}]}}, "metadata.a[0]"),
        ({"metadata": _LOOP}, "metadata" + ".self" * MAX_DEPTH),  # refused at the depth limit, never followed forever
        ({"changes": {"title": Change(math.inf, "x")}}, "changes.title.old"),
        ({"changes": {"tags": (["a"], ["b", object()])}}, "changes.tags.new[1]"),
        ({"changes": {"": ("a", "b")}}, "changes"),
        ({"changes": {"title": ("a", "b", "c")}}, "changes.title"),
        ({"changes": {"title": {"old": "a", "was": "b"}}}, "changes.title"),
        ({"actor": 3}, "actor"),
        ({"actor": "u" * 1025}, "actor.id"),
    ],
)
def test_inputs_the_fast_path_refuses_are_still_validated(
    capture: AuditCapture, arguments: dict[str, Any], field: str
) -> None:
    logger = get_audit_logger("paths")
    logger.emit("document.read")  # the action is known: only the argument under test can send it off the fast path
    with pytest.raises(AuditEventError) as error:
        logger.emit("document.read", **arguments)
    assert error.value.field == field
    assert len(capture) == 1


def test_an_unknown_action_is_validated_before_it_is_trusted(capture: AuditCapture) -> None:
    logger = get_audit_logger("paths")
    with pytest.raises(AuditEventError) as error:
        logger.emit("Document Read")
    assert error.value.field == "action"
    with pytest.raises(AuditEventError):
        logger.emit("Document Read")  # a rejected action is never remembered as valid
    with pytest.raises(AuditEventError) as error:
        logger.emit(["document.read"])  # type: ignore[arg-type]  # unhashable: named, not a TypeError
    assert error.value.field == "action"
    assert len(capture) == 0


def test_the_api_record_is_the_one_the_sdk_constructor_builds() -> None:
    """emit builds the API LogRecord field by field; with the pinned SDK it must equal what LogRecord(...) builds,
    inside a span and outside one (a field added by a new SDK makes this fail rather than go missing)."""
    from opentelemetry import trace
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.context import get_current
    from opentelemetry.sdk.trace import TracerProvider

    from otel_audit.logger import _api_record

    attributes = {semconv.AUDIT_ACTION: "document.read"}

    def both() -> tuple[LogRecord, LogRecord]:
        built = _api_record(1, 2, SeverityNumber.WARN, "WARN", attributes, "audit.document.read")
        expected = LogRecord(
            timestamp=1, observed_timestamp=2, context=get_current(), severity_number=SeverityNumber.WARN,
            severity_text="WARN", attributes=attributes, event_name="audit.document.read",
        )
        return built, expected

    built, expected = both()
    assert vars(built) == vars(expected) and built.trace_id == 0
    span = TracerProvider().get_tracer("paths").start_span("request")
    with trace.use_span(span, end_on_exit=True):
        built, expected = both()
    assert vars(built) == vars(expected)
    assert built.trace_id == span.get_span_context().trace_id != 0


def test_an_actor_naming_an_empty_impersonator_keeps_it_on_both_paths(capture: AuditCapture) -> None:
    """The ambient impersonator applies only when the actor names none (None), not when it names ""."""
    logger = get_audit_logger("paths")
    actor = Actor(id="alice", impersonator_id="")
    with audit_context(impersonator="root"):
        logger.emit("document.read", actor=actor, metadata={"n": 1})
        logger.emit("document.read", actor=actor, metadata={"n": {"nested": 1}})
        logger.emit("document.read", actor=Actor(id="bob"), metadata={"n": 1})
    fast, validated, ambient = capture.attributes
    assert fast[semconv.AUDIT_ACTOR_IMPERSONATOR_ID] == validated[semconv.AUDIT_ACTOR_IMPERSONATOR_ID] == ""
    assert ambient[semconv.AUDIT_ACTOR_IMPERSONATOR_ID] == "root"
