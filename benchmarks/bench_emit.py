"""Emit cost per call of a typical audit event: otel-audit (memory, disk, strict) vs stock SDK vs stdlib logging.

One variant per process: `python -m benchmarks.bench_emit --variant "stock SDK" --size quick`. The typical event is
10 attributes plus a 5-key `audit.metadata` map, the same values on every side. Calls are timed in chunks with the
pipeline flushed (untimed) between chunks, so the figure is the cost the caller pays per call; the export work that
follows is charged in bench_e2e's CPU per event. Each side exports to a real OTLP/HTTP sink in another process.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import (
    Benchmark,
    Figure,
    Ratio,
    Target,
    print_result,
    python_command,
    sink_process,
)

VARIANTS = ("otel-audit memory", "otel-audit disk", "otel-audit strict", "stock SDK", "stdlib logging")
# (timed chunks, calls per chunk): strict fsyncs every call, so it gets fewer.
CHUNKS = {"smoke": (3, 20), "quick": (10, 200), "full": (150, 200)}
STRICT_CHUNKS = {"smoke": (2, 10), "quick": (8, 50), "full": (40, 50)}
ACTION = "document.share"
EVENT_NAME = "audit.document.share"


@dataclass(frozen=True)
class TypicalEvent:
    """The inputs of one typical event, drawn from realistic pools (values vary between events)."""

    user_id: str
    email: str
    document_id: str
    tenant: str
    request_id: str
    plan: str
    items: int
    source: str
    client_version: str
    requested_at: str


def typical_events(count: int, seed: int = 11) -> list[TypicalEvent]:
    """`count` typical events: 50 users, 1,000 documents, 7 tenants, a distinct request id each."""
    rng = random.Random(seed)
    events = []
    for index in range(count):
        user = rng.randrange(50)
        events.append(
            TypicalEvent(
                user_id=f"user-{user:04d}",
                email=f"person{user}@example.com",
                document_id=f"doc-{rng.randrange(1000):05d}",
                tenant=f"tenant-{user % 7}",
                request_id=f"req-{rng.getrandbits(64):016x}",
                plan=rng.choice(("free", "pro", "enterprise")),
                items=rng.randrange(20),
                source=rng.choice(("web-app", "mobile", "api")),
                client_version=rng.choice(("4.12.1", "4.13.0", "5.0.2")),
                requested_at=f"2026-01-01T00:{index // 60 % 60:02d}:{index % 60:02d}+00:00",
            )
        )
    return events


def metadata_of(event: TypicalEvent) -> dict[str, Any]:
    return {
        "plan": event.plan,
        "items": event.items,
        "source": event.source,
        "client_version": event.client_version,
        "requested_at": event.requested_at,
    }


class Emitter:
    """One side of the comparison: `emit(event)` in the measured loop, `flush()` between chunks, `close()`."""

    emit: Callable[[TypicalEvent], Any]

    def flush(self) -> None:
        """Export everything emitted so far (untimed); raises if that takes more than a minute."""
        if not self.flush_within(60.0):
            raise RuntimeError(f"{type(self).__name__} did not flush within 60 s")

    def flush_within(self, seconds: float) -> bool:
        """Export everything emitted so far; False when records were still pending after `seconds`."""
        return True

    def close(self) -> None:
        """Flush and stop."""

    def dropped(self) -> int:
        """Records the pipeline itself counted as dropped (the stock SDK keeps no such count)."""
        return 0


class OtelAuditEmitter(Emitter):
    """otel-audit through configure() with its defaults (filter + redaction + delivery in `mode`)."""

    def __init__(self, endpoint: str, mode: str, spool_dir: str) -> None:
        import otel_audit
        from otel_audit import Actor

        self._otel_audit = otel_audit
        self.pipeline = otel_audit.configure(
            service_name="bench", endpoint=endpoint, delivery=mode, spool_dir=spool_dir
        )
        audit = otel_audit.get_audit_logger("bench")
        actors: dict[str, Actor] = {}

        def emit(event: TypicalEvent) -> Any:
            actor = actors.get(event.user_id)
            if actor is None:
                actor = actors[event.user_id] = Actor(id=event.user_id, email=event.email)
            return audit.emit(
                ACTION,
                actor=actor,
                resource=("document", event.document_id),
                tenant=event.tenant,
                request_id=event.request_id,
                metadata=metadata_of(event),
            )

        self.emit = emit

    def flush_within(self, seconds: float) -> bool:
        return bool(self.pipeline.force_flush(int(seconds * 1000)))

    def close(self) -> None:
        self._otel_audit.shutdown()

    def dropped(self) -> int:
        from otel_audit.stats import delivery_stats

        return int(delivery_stats().get("dropped", 0))


class StockEmitter(Emitter):
    """The stock OpenTelemetry SDK: Logger.emit + BatchLogRecordProcessor (defaults) + OTLPLogExporter over HTTP.

    The caller builds the same attributes otel-audit sends (including a unique id), as an application using the
    SDK directly for audit records would.
    """

    def __init__(self, endpoint: str) -> None:
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        from otel_audit import semconv
        from otel_audit.logger import new_uid

        self.provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
        self.provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint)))
        logger = self.provider.get_logger("bench", "0.1.0")
        info = SeverityNumber.INFO
        time_ns = time.time_ns

        def emit(event: TypicalEvent) -> None:
            logger.emit(
                timestamp=time_ns(),
                severity_number=info,
                severity_text="INFO",
                event_name=EVENT_NAME,
                attributes={
                    semconv.AUDIT_ACTION: ACTION,
                    semconv.AUDIT_OUTCOME: "success",
                    semconv.LOG_RECORD_UID: new_uid(),
                    semconv.AUDIT_ACTOR_TYPE: "user",
                    semconv.USER_ID: event.user_id,
                    semconv.USER_EMAIL: event.email,
                    semconv.AUDIT_RESOURCE_TYPE: "document",
                    semconv.AUDIT_RESOURCE_ID: event.document_id,
                    semconv.AUDIT_TENANT_ID: event.tenant,
                    semconv.AUDIT_REQUEST_ID: event.request_id,
                    semconv.AUDIT_METADATA: metadata_of(event),
                },
            )

        self.emit = emit

    def flush_within(self, seconds: float) -> bool:
        return bool(self.provider.force_flush(int(seconds * 1000)))

    def close(self) -> None:
        self.provider.shutdown()


class StdlibEmitter(Emitter):
    """stdlib logging: logger.info with the same attributes as `extra`, formatted by a handler to /dev/null."""

    def __init__(self) -> None:
        from otel_audit import semconv
        from otel_audit.logger import new_uid

        self._stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        handler = logging.StreamHandler(self._stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger = logging.getLogger("bench.stdlib")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        info = logger.info

        def emit(event: TypicalEvent) -> None:
            info(
                EVENT_NAME,
                extra={
                    semconv.AUDIT_ACTION: ACTION,
                    semconv.AUDIT_OUTCOME: "success",
                    semconv.LOG_RECORD_UID: new_uid(),
                    semconv.AUDIT_ACTOR_TYPE: "user",
                    semconv.USER_ID: event.user_id,
                    semconv.USER_EMAIL: event.email,
                    semconv.AUDIT_RESOURCE_TYPE: "document",
                    semconv.AUDIT_RESOURCE_ID: event.document_id,
                    semconv.AUDIT_TENANT_ID: event.tenant,
                    semconv.AUDIT_REQUEST_ID: event.request_id,
                    semconv.AUDIT_METADATA: metadata_of(event),
                },
            )

        self.emit = emit

    def close(self) -> None:
        self._stream.close()


def make_emitter(variant: str, endpoint: str, spool_dir: str) -> Emitter:
    """The emitter of `variant` (one of VARIANTS)."""
    if variant.startswith("otel-audit "):
        return OtelAuditEmitter(endpoint, variant.removeprefix("otel-audit "), spool_dir)
    if variant == "stock SDK":
        return StockEmitter(endpoint)
    if variant == "stdlib logging":
        return StdlibEmitter()
    raise SystemExit(f"--variant: unknown variant {variant!r} (one of: {', '.join(VARIANTS)})")


def time_chunks(
    emitter: Emitter, events: list[TypicalEvent], chunks: int, per_chunk: int
) -> tuple[list[float], list[float]]:
    """Microseconds per call of each timed chunk, by the wall clock and by the calling thread's CPU clock; the
    pipeline is flushed (untimed) after every chunk."""
    emit = emitter.emit
    wall, cpu = [], []
    for chunk in range(chunks):
        part = events[chunk * per_chunk : (chunk + 1) * per_chunk]
        gc.collect()
        begin_wall, begin_cpu = time.perf_counter_ns(), time.thread_time_ns()
        for event in part:
            emit(event)
        cpu.append((time.thread_time_ns() - begin_cpu) / per_chunk / 1000)
        wall.append((time.perf_counter_ns() - begin_wall) / per_chunk / 1000)
        emitter.flush()
    return wall, cpu


def measure(variant: str, size: str) -> dict[str, Any]:
    """Emit cost of `variant`: median of per-chunk microseconds per call (wall and thread CPU), after a warm-up."""
    chunks, per_chunk = (STRICT_CHUNKS if variant == "otel-audit strict" else CHUNKS)[size]
    events = typical_events((chunks + 1) * per_chunk)
    with ExitStack() as stack:
        spool_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-emit-"))
        sink = None if variant == "stdlib logging" else stack.enter_context(sink_process())
        emitter = make_emitter(variant, sink.endpoint if sink else "", spool_dir)
        try:
            time_chunks(emitter, events[:per_chunk], 1, per_chunk)
            wall, cpu = time_chunks(emitter, events[per_chunk:], chunks, per_chunk)
            dropped = emitter.dropped()
        finally:
            emitter.close()
        metrics = {
            "us_per_call": statistics.median(wall),
            "us_per_call_min_chunk": min(wall),
            "cpu_us_per_call": statistics.median(cpu),
            "calls": chunks * per_chunk,
            "emitted": len(events),
            "dropped": dropped,
        }
        if sink is not None:
            metrics["received"] = sink.count()
    return metrics


BENCHMARK = Benchmark(
    name="emit",
    title="1. Emit cost per call, typical event (10 attributes + 5-key metadata map)",
    variants=VARIANTS,
    command=lambda variant, size: python_command("-m", "benchmarks.bench_emit", "--variant", variant, "--size", size),
    figures=tuple(Figure(f"{variant} emit", variant, "us_per_call", "us/call") for variant in VARIANTS)
    + tuple(Figure(f"{variant} emit, caller thread CPU", variant, "cpu_us_per_call", "us/call") for variant in VARIANTS),
    ratios=(
        Ratio("otel-audit disk (default) / stock SDK emit", ("otel-audit disk", "us_per_call"),
              ("stock SDK", "us_per_call"), Target("<= 0.25x", "<=", 0.25)),
        Ratio("otel-audit disk (default) / stock SDK emit, caller thread CPU", ("otel-audit disk", "cpu_us_per_call"),
              ("stock SDK", "cpu_us_per_call"), Target("<= 0.25x", "<=", 0.25)),
        Ratio("otel-audit memory / stock SDK emit", ("otel-audit memory", "us_per_call"), ("stock SDK", "us_per_call")),
        Ratio("otel-audit strict / stock SDK emit", ("otel-audit strict", "us_per_call"), ("stock SDK", "us_per_call")),
        Ratio("stock SDK / stdlib logging emit", ("stock SDK", "us_per_call"), ("stdlib logging", "us_per_call")),
    ),
    timeout=lambda size: {"smoke": 60.0, "quick": 60.0, "full": 300.0}[size],
    note="Caller-side cost: calls timed in chunks of 200 (strict: 50), the pipeline flushed untimed between chunks; "
    "otel-audit runs its default chain (filter + redaction) before delivery. Export work is in figure 3. The caller "
    "thread's CPU time is less distorted by a shared machine; it leaves out waits (strict mode's fsync).",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--size", default="quick", choices=tuple(CHUNKS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print_result(measure(args.variant, args.size))


if __name__ == "__main__":
    main()
