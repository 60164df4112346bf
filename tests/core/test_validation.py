"""Invalid events raise AuditEventError naming the field; valid ones never crash the application."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit import Actor, AuditEventError, Resource, get_audit_logger
from otel_audit.model import to_any_value

logger = get_audit_logger("tests.validation")


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"action": "Document.Share"}, "action", "lower-case dotted"),
        ({"action": "share"}, "action", "lower-case dotted"),
        ({"action": "document share"}, "action", "lower-case dotted"),
        ({"action": 42}, "action", "must be a string"),
        ({"action": "a.b", "outcome": "ok"}, "outcome", "success/failure/denied/unknown"),
        ({"action": "a.b", "metadata": {"when": object()}}, "metadata.when", "unsupported type object"),
        ({"action": "a.b", "metadata": {"n": {"deep": [1, {2: "x"}]}}}, "metadata.n.deep[1]", "keys must be strings"),
        ({"action": "a.b", "metadata": {"big": 2**70}}, "metadata.big", "64 bits"),
        ({"action": "a.b", "metadata": {"nan": float("nan")}}, "metadata.nan", "NaN"),
        ({"action": "a.b", "metadata": {"t": dt.datetime(2026, 1, 1)}}, "metadata.t", "naive datetime"),
        ({"action": "a.b", "metadata": ["not", "a", "map"]}, "metadata", "must be a mapping"),
        ({"action": "a.b", "resource": Resource.__new__(Resource)}, "resource.type", "is required"),
        ({"action": "a.b", "resource": ("document", 42)}, "resource.id", "must be a string"),
        ({"action": "a.b", "actor": {"id": 7}}, "actor.id", "must be a string"),
        ({"action": "a.b", "actor": {"id": "u", "type": "robot"}}, "actor.type", "user/service/api_key"),
        ({"action": "a.b", "actor": {"id": "u", "roles": "admin"}}, "actor.roles", "list of strings"),
        ({"action": "a.b", "tenant": 5}, "tenant_id", "must be a string"),
        ({"action": "a.b", "http_status_code": 700}, "http_status_code", "100-599"),
        ({"action": "a.b", "changes": {"title": "new"}}, "changes.title", "Change"),
        ({"action": "a.b", "severity": "LOUD"}, "severity", "unknown severity"),
        ({"action": "a.b", "timestamp": dt.datetime(2026, 1, 1)}, "timestamp", "naive datetime"),
    ],
)
def test_invalid_input_names_the_field(audit_events, kwargs, field, fragment) -> None:
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("resource"), Resource):
        object.__setattr__(kwargs["resource"], "type", None)
        object.__setattr__(kwargs["resource"], "id", None)
        object.__setattr__(kwargs["resource"], "name", None)
        with pytest.raises(AuditEventError) as raised:
            Resource(type=None)  # type: ignore[arg-type]
    else:
        action = kwargs.pop("action")
        with pytest.raises(AuditEventError) as raised:
            logger.emit(action, **kwargs)
    assert raised.value.field == field
    assert fragment in str(raised.value)
    assert field in str(raised.value)
    assert len(audit_events) == 0


class Color(enum.Enum):
    RED = "red"


def test_predictable_conversions() -> None:
    value = {
        "when": dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 1, 2),
        "color": Color.RED,
        "id": uuid.UUID(int=1),
        "price": decimal.Decimal("9.99"),
        "tags": {"b", "a"},
        "pair": (1, "x"),
        "blob": b"\x00\x01",
        "took": dt.timedelta(milliseconds=1500),
        "none": None,
    }
    assert to_any_value(value) == {
        "when": "2026-01-01T12:00:00+00:00",
        "day": "2026-01-02",
        "color": "red",
        "id": "00000000-0000-0000-0000-000000000001",
        "price": "9.99",
        "tags": ["a", "b"],
        "pair": [1, "x"],
        "blob": b"\x00\x01",
        "took": 1.5,
        "none": None,
    }


def test_self_referencing_metadata_is_rejected_not_looping() -> None:
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(AuditEventError, match="nesting deeper"):
        to_any_value(loop)


metadata_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(metadata=st.dictionaries(st.text(min_size=1, max_size=10), metadata_values, max_size=6))
def test_valid_metadata_is_always_accepted(metadata) -> None:
    from otel_audit.model import AuditEvent

    event = AuditEvent(action="fuzz.check", actor=Actor(id="u"), metadata=metadata)
    assert event.metadata == to_any_value(metadata)
