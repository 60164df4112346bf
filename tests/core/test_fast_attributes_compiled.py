"""The compiled fast path (_attributes.c) against its reference, logger.python_fast_attributes: for any input, the
same answer (None, or the same uid, attributes in the same order, and severity)."""

from __future__ import annotations

import enum
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit import Outcome, Resource, logger
from otel_audit.model import Change, to_any_value, validated_actions

from .strategies import actors, ids, plain_values, resources

_attributes = pytest.importorskip("otel_audit._attributes", reason="the _attributes extension is not built (no C compiler)")

KNOWN_ACTION = "document.read"


class Other(str, enum.Enum):
    SUCCESS = "success"


class Text(str):
    pass


class OtherChange(Change):
    __slots__ = ()


def _limits(*bounds: int) -> st.SearchStrategy[str]:
    """Strings at and around the length limits (the checks' edges)."""
    return st.sampled_from(bounds).flatmap(lambda size: st.integers(max(0, size - 1), size + 1)).map(lambda n: "x" * n)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(inner, max_size=2) | st.lists(inner, max_size=2).map(tuple)
        | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    )


def _nested(levels: int, innermost: Any) -> dict[str, Any]:
    """Metadata whose innermost value sits inside `levels` containers below the metadata dict (dicts and lists in
    turn)."""
    value = innermost
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return {"m": value}


_nested_plain = st.recursive(plain_values, _containers, max_leaves=4)
# The forms of one change the fast path takes, with plain values.
plain_changes = (
    st.builds(Change, _nested_plain, _nested_plain) | st.tuples(_nested_plain, _nested_plain)
    | st.lists(_nested_plain, min_size=2, max_size=2)
    | st.fixed_dictionaries({}, optional={"old": _nested_plain, "new": _nested_plain})
)
odd = (
    st.builds(Text, st.text(max_size=4)) | st.integers(-3, 3) | st.booleans() | st.floats() | st.binary(max_size=3)
    | st.just(math.nan) | st.just(2**63) | st.just(-(2**63) - 1) | st.just(Other.SUCCESS) | st.just(["x"])
)
# Calls the fast path takes (in python_fast_attributes' argument order), each with up to two arguments swapped for
# something at or past an edge.
VALID = {
    "action": st.just(KNOWN_ACTION),
    "actor": st.none() | actors | st.text(max_size=8),
    "resource": st.none() | resources | st.tuples(st.text(min_size=1, max_size=8), ids),
    "outcome": st.sampled_from([*Outcome, *(member.value for member in Outcome)]),
    "metadata": st.none() | st.dictionaries(st.text(max_size=6), plain_values, max_size=4)
    | st.dictionaries(st.text(max_size=6), _nested_plain, max_size=3),
    "changes": st.none() | st.just({}) | st.dictionaries(st.text(min_size=1, max_size=6), plain_changes, max_size=3),
    "reason": ids,
    "error_type": ids,
    "severity": st.none(),
    "tenant": ids,
    "client_address": ids,
    "user_agent": ids,
    "session_id": ids,
    "request_id": ids,
    "http_method": ids,
    "http_route": ids,
    "url_path": ids,
    "http_status_code": st.none() | st.integers(100, 599),
    "timestamp": st.none(),
    "impersonator_id": st.none() | st.sampled_from(["", "root"]),
}

def _overlong_name(resource: Resource) -> Resource:
    """A Resource whose name is past the id limit (its constructor refuses one; the fast path checks anyway)."""
    object.__setattr__(resource, "name", "x" * (logger.MAX_ID_LEN + 1))
    return resource


