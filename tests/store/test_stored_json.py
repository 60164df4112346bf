"""Stored JSON text (attributes, resource, body) reads back exactly as the standard library reads it, whichever
decoder reads it (events.loads_stored tries orjson first). Its integers are OTLP's, which fit in 64 bits."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit.store.events import dumps, dumps_stored, loads_stored

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)


def same(left: Any, right: Any) -> bool:
    """Equal as data, NaN equal to NaN and int distinct from float."""
    if isinstance(left, float) and isinstance(right, float):
        return (math.isnan(left) and math.isnan(right)) or (left == right and math.copysign(1, left) == math.copysign(1, right))
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right))
    return bool(left == right)


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_stored_text_reads_back_as_json_loads_reads_it(value: Any) -> None:
    for text in (dumps(value), dumps_stored(value) if _encodable(value) else dumps(value)):
        assert same(loads_stored(text), json.loads(text))


def _encodable(value: Any) -> bool:
    try:
        dumps_stored(value)
    except UnicodeEncodeError:
        return False
    return True


def test_what_orjson_refuses_is_read_as_json_loads_reads_it() -> None:
    for text in ('{"a":NaN,"b":-Infinity}', '"\\ud800"', "1e400"):
        assert same(loads_stored(text), json.loads(text))
