"""The store's fast check of audit attributes accepts exactly what semconv.attributes_to_event accepts."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit import semconv
from otel_audit.model import AuditEventError
from otel_audit.store.otlp import check_audit_attributes

from .helpers import audit_attributes

def nested(depth: int) -> list:
    """A list nested `depth` levels deep around the value 1."""
    value: list = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
           | st.text(max_size=12) | st.binary(max_size=4))
any_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
interesting = st.sampled_from([
    "user.login", "document.share", "User.Login", "nodot", "", "a.b" * 50, "success", "failure", "denied", "meh",
    "user", "service", "robot", "document", 200, 99, 600, True, 1.5, ["admin"], ["", "x"], [1], "x" * 1025,
    {"f": {"old": 1, "new": 2}}, {"f": 3}, {"": {"old": 1}}, {"m": float("nan")}, {"m": nested(15)}, {"m": nested(16)},
    {"f": {"old": nested(16)}}, {"f": {"old": nested(15)}}, [], {}, 0, None,
])
names = st.sampled_from([
    semconv.AUDIT_ACTION, semconv.AUDIT_OUTCOME, semconv.USER_ID, semconv.USER_EMAIL, semconv.USER_NAME,
    semconv.USER_ROLES, semconv.AUDIT_ACTOR_TYPE, semconv.AUDIT_ACTOR_IMPERSONATOR_ID, semconv.AUDIT_RESOURCE_TYPE,
    semconv.AUDIT_RESOURCE_ID, semconv.AUDIT_RESOURCE_NAME, semconv.AUDIT_TENANT_ID, semconv.HTTP_RESPONSE_STATUS_CODE,
    semconv.AUDIT_CHANGES, semconv.AUDIT_METADATA, semconv.AUDIT_REASON, semconv.CLIENT_ADDRESS, semconv.URL_PATH,
])


def slow_accepts(attributes) -> bool:
    try:
        semconv.attributes_to_event(attributes)
    except (AuditEventError, TypeError, AttributeError, ValueError):
        return False
    return True


def fast_accepts(attributes) -> bool:
    try:
        check_audit_attributes(attributes)
    except AuditEventError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(base=st.booleans(), changes=st.dictionaries(names, interesting | any_values, max_size=4))
def test_fast_check_agrees_with_the_model(base, changes) -> None:
    attributes = audit_attributes() if base else {semconv.AUDIT_ACTION: "user.login"}
    attributes.update(changes)
    assert fast_accepts(attributes) == slow_accepts(attributes), attributes


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (semconv.AUDIT_ACTION, "Not An Action"),
        (semconv.AUDIT_OUTCOME, "meh"),
        (semconv.AUDIT_ACTOR_TYPE, "robot"),
        (semconv.USER_ROLES, [""]),
        (semconv.AUDIT_RESOURCE_TYPE, ""),
        (semconv.HTTP_RESPONSE_STATUS_CODE, 42),
        (semconv.AUDIT_CHANGES, {"title": "not a change"}),
        (semconv.AUDIT_METADATA, {"x": math.inf}),
        (semconv.USER_ID, "x" * 1025),
    ],
)
def test_each_rule_rejects_with_the_same_verdict(name, value) -> None:
    attributes = {**audit_attributes(), name: value}
    assert not fast_accepts(attributes)
    assert not slow_accepts(attributes)
