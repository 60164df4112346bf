"""Delivery benchmarks, side by side with the stock OpenTelemetry SDK in the same run (medians of repetitions).

    python benchmarks/bench_delivery.py            # all figures
    python benchmarks/bench_delivery.py --quick    # fewer events, for a smoke run

Figures: emit cost (stock SDK Logger.emit + BatchLogRecordProcessor vs otel-audit `disk`), CPU per event from
emit to acknowledged OTLP/HTTP export, sustained export rate, a 200,000-event burst (lost events), and encoding
(SDK encoder vs the wire encoder). The receiver runs in a separate process so its decoding is not counted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from typing_extensions import Self

import otel_audit
from otel_audit import semconv
from otel_audit.config import AuditSettings
from otel_audit.delivery import DurableLogRecordProcessor
from otel_audit.delivery.encoder import encode_log_record
from otel_audit.logger import new_uid
from otel_audit.model import Actor, AuditEvent
from otel_audit.model import Resource as Target


def typical_event() -> AuditEvent:
    """10 attributes and a nested map: the shape of the DESIGN.md reference figures."""
    return AuditEvent(
        action="document.share",
        actor=Actor(id="user-42", email="ada@example.com", roles=("editor",)),
        resource=Target("document", "doc-1234"),
        tenant_id="acme",
        client_address="203.0.113.7",
        request_id="req-5f2c",
        metadata={"shared_with": {"id": "user-7", "permission": "read"}, "via": "api"},
    )


def _receiver_main(queue: Any, counted: Any, stop: Any) -> None:
    from otel_audit.testing.receiver import OTLPReceiver, Reply, _count

    def count_only(request: Any, headers: dict[str, str]) -> Reply:
        with counted.get_lock():
            counted.value += _count(request)
        return Reply()

    with OTLPReceiver() as receiver:
        receiver._accept = count_only  # keeping every decoded request would dominate memory in long runs
        queue.put(receiver.endpoint)
        stop.wait()


class Receiver:
    """An OTLP receiver in a child process, counting records."""

    def __enter__(self) -> Self:
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        self._stop = context.Event()
        self._counted = context.Value("q", 0)
        self._process = context.Process(target=_receiver_main, args=(queue, self._counted, self._stop), daemon=True)
        self._process.start()
        self.endpoint = queue.get(timeout=30)
        return self

    @property
    def count(self) -> int:
        return int(self._counted.value)

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.count >= count

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(5)


def stock_provider(endpoint: str, **batch: Any) -> tuple[LoggerProvider, Any]:
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint), **batch))
    return provider, provider.get_logger("bench", "1")


def durable_provider(endpoint: str, spool_dir: str, **settings: Any) -> tuple[LoggerProvider, Any]:
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    resolved = AuditSettings.resolve(endpoint=endpoint, spool_dir=spool_dir, **settings)
    provider.add_log_record_processor(DurableLogRecordProcessor(resolved))
    return provider, provider.get_logger("bench", "1")


def stock_record(event: AuditEvent) -> LogRecord:
    return LogRecord(
        timestamp=time.time_ns(),
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        attributes=semconv.event_to_attributes(event, new_uid()),
        event_name=semconv.event_name(event.action),
    )


def per_call_us(function: Any, count: int) -> float:
    """CPU time of the calling thread per call: what the caller pays, not disturbed by other processes or by the
    exporter thread (on a shared machine wall time mostly measures the neighbours)."""
    started = time.thread_time()
    for _ in range(count):
        function()
    return (time.thread_time() - started) / count * 1e6


def bench_emit(endpoint: str, count: int, repeat: int) -> dict[str, float]:
    """Caller-side cost of one audit event, stock vs disk mode, variants alternating within each repetition."""
    event = typical_event()
    runs: dict[str, list[float]] = {}

    def run(name: str, function: Any) -> None:
        runs.setdefault(name, []).append(per_call_us(function, count))

    def full_emit(audit: Any) -> Any:
        return lambda: audit.emit(
            "document.share",
            actor=Actor(id="user-42", email="ada@example.com", roles=("editor",)),
            resource=("document", "doc-1234"),
            tenant="acme",
            client_address="203.0.113.7",
            request_id="req-5f2c",
            metadata={"shared_with": {"id": "user-7", "permission": "read"}, "via": "api"},
        )

    with tempfile.TemporaryDirectory() as spool:
        for _ in range(repeat):
            provider, logger = stock_provider(endpoint, max_queue_size=count * 2)
            run("stock_sdk_emit_batch_us", lambda logger=logger: logger.emit(stock_record(event)))
            provider.shutdown()

            provider, logger = durable_provider(endpoint, spool)
            run("sdk_emit_into_durable_us", lambda logger=logger: logger.emit(stock_record(event)))
            provider.shutdown()

            otel_audit.configure(service_name="bench", endpoint=endpoint, spool_dir=spool, redaction=False)
            audit = otel_audit.get_audit_logger("bench")
            run("audit_emit_event_disk_us", lambda audit=audit: audit.emit_event(event))
            run("audit_emit_full_disk_us", full_emit(audit))
            otel_audit.shutdown()

            otel_audit.configure(service_name="bench", endpoint=endpoint, spool_dir=spool)
            audit = otel_audit.get_audit_logger("bench")
            run("audit_emit_event_disk_with_redaction_us", lambda audit=audit: audit.emit_event(event))
            otel_audit.shutdown()
    figures = {name: statistics.median(values) for name, values in runs.items()}
    stock = figures["stock_sdk_emit_batch_us"]
    for name in list(figures):
        if name != "stock_sdk_emit_batch_us":
            figures["ratio_" + name.removesuffix("_us")] = figures[name] / stock
    return figures


def bench_encode(count: int) -> dict[str, float]:
    event = typical_event()
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    logger = provider.get_logger("bench", "1")
    record = ReadWriteLogRecord(
        stock_record(event), resource=logger.resource, instrumentation_scope=logger.instrumentation_scope
    )
    sdk = statistics.median(per_call_us(lambda: encode_logs([record]).SerializeToString(), count // 10) for _ in range(5))
    wire = statistics.median(per_call_us(lambda: encode_log_record(record), count) for _ in range(5))
    return {"sdk_encode_us": sdk, "wire_encode_us": wire, "ratio_encode": wire / sdk}


def _emitters(name: str, endpoint: str, spool: str, count: int) -> tuple[Any, Any]:
    """(emit function, flush-and-close function) for the stock SDK path or otel-audit's `disk` path."""
    event = typical_event()
    if name == "stock":
        provider, logger = stock_provider(endpoint, max_queue_size=count * 2)
        return (lambda: logger.emit(stock_record(event))), lambda: (provider.force_flush(600_000), provider.shutdown())
    pipeline = otel_audit.configure(service_name="bench", endpoint=endpoint, spool_dir=spool, redaction=False)
    audit = otel_audit.get_audit_logger("bench")
    return (lambda: audit.emit_event(event)), lambda: (pipeline.force_flush(600_000), otel_audit.shutdown())


