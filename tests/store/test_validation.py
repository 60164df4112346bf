"""The store's fast check of audit attributes accepts exactly what semconv.attributes_to_event accepts, and its
compiled yes (plain_audit_attributes) is never given to what the check refuses."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit import semconv
from otel_audit.model import AuditEventError
from otel_audit.store import otlp
from otel_audit.store.otlp import check_audit_attributes, validate_audit_attributes

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


def fast_accepts(attributes, check=check_audit_attributes) -> bool:
    try:
        check(attributes)
    except AuditEventError:
        return False
    return True


attribute_maps = st.builds(
    lambda base, changes: {**(audit_attributes() if base else {semconv.AUDIT_ACTION: "user.login"}), **changes},
    st.booleans(), st.dictionaries(names, interesting | any_values, max_size=4),
)


@pytest.mark.parametrize("check", [check_audit_attributes, validate_audit_attributes], ids=lambda check: check.__name__)
@settings(max_examples=600, deadline=None)
@given(attributes=attribute_maps)
def test_fast_check_agrees_with_the_model(check, attributes) -> None:
    assert fast_accepts(attributes, check) == slow_accepts(attributes), attributes


compiled = pytest.mark.skipif(otlp._native_plain is None, reason="built without the compiled store extension")


def plain(attributes) -> bool:
    return otlp._native_plain(attributes, otlp._CHECK_SPEC)


@compiled
@settings(max_examples=1500, deadline=None)
@given(attributes=attribute_maps)
def test_the_compiled_yes_is_only_given_to_what_the_check_accepts(attributes) -> None:
    if plain(attributes):
        assert fast_accepts(attributes), attributes


@compiled
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {semconv.AUDIT_OUTCOME: "denied", semconv.AUDIT_REASON: "r" * 4096, semconv.USER_ROLES: ["admin", "x" * 1024]},
        {semconv.AUDIT_CHANGES: {"title": {"old": "a", "new": 2.5}, "tags": {"new": [1, {"k": b"v"}]}}},
        {semconv.AUDIT_METADATA: {"m": nested(15), "n": None, "t": True}, semconv.HTTP_RESPONSE_STATUS_CODE: 599},
        {semconv.AUDIT_ACTION: "a1.0-b_c.d", semconv.AUDIT_RESOURCE_TYPE: "t" * 128, semconv.AUDIT_ACTOR_TYPE: "service"},
        {semconv.AUDIT_CHANGES: {}, semconv.AUDIT_METADATA: {}, semconv.CLIENT_ADDRESS: None},
    ],
)
def test_the_compiled_check_says_yes_to_plain_events(extra) -> None:
    attributes = {**audit_attributes(), **extra}
    assert fast_accepts(attributes)
    assert plain(attributes)


@compiled
@pytest.mark.parametrize(
    ("name", "value", "check_accepts"),
    [
        (semconv.AUDIT_ACTION, "user.login\n", True),  # the regex's $ allows a final newline; check decides
        (semconv.AUDIT_ACTION, "user._login", False),
        (semconv.AUDIT_ACTION, "user..login", False),
        (semconv.AUDIT_ACTION, "user.", False),
        (semconv.AUDIT_ACTION, "a" * 127 + ".b", False),
        (semconv.AUDIT_CHANGES, [], True),  # falsy: check skips it
        (semconv.AUDIT_METADATA, "", True),
        (semconv.HTTP_RESPONSE_STATUS_CODE, True, False),
        (semconv.HTTP_RESPONSE_STATUS_CODE, 2**70, False),
        (semconv.AUDIT_METADATA, {"m": nested(16)}, False),
        (semconv.AUDIT_CHANGES, {"f": {"old": float("nan")}}, False),
        (semconv.AUDIT_OUTCOME, None, False),
        (semconv.AUDIT_ACTOR_TYPE, None, False),
        (semconv.AUDIT_ACTOR_TYPE, "robot", False),
        (semconv.USER_ROLES, ["admin", ""], False),
        (semconv.USER_ROLES, "admin", False),
        (semconv.AUDIT_RESOURCE_TYPE, "", False),
    ],
)
def test_the_compiled_check_leaves_the_rest_to_the_check(name, value, check_accepts) -> None:
    attributes = {**audit_attributes(), name: value}
    assert not plain(attributes)
    assert fast_accepts(attributes) == check_accepts
    assert fast_accepts(attributes, validate_audit_attributes) == check_accepts


@compiled
def test_the_compiled_check_refuses_a_spec_in_another_shape() -> None:
    with pytest.raises(TypeError, match="_CHECK_SPEC"):
        otlp._native_plain(audit_attributes(), otlp._CHECK_SPEC[:-1])


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
