"""The sliding-window rule against a brute-force model of its definition (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit.store.alerts import find_firings


def model(times: list[int], threshold: int, window: int, cooldown: int) -> list[int]:
    """Fire at the first time T with `threshold` events in (T - window, T] after the last firing, T >= quiet."""
    fired: list[int] = []
    last, quiet = -1, -1
    for moment in sorted(set(times)):
        if moment <= last or moment < quiet:
            continue
        inside = [t for t in times if moment - window < t <= moment and t > last]
        if len(inside) >= threshold:
            fired.append(moment)
            last, quiet = moment, moment + cooldown
    return fired


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(st.integers(min_value=0, max_value=60), max_size=40),
    threshold=st.integers(min_value=1, max_value=6),
    window=st.integers(min_value=1, max_value=20),
    cooldown=st.integers(min_value=0, max_value=30),
)
def test_find_firings_matches_the_definition(times: list[int], threshold: int, window: int, cooldown: int) -> None:
    hits = sorted((moment, f"uid-{index}") for index, moment in enumerate(times))
    firings = find_firings(hits, threshold, window, -1, -1, cooldown)
    assert [end for end, _ in firings] == model(times, threshold, window, cooldown)
    for end, inside in firings:
        assert len(inside) >= threshold and all(end - window < moment <= end for moment, _ in inside)


def test_the_boundary_of_the_window_is_exclusive() -> None:
    hits = [(0, "a"), (100, "b"), (200, "c"), (300, "d")]
    assert find_firings(hits, 4, 300, -1, -1, 300) == []
    assert [end for end, _ in find_firings(hits, 4, 301, -1, -1, 301)] == [300]
