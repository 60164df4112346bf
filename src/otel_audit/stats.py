"""Delivery counters every stage can report into: emitted, exported, retried, dead-lettered, dropped, errors.

A neutral module (no stage imports another through it) so that instrumentation, processors and delivery can all
make their failures observable; `otel_audit.delivery_stats()` reads it, and `register_metrics()` publishes the same
numbers through the OpenTelemetry metrics API (observable counters and gauges, read only when collected).

Hot paths keep plain integers on their own objects and register them as a *source*; a source that goes away is
retired, its final counts folded into the process totals so the counters stay monotonic.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

_log = logging.getLogger("otel_audit.delivery")

COUNTERS = (
    "emitted",
    "exported",
    "retried",
    "dead_lettered",
    "dropped",
    "rejected_full",
    "corrupt_bytes",
    "instrumentation_errors",
    "processor_errors",
)
GAUGES = ("spool_bytes", "oldest_unexported_age")
LOSS_WARNING_INTERVAL = 10.0

Source = Callable[[], dict[str, float]]


class DeliveryStats:
    """Thread-safe monotonic counters plus gauges, some of them read from registered sources."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._gauges: dict[str, float] = {}
        self._sources: dict[int, weakref.WeakMethod[Source] | Callable[[], Source | None]] = {}
        self._last_warning = 0.0

    def increment(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def register_source(self, source: Source) -> None:
        """Read `source()` (counters and gauges) on every snapshot while its owner lives (bound methods are weak)."""
        reference: Any = weakref.WeakMethod(source) if hasattr(source, "__self__") else (lambda: source)
        with self._lock:
            self._sources[id(source.__self__) if hasattr(source, "__self__") else id(source)] = reference

    def retire_source(self, source: Source) -> None:
        """Fold a source's final counters into the totals and stop reading it (its gauges end with it)."""
        key = id(source.__self__) if hasattr(source, "__self__") else id(source)
        values = source()
        with self._lock:
            if self._sources.pop(key, None) is None:
                return
            for name, value in values.items():
                if name not in GAUGES:
                    self._counters[name] += int(value)

    def _live_sources(self) -> Iterable[Source]:
        with self._lock:
            references = list(self._sources.items())
        for key, reference in references:
            source = reference()
            if source is None:
                with self._lock:
                    self._sources.pop(key, None)
                continue
            yield source

    def snapshot(self) -> dict[str, float]:
        """All counters (zero when never incremented) and gauges, as one dict."""
        contributions = [source() for source in self._live_sources()]
        with self._lock:
            values: dict[str, float] = {name: self._counters.get(name, 0) for name in COUNTERS}
            values.update({name: 0 for name in GAUGES})
            values.update(self._counters)
            values.update(self._gauges)
        for contribution in contributions:
            for name, value in contribution.items():
                if name == "oldest_unexported_age":
                    values[name] = max(values[name], value)
                else:
                    values[name] = values.get(name, 0) + value
        return values

    def report_loss(self, name: str, amount: int, reason: str) -> None:
        """Count records dropped, dead-lettered or corrupted, and say so at WARNING (at most every 10 s)."""
        now = time.monotonic()
        with self._lock:
            self._counters[name] += amount
            warn = now - self._last_warning >= LOSS_WARNING_INTERVAL or self._last_warning == 0.0
            if warn:
                self._last_warning = now
        if warn:
            totals = self.snapshot()
            _log.warning(
                "otel-audit: %d audit record(s) %s: %s (totals: dropped=%d dead_lettered=%d corrupt_bytes=%d)",
                amount,
                name.replace("_", "-"),
                reason,
                totals["dropped"],
                totals["dead_lettered"],
                totals["corrupt_bytes"],
            )

    def _after_fork_in_child(self) -> None:
        """A child starts with fresh totals (its parent reports its own) and an unlocked lock."""
        self._lock = threading.Lock()
        self._counters = Counter()
        self._gauges = {}
        self._last_warning = 0.0


STATS = DeliveryStats()
os.register_at_fork(after_in_child=STATS._after_fork_in_child)


def delivery_stats() -> dict[str, float]:
    """Current delivery counters of this process."""
    return STATS.snapshot()


def report_loss(name: str, amount: int, reason: str) -> None:
    """Module-level shortcut for STATS.report_loss."""
    STATS.report_loss(name, amount, reason)


_metrics_registered: set[int] = set()


def register_metrics(meter_provider: Any = None) -> None:
    """Publish the counters and gauges as OTel observable instruments (once per meter provider).

    Names are `otel_audit.delivery.<counter>` ({record}; corrupt_bytes in By), `otel_audit.delivery.spool_bytes`
    (By) and `otel_audit.delivery.oldest_unexported_age` (s). Without a provider the global one is used, so the
    instruments start reporting when the application installs its MeterProvider.
    """
    from opentelemetry import metrics

    key = id(meter_provider)
    if key in _metrics_registered:
        return
    _metrics_registered.add(key)
    meter = metrics.get_meter("otel_audit", meter_provider=meter_provider)

    def observe(name: str) -> Callable[[Any], list[metrics.Observation]]:
        return lambda options: [metrics.Observation(STATS.snapshot()[name])]

    for name in COUNTERS:
        unit = "By" if name == "corrupt_bytes" else "{record}"
        meter.create_observable_counter(f"otel_audit.delivery.{name}", [observe(name)], unit=unit)
    meter.create_observable_gauge("otel_audit.delivery.spool_bytes", [observe("spool_bytes")], unit="By")
    meter.create_observable_gauge(
        "otel_audit.delivery.oldest_unexported_age", [observe("oldest_unexported_age")], unit="s"
    )