def bench_pipeline(receiver: Receiver, count: int) -> dict[str, float]:
    """CPU per event (all threads of this process) from emit to acknowledged export, and events per second end
    to end. Stock: SDK Logger.emit + BatchLogRecordProcessor (queue large enough to drop nothing) + OTLP/HTTP
    exporter; disk: AuditLogger.emit_event (redaction off: processors are not delivery)."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as spool:
        for name in ("stock", "disk"):
            base = receiver.count
            emit, finish = _emitters(name, receiver.endpoint, spool, count)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(count):
                emit()
            finish()
            receiver.wait_for(base + count, 600)
            results[f"{name}_cpu_us_per_event"] = (time.process_time() - cpu) / count * 1e6
            results[f"{name}_end_to_end_per_s"] = count / (time.perf_counter() - wall)
            results[f"{name}_received"] = receiver.count - base
    results["ratio_cpu_per_event"] = results["disk_cpu_us_per_event"] / results["stock_cpu_us_per_event"]
    results["ratio_end_to_end_rate"] = results["disk_end_to_end_per_s"] / results["stock_end_to_end_per_s"]
    return results


def bench_export_rate(receiver: Receiver, count: int) -> dict[str, float]:
    """Sustained export from one process with a backlog: stock = the SDK OTLP/HTTP exporter exporting ready
    batches of 512 in a loop (its ceiling: encode + send); disk = draining a spool of `count` records."""
    event = typical_event()
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    logger = provider.get_logger("bench", "1")
    batch = [
        ReadWriteLogRecord(stock_record(event), resource=logger.resource, instrumentation_scope=logger.instrumentation_scope)
        for _ in range(512)
    ]
    exporter = OTLPLogExporter(endpoint=receiver.endpoint)
    base, started = receiver.count, time.perf_counter()
    for _ in range(max(1, count // 512)):
        exporter.export(batch)
    receiver.wait_for(base + max(1, count // 512) * 512, 120)
    stock_rate = (receiver.count - base) / (time.perf_counter() - started)
    exporter.shutdown()
    with tempfile.TemporaryDirectory() as spool:
        otel_audit.configure(
            service_name="bench", endpoint="http://127.0.0.1:9/v1/logs", spool_dir=spool, redaction=False, timeout=0.2
        )
        audit = otel_audit.get_audit_logger("bench")
        for _ in range(count):
            audit.emit_event(event)
        otel_audit.shutdown()  # nothing listens on port 9: everything stays spooled
        base, started = receiver.count, time.perf_counter()
        pipeline = otel_audit.configure(service_name="bench", endpoint=receiver.endpoint, spool_dir=spool, redaction=False)
        receiver.wait_for(base + count, 300)
        disk_rate = (receiver.count - base) / (time.perf_counter() - started)
        pipeline.shutdown()
    return {"stock_export_per_s": stock_rate, "disk_drain_export_per_s": disk_rate, "ratio_export_rate": disk_rate / stock_rate}


def bench_burst(receiver: Receiver, count: int) -> dict[str, float]:
    """`count` events as fast as possible with default settings (stock: default batch queue): how many arrive."""
    results: dict[str, float] = {}
    event = typical_event()
    with tempfile.TemporaryDirectory() as spool:
        for name in ("stock", "disk"):
            base = receiver.count
            if name == "stock":
                provider, logger = stock_provider(receiver.endpoint)

                def emit(logger: Any = logger) -> None:
                    logger.emit(stock_record(event))

                def finish(provider: Any = provider) -> None:
                    provider.force_flush(600_000)
                    provider.shutdown()
            else:
                emit, finish = _emitters(name, receiver.endpoint, spool, count)
            for _ in range(count):
                emit()
            finish()
            receiver.wait_for(base + count, 120 if name == "disk" else 5)
            results[f"{name}_burst_lost"] = count - (receiver.count - base)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    emit_count, repeat = (2000, 3) if args.quick else (10000, 7)
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with Receiver() as receiver:
        figures.update(bench_emit(receiver.endpoint, emit_count, repeat))
        figures.update(bench_encode(emit_count))
        figures.update(bench_pipeline(receiver, 5000 if args.quick else 30000))
        figures.update(bench_export_rate(receiver, 5000 if args.quick else 30000))
        figures.update(bench_burst(receiver, 20000 if args.quick else 200000))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:40s} {value:12.3f}" if isinstance(value, float) else f"{key:40s} {value!s:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
