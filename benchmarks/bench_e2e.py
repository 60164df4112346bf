"""End to end, emit -> acknowledged OTLP/HTTP export: CPU per event, a burst as fast as possible, export rate.

One variant per process: `python -m benchmarks.bench_e2e --variant otel-audit --size quick`. The sink is a separate
process (benchmarks.harness sink) that decodes every request with opentelemetry-proto and counts the records, so
the CPU measured (getrusage of this process: the emitting thread plus exporter threads) is the pipeline's alone.

1. CPU per event: typical events emitted in chunks of 512 (the default batch size), the pipeline flushed after each
   chunk so nothing is dropped on either side; process CPU time / records the sink acknowledged.
2. Burst: N events emitted in a tight loop with default settings (stock: BatchLogRecordProcessor defaults, queue of
   2,048), then flushed (bounded); received vs emitted, and the export rate = received / (first emit -> flush done),
   i.e. the rate one process sustains while its exporter is saturated.
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from typing import Any

from benchmarks.bench_emit import (
    Emitter,
    OtelAuditEmitter,
    StockEmitter,
    typical_events,
)
from benchmarks.harness import (
    Benchmark,
    Figure,
    Ratio,
    Target,
    print_result,
    python_command,
    sink_process,
)

VARIANTS = ("otel-audit", "stock SDK")
CPU_EVENTS = {"smoke": 1_024, "quick": 5_120, "full": 51_200}
BURST_EVENTS = {"smoke": 5_000, "quick": 20_000, "full": 200_000}
FLUSH_TIMEOUT_S = {"smoke": 30, "quick": 60, "full": 180}
CHUNK = 512


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make(variant: str, endpoint: str, spool_dir: str) -> Emitter:
    """otel-audit with its defaults (`disk` delivery), or the stock SDK pipeline with its defaults."""
    if variant == "otel-audit":
        return OtelAuditEmitter(endpoint, "disk", spool_dir)
    if variant == "stock SDK":
        return StockEmitter(endpoint)
    raise SystemExit(f"--variant: unknown variant {variant!r} (one of: {', '.join(VARIANTS)})")


def measure_cpu(variant: str, size: str, endpoint: str, count: Any, spool_dir: str) -> dict[str, float]:
    """Phase 1: process CPU per acknowledged event, flushed every CHUNK events (nothing dropped on either side)."""
    total = CPU_EVENTS[size]
    events = typical_events(CHUNK + total)  # every event distinct (request ids are unique, as in production)
    emitter = make(variant, endpoint, spool_dir)
    try:
        for event in events[:CHUNK]:
            emitter.emit(event)
        emitter.flush()
        before_count = count()
        before_cpu, before_wall = cpu_seconds(), time.perf_counter()
        emit = emitter.emit
        emit_thread_ns = 0
        for start in range(CHUNK, CHUNK + total, CHUNK):
            chunk_started = time.thread_time_ns()
            for event in events[start : start + CHUNK]:
                emit(event)
            emit_thread_ns += time.thread_time_ns() - chunk_started
            emitter.flush()
        cpu, wall = cpu_seconds() - before_cpu, time.perf_counter() - before_wall
    finally:
        emitter.close()
    acknowledged = count() - before_count
    return {
        "emit_thread_cpu_us_per_event": emit_thread_ns / 1000 / total,
        "cpu_us_per_event": cpu / max(acknowledged, 1) * 1e6,
        "cpu_events_emitted": CPU_EVENTS[size],
        "cpu_events_acknowledged": acknowledged,
        "cpu_wall_s": wall,
    }


def measure_burst(variant: str, size: str, endpoint: str, count: Any, spool_dir: str) -> dict[str, float]:
    """Phase 2: BURST_EVENTS in a tight loop with default settings, then a bounded flush."""
    total = BURST_EVENTS[size]
    events = typical_events(total, seed=23)
    emitter = make(variant, endpoint, spool_dir)
    try:
        before_count = count()
        emit = emitter.emit
        started = time.perf_counter()
        for event in events:
            emit(event)
        emitted_at = time.perf_counter()
        drained = emitter.flush_within(FLUSH_TIMEOUT_S[size])
        done = time.perf_counter()
        received = count() - before_count
        counted_dropped = emitter.dropped() if isinstance(emitter, OtelAuditEmitter) else None
    finally:
        emitter.close()
    metrics = {
        "burst_emitted": total,
        "burst_received": received,
        "burst_loss_pct": 100.0 * (total - received) / total,
        "burst_drained": 1.0 if drained else 0.0,
        "emit_rate_per_s": total / (emitted_at - started),
        "export_rate_per_s": received / (done - started),
    }
    if counted_dropped is not None:
        metrics["burst_dropped_counted_by_otel_audit"] = counted_dropped
    return metrics


def measure(variant: str, size: str) -> dict[str, Any]:
    with sink_process() as sink, tempfile.TemporaryDirectory(prefix="bench-e2e-") as spool_dir:
        metrics = measure_cpu(variant, size, sink.endpoint, sink.count, f"{spool_dir}/cpu")
        metrics.update(measure_burst(variant, size, sink.endpoint, sink.count, f"{spool_dir}/burst"))
    return metrics


BENCHMARK = Benchmark(
    name="e2e",
    title="3-5. End to end: CPU per event, burst, export rate (OTLP/HTTP to a decoding sink on 127.0.0.1)",
    variants=VARIANTS,
    command=lambda variant, size: python_command("-m", "benchmarks.bench_e2e", "--variant", variant, "--size", size),
    figures=(
        Figure("otel-audit CPU per event", "otel-audit", "cpu_us_per_event", "us"),
        Figure("otel-audit emit, caller thread CPU per event", "otel-audit", "emit_thread_cpu_us_per_event", "us"),
        Figure("stock SDK emit, caller thread CPU per event", "stock SDK", "emit_thread_cpu_us_per_event", "us"),
        Figure("stock SDK CPU per event", "stock SDK", "cpu_us_per_event", "us"),
        Figure("otel-audit burst: events lost", "otel-audit", "burst_loss_pct", "%", Target("0", "<=", 0.0)),
        Figure("stock SDK burst: events lost", "stock SDK", "burst_loss_pct", "%"),
        Figure("burst size (events emitted)", "otel-audit", "burst_emitted", "events"),
        Figure("otel-audit burst: events received", "otel-audit", "burst_received", "events"),
        Figure("stock SDK burst: events received", "stock SDK", "burst_received", "events"),
        Figure("otel-audit sustained export rate", "otel-audit", "export_rate_per_s", "events/s"),
        Figure("stock SDK sustained export rate", "stock SDK", "export_rate_per_s", "events/s"),
        Figure("otel-audit emit rate during the burst", "otel-audit", "emit_rate_per_s", "events/s"),
        Figure("stock SDK emit rate during the burst", "stock SDK", "emit_rate_per_s", "events/s"),
    ),
    ratios=(
        Ratio("CPU per event, otel-audit / stock SDK", ("otel-audit", "cpu_us_per_event"),
              ("stock SDK", "cpu_us_per_event"), Target("<= 0.2x", "<=", 0.2)),
        Ratio("otel-audit emit (caller thread) / stock SDK emit + batch processor + export, per event",
              ("otel-audit", "emit_thread_cpu_us_per_event"), ("stock SDK", "cpu_us_per_event"),
              Target("<= 0.25x", "<=", 0.25)),
        Ratio("sustained export rate, otel-audit / stock SDK", ("otel-audit", "export_rate_per_s"),
              ("stock SDK", "export_rate_per_s"), Target(">= 5x", ">=", 5.0)),
    ),
    timeout=lambda size: {"smoke": 90.0, "quick": 150.0, "full": 400.0}[size],
    note="CPU per event: getrusage of the emitting process (all threads) / records the sink acknowledged, flushed every "
    "512 events so neither side drops; every event is distinct. Emit, caller thread: CPU of the emitting thread inside "
    "the emit calls only, compared with everything the stock pipeline spends per record (its emit, its batch processor "
    "and the export it runs), the second reading of issue 5's emit goal; figure 1 compares with the stock emit call "
    "alone. Burst: default settings on both sides, events emitted in a tight loop "
    "(quick: 20,000; full: 200,000), then a bounded flush; export rate = received / (first emit -> flush done).",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--size", default="quick", choices=tuple(CPU_EVENTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print_result(measure(args.variant, args.size))


if __name__ == "__main__":
    main()