id_edges = _limits(logger.MAX_ID_LEN) | odd
# For each argument, values at or past the edge of what the fast path takes.
EDGES = {
    "action": odd | st.just("never.seen"),
    "actor": odd | _limits(logger.MAX_ID_LEN),
    "resource": odd | st.just(("document",)) | resources.map(_overlong_name)
    | st.tuples(_limits(0, logger.MAX_TYPE_LEN) | odd | st.none(), id_edges | st.none()),
    "outcome": odd | st.just("won"),
    "metadata": odd | st.dictionaries(
        st.text(max_size=3) | st.integers(0, 2),
        st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, math.nan, math.inf]) | odd
        | st.lists(plain_values, max_size=2) | st.recursive(plain_values | odd, _containers, max_leaves=4),
        min_size=1, max_size=2,
    ) | st.integers(0, logger.MAX_DEPTH + 1).flatmap(lambda levels: st.sampled_from([
        _nested(levels, 1), _nested(levels, []), _nested(levels, {"a": 1}), _nested(levels, {}), _nested(levels, (1,)),
    ])),
    "changes": st.sampled_from([{"a": 1}, ("x",), 1]) | st.dictionaries(
        st.text(max_size=3) | st.builds(Text, st.text(min_size=1, max_size=3)) | st.integers(0, 2),
        plain_changes | odd | st.fixed_dictionaries({}, optional={"old": odd, "new": odd, "other": plain_values})
        | st.tuples(odd, odd) | st.lists(plain_values, max_size=3) | st.builds(OtherChange, plain_values, plain_values),
        min_size=1, max_size=2,
    ),
    "reason": _limits(logger.MAX_REASON_LEN) | odd,
    "error_type": id_edges,
    "severity": st.just(9),
    "tenant": id_edges,
    "client_address": id_edges,
    "user_agent": id_edges,
    "session_id": id_edges,
    "request_id": id_edges,
    "http_method": id_edges,
    "http_route": id_edges,
    "url_path": id_edges,
    "http_status_code": st.sampled_from([99, 100, 599, 600, True, 2**70, 200.0]) | odd,
    "timestamp": st.just(1),
    "impersonator_id": st.sampled_from(["", "root"]),
}
calls = st.builds(
    lambda call, swaps: {**call, **dict(swaps)},
    st.fixed_dictionaries(VALID),
    st.lists(st.sampled_from(list(EDGES)).flatmap(lambda name: st.tuples(st.just(name), EDGES[name])), max_size=2),
)


@pytest.fixture(autouse=True)
def known_action() -> None:
    validated_actions.add(KNOWN_ACTION)


_REAL_NEW_UID = logger.new_uid


@contextmanager
def same_uids() -> Iterator[None]:
    """Both builders draw record ids from counters that start together."""
    compiled_uids = itertools.count(1)
    reference_uids = itertools.count(1)
    _configure(lambda: f"uid-{next(compiled_uids)}")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(logger, "new_uid", lambda: f"uid-{next(reference_uids)}")
            yield
    finally:
        _configure(_REAL_NEW_UID)


def _configure(new_uid: Any) -> None:
    _attributes.configure_fast_attributes(
        logger._FAST_KEYS, logger._OUTCOMES, Outcome, validated_actions, logger.Actor, Resource, Change,
        logger.Actor(id="").type.value,
        (logger.MAX_ID_LEN, logger.MAX_TYPE_LEN, logger.MAX_REASON_LEN, logger.MAX_DEPTH), new_uid,
    )


@settings(max_examples=1500, deadline=None)
@given(call=calls)
def test_the_compiled_fast_path_answers_as_the_reference(call: dict[str, Any]) -> None:
    arguments = [call[name] for name in VALID]  # in the signature's order
    with same_uids():
        compiled = _attributes.fast_attributes(*arguments)
        reference = logger.python_fast_attributes(*arguments)
    assert compiled == reference
    if reference is not None:
        assert list(compiled[1]) == list(reference[1])  # the same order: the same bytes on the wire
        assert compiled[2] is reference[2]


def test_a_typical_call_takes_the_fast_path() -> None:
    """The property above would hold if both always declined: the common call must be built."""
    answer = _attributes.fast_attributes(
        KNOWN_ACTION, logger.Actor(id="alice", roles=("admin",)), ("document", "d-1"), Outcome.SUCCESS, {"n": 1},
        None, None, None, None, "acme", None, None, None, "req-1", None, None, None, 201, None, "root",
    )
    assert answer is not None
    uid, attributes, severity_number, severity_text = answer
    assert attributes["log.record.uid"] == uid and severity_text == severity_number.name == "INFO"
    assert attributes["user.roles"] == ["admin"] and attributes["audit.actor.impersonator.id"] == "root"
    assert attributes["audit.metadata"] == {"n": 1} and attributes["http.response.status_code"] == 201


