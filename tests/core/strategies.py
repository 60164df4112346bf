"""Hypothesis strategies shared by the core tests: ids, actions, actors, resources and attribute values."""

from __future__ import annotations

from hypothesis import strategies as st

from otel_audit import Actor, ActorType, Resource

ids = st.none() | st.text(min_size=1, max_size=30)
actions = st.from_regex(r"[a-z][a-z0-9_-]{0,10}(\.[a-z0-9][a-z0-9_-]{0,10}){1,3}", fullmatch=True)
plain_values = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
actors = st.builds(
    Actor,
    id=ids,
    type=st.sampled_from(list(ActorType)),
    email=ids,
    name=ids,
    roles=st.lists(st.text(min_size=1, max_size=8), max_size=3).map(tuple),
    impersonator_id=ids,
)
resources = st.builds(Resource, type=st.text(min_size=1, max_size=20), id=ids, name=ids)
