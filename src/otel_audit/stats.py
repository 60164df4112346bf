"""Delivery counters every stage can report into: emitted, exported, retried, dead-lettered, dropped, errors.

A neutral module (no stage imports another through it) so that instrumentation, processors and delivery can all
make their failures observable; `otel_audit.delivery_stats()` reads it.
"""

from __future__ import annotations

import threading
from collections import Counter

COUNTERS = (
    "emitted",
    "exported",
    "retried",
    "dead_lettered",
    "dropped",
    "instrumentation_errors",
    "processor_errors",
)


class DeliveryStats:
    """Thread-safe monotonic counters plus gauges set by the delivery stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._gauges: dict[str, float] = {}

    def increment(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def snapshot(self) -> dict[str, float]:
        """All counters (zero when never incremented) and gauges, as one dict."""
        with self._lock:
            values: dict[str, float] = {name: self._counters.get(name, 0) for name in COUNTERS}
            values.update(self._counters)
            values.update(self._gauges)
            return values


STATS = DeliveryStats()


def delivery_stats() -> dict[str, float]:
    """Current delivery counters of this process."""
    return STATS.snapshot()