def _base_call() -> dict[str, Any]:
    """A call the fast path takes, every argument that can be set set (in the signature's order)."""
    return {
        "action": KNOWN_ACTION, "actor": logger.Actor(id="alice", email="a@example.com", name="Alice", roles=("admin",)),
        "resource": ("document", "d-1"), "outcome": Outcome.SUCCESS, "metadata": {"n": 1, "ok": True},
        "changes": None, "reason": "because", "error_type": "E", "severity": None, "tenant": "acme",
        "client_address": "10.0.0.1", "user_agent": "curl/8", "session_id": "s-1", "request_id": "req-1",
        "http_method": "POST", "http_route": "/documents/{id}", "url_path": "/documents/d-1", "http_status_code": 201,
        "timestamp": None, "impersonator_id": "root",
    }


_ID, _TYPE, _REASON = logger.MAX_ID_LEN, logger.MAX_TYPE_LEN, logger.MAX_REASON_LEN
_PLAIN_FIELDS = ("error_type", "tenant", "client_address", "user_agent", "session_id", "request_id", "http_method",
                 "http_route", "url_path")
EDGE_CASES = [
    *((field, value) for field in _PLAIN_FIELDS for value in ("x" * _ID, "x" * (_ID + 1), Text("t"), 1, None)),
    *(("http_status_code", value) for value in (99, 100, 599, 600, True, 2**70, 200.0, None)),
    *(("resource", value) for value in (
        ("", "d-1"), ("x" * _TYPE, "d-1"), ("x" * (_TYPE + 1), "d-1"), (None, "d-1"), ("document", "x" * _ID),
        ("document", "x" * (_ID + 1)), ("document", 7), ("document", None), ("document",), ("a", "b", "c"),
        ["document", "d-1"], Resource("document", "d-1", "Q3"), _overlong_name(Resource("document", "d-1")), "document",
    )),
    *(("reason", value) for value in ("x" * _REASON, "x" * (_REASON + 1), Text("r"))),
    *(("metadata", value) for value in (
        {"n": 2**63 - 1}, {"n": 2**63}, {"n": -(2**63)}, {"n": -(2**63) - 1}, {"n": math.nan}, {"n": math.inf},
        {"n": 1.5}, {"n": [1]}, {"n": {"m": 1}}, {1: "one"}, {Text("k"): 1}, {"n": Text("v")}, {}, [("n", 1)],
        {"n": (1, "a")}, {"n": {"m": [{"k": None}]}}, {"n": [2**63]}, {"n": {"m": math.nan}}, {"n": {1: "one"}},
        {"n": {Text("k"): 1}}, {"n": [Text("v")]}, {"n": {"m": b"x"}}, {"n": [{1, 2}]},
        *(_nested(levels, innermost) for levels in (logger.MAX_DEPTH - 2, logger.MAX_DEPTH - 1, logger.MAX_DEPTH)
          for innermost in (1, [], {"a": 1})),
    )),
    *(("action", value) for value in ("never.seen", Text(KNOWN_ACTION), [KNOWN_ACTION])),
    *(("outcome", value) for value in ("success", "denied", Other.SUCCESS, Text("success"), "won")),
    *(("actor", value) for value in (
        None, "alice", "", "x" * _ID, "x" * (_ID + 1), Text("alice"), logger.Actor(id="bob", impersonator_id=""),
    )),
    *(("changes", value) for value in (
        {}, {"a": 1}, (), ("x",), {"a": Change("x", "y")}, {"a": {"old": 1}}, {"a": {}}, {"a": (1, [2])},
        {"a": [None, {"b": 2}]}, {"": Change(1, 2)}, {Text("a"): Change(1, 2)}, {1: Change(1, 2)},
        {"a": {"old": 1, "other": 2}}, {"a": {Text("old"): 1}}, {"a": (1, 2, 3)}, {"a": [1]}, {"a": OtherChange(1, 2)},
        {"a": Change(math.nan, 1)}, {"a": Change(1, {3, 4})}, {"a": (_nested(logger.MAX_DEPTH - 1, []), 1)},
        {"a": Change(1, 2), "b": 5}, OrderedDict(a=Change(1, 2)),
    )),
    *(("impersonator_id", value) for value in ("", None)),
    ("severity", 9),
    ("timestamp", 1),
]


