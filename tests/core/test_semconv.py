"""The attribute mapping is lossless in both directions, and changes() builds the audit.changes map."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from otel_audit import (
    Actor,
    AuditEvent,
    AuditEventError,
    Change,
    Outcome,
    changes,
    semconv,
)

from .strategies import actions, actors, ids, plain_values, resources

any_values = st.recursive(
    plain_values,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)

events = st.builds(
    AuditEvent,
    action=actions,
    outcome=st.sampled_from(list(Outcome)),
    actor=st.none() | actors,
    resource=st.none() | resources,
    tenant_id=ids,
    client_address=ids,
    user_agent=ids,
    session_id=ids,
    request_id=ids,
    http_method=st.none() | st.sampled_from(["GET", "POST", "DELETE"]),
    http_route=ids,
    url_path=ids,
    http_status_code=st.none() | st.integers(100, 599),
    error_type=ids,
    reason=ids,
    changes=st.dictionaries(st.text(min_size=1, max_size=8), st.builds(Change, any_values, any_values), max_size=3),
    metadata=st.dictionaries(st.text(max_size=8), any_values, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(event=events)
def test_round_trip_is_lossless(event: AuditEvent) -> None:
    attributes = semconv.event_to_attributes(event, uid="u-1")
    assert attributes[semconv.LOG_RECORD_UID] == "u-1"
    back = semconv.attributes_to_event(attributes)
    assert back == event


def test_round_trip_through_sdk_container_types() -> None:
    event = AuditEvent(action="a.b", actor=Actor(id="u", roles=("r1", "r2")), metadata={"l": [1, {"m": [2]}]})
    attributes = semconv.event_to_attributes(event)
    from opentelemetry.attributes import BoundedAttributes

    bounded = BoundedAttributes(attributes=attributes, immutable=True, extended_attributes=True)
    assert isinstance(bounded[semconv.USER_ROLES], tuple)
    assert semconv.attributes_to_event(bounded) == event


def test_absent_values_are_not_sent() -> None:
    attributes = semconv.event_to_attributes(AuditEvent(action="user.login"))
    assert attributes == {"audit.action": "user.login", "audit.outcome": "success"}


def test_reverse_mapping_rejects_garbage_naming_the_attribute() -> None:
    with pytest.raises(AuditEventError) as raised:
        semconv.attributes_to_event({"audit.action": "a.b", "audit.changes": {"x": "oops"}})
    assert raised.value.field == "audit.changes.x"
    with pytest.raises(AuditEventError) as raised:
        semconv.attributes_to_event({"audit.action": "a.b", "audit.changes": 7})
    assert raised.value.field == "audit.changes"
    with pytest.raises(AuditEventError) as raised:
        semconv.attributes_to_event({"audit.action": "a.b", "audit.metadata": [1]})
    assert raised.value.field == "audit.metadata"
    with pytest.raises(AuditEventError) as raised:
        semconv.attributes_to_event({"audit.outcome": "success"})
    assert raised.value.field == "action"


def test_is_audit_record() -> None:
    assert semconv.is_audit_record("audit.user.login", {"audit.action": "user.login"})
    assert not semconv.is_audit_record("audit.user.login", {})
    assert not semconv.is_audit_record("http.request", {"audit.action": "x.y"})
    assert not semconv.is_audit_record(None, None)


@dataclass
class Account:
    email: str
    plan: str
    seats: int


class AccountModel(BaseModel):
    email: str
    plan: str
    seats: int


class Plain:
    def __init__(self, plan: str) -> None:
        self.plan = plan
        self._cache = "hidden"


def test_changes_of_dicts_dataclasses_models_and_objects() -> None:
    assert changes({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"b": Change(2, 3), "c": Change(None, 4)}
    before, after = Account("a@x", "free", 1), Account("a@x", "pro", 5)
    assert changes(before, after) == {"plan": Change("free", "pro"), "seats": Change(1, 5)}
    assert changes(before, after, fields=["plan"]) == {"plan": Change("free", "pro")}
    assert changes(AccountModel(email="a", plan="free", seats=1), AccountModel(email="a", plan="pro", seats=1)) == {
        "plan": Change("free", "pro")
    }
    assert changes(Plain("free"), Plain("pro")) == {"plan": Change("free", "pro")}
    assert changes(None, {"x": 1}) == {"x": Change(None, 1)}
    assert changes(before, before) == {}


def test_changes_feed_emit(audit_events) -> None:
    from otel_audit import get_audit_logger

    get_audit_logger().emit("account.update", changes=changes({"plan": "free"}, {"plan": "pro"}))
    assert audit_events.attributes[0]["audit.changes"] == {"plan": {"old": "free", "new": "pro"}}