@pytest.mark.parametrize(("field", "value"), EDGE_CASES, ids=[f"{field}-{index}" for index, (field, _) in enumerate(EDGE_CASES)])
def test_each_edge_gets_the_reference_answer(field: str, value: Any) -> None:
    call = {**_base_call(), field: value}
    with same_uids():
        compiled = _attributes.fast_attributes(*call.values())
        reference = logger.python_fast_attributes(*call.values())
    assert compiled == reference
    if reference is not None:
        assert list(compiled[1]) == list(reference[1])


def test_nested_plain_metadata_takes_the_fast_path_as_to_any_value_copies_it() -> None:
    """Plain nested metadata is copied (tuples as lists), not handed to the AuditEvent path; one level too deep is."""
    metadata = {"shared_with": {"id": "user-7", "roles": ("read", "comment")}, "sizes": [1, 2.5, None, True]}
    call = {**_base_call(), "metadata": metadata}
    answer = _attributes.fast_attributes(*call.values())
    assert answer is not None
    copied = answer[1]["audit.metadata"]
    assert copied == {"shared_with": {"id": "user-7", "roles": ["read", "comment"]}, "sizes": [1, 2.5, None, True]}
    assert copied == to_any_value(metadata)
    assert copied["shared_with"] is not metadata["shared_with"]
    deepest_taken = _nested(logger.MAX_DEPTH - 2, [])  # its innermost list is MAX_DEPTH - 1 levels down
    assert _attributes.fast_attributes(*{**call, "metadata": deepest_taken}.values()) is not None
    too_deep = _nested(logger.MAX_DEPTH - 1, [])
    assert _attributes.fast_attributes(*{**call, "metadata": too_deep}.values()) is None


def test_plain_changes_take_the_fast_path_as_event_to_attributes_writes_them() -> None:
    """Each form of a change with plain values is built in place (audit.changes between the status code and the
    metadata, as event_to_attributes orders them); a value to convert sends the call to the AuditEvent path."""
    changes = {
        "title": Change("Draft", "Final"), "pages": {"new": 4}, "tags": (("a",), ["a", "b"]), "owner": ["u-1", None],
    }
    call = {**_base_call(), "changes": changes}
    answer = _attributes.fast_attributes(*call.values())
    assert answer is not None
    attributes = answer[1]
    assert attributes["audit.changes"] == {
        "title": {"old": "Draft", "new": "Final"}, "pages": {"old": None, "new": 4},
        "tags": {"old": ["a"], "new": ["a", "b"]}, "owner": {"old": "u-1", "new": None},
    }
    keys = list(attributes)
    assert keys.index("audit.changes") == keys.index("http.response.status_code") + 1
    assert keys.index("audit.metadata") == keys.index("audit.changes") + 1
    assert _attributes.fast_attributes(*{**call, "changes": {"due": Change(None, date(2026, 1, 2))}}.values()) is None


def test_an_actor_given_by_its_id_takes_the_fast_path_as_the_actor_it_names() -> None:
    """A string actor gives the attributes of Actor(id=...), the ambient impersonator included, without the
    AuditEvent path; one past the id limit goes there, to be refused."""
    by_id = _attributes.fast_attributes(*{**_base_call(), "actor": "alice"}.values())
    as_actor = _attributes.fast_attributes(*{**_base_call(), "actor": logger.Actor(id="alice")}.values())
    assert by_id is not None and as_actor is not None
    assert {key: value for key, value in by_id[1].items() if key != "log.record.uid"} == {
        key: value for key, value in as_actor[1].items() if key != "log.record.uid"}
    assert by_id[1]["audit.actor.type"] == "user" and by_id[1]["audit.actor.impersonator.id"] == "root"
    assert _attributes.fast_attributes(*{**_base_call(), "actor": "x" * (logger.MAX_ID_LEN + 1)}.values()) is None
