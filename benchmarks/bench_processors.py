"""Cost of the filter + redaction chain on a typical audit event (standalone: `python benchmarks/bench_processors.py`).

A typical event: 10 attributes (a unique uid and request id, users/resources/tenants drawn from realistic pools)
plus a 5-key `audit.metadata` map, as the SDK builds it (BoundedAttributes). Records are pre-built, then handed to
the default chain (filter with the default policy -> redaction with the default rules) ending in a no-op stage.
Prints the median ns/event over many repetitions; nothing is asserted (see docs/processors.md for the target).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordProcessor,
    ReadWriteLogRecord,
)

from otel_audit import semconv
from otel_audit.logger import new_uid
from otel_audit.processors.filter import AuditFilterProcessor, AuditPolicy
from otel_audit.processors.pseudonym import PseudonymConfig, PseudonymProcessor
from otel_audit.processors.redact import RedactionConfig, RedactionProcessor, Redactor


class Sink(LogRecordProcessor):
    """The end of the chain: does nothing, so only the processors are measured."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def typical_records(count: int, seed: int = 7) -> list[ReadWriteLogRecord]:
    """`count` SDK records of typical audit events, distinct ids per event."""
    rng = random.Random(seed)
    actions = ["document.read", "document.share", "user.login", "invoice.update", "project.delete"]
    start = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    records = []
    for index in range(count):
        user = rng.randrange(50)
        action = rng.choice(actions)
        attributes: dict[str, Any] = {
            semconv.AUDIT_ACTION: action,
            semconv.AUDIT_OUTCOME: "success" if rng.random() < 0.9 else "denied",
            semconv.LOG_RECORD_UID: new_uid(),
            semconv.AUDIT_ACTOR_TYPE: "user",
            semconv.USER_ID: f"user-{user:04d}",
            semconv.USER_EMAIL: f"person{user}@example.com",
            semconv.AUDIT_RESOURCE_TYPE: "document",
            semconv.AUDIT_RESOURCE_ID: f"doc-{rng.randrange(1000):05d}",
            semconv.AUDIT_TENANT_ID: f"tenant-{user % 7}",
            semconv.AUDIT_REQUEST_ID: f"req-{rng.getrandbits(64):016x}",
            semconv.AUDIT_METADATA: {
                "plan": rng.choice(["free", "pro", "enterprise"]),
                "items": rng.randrange(20),
                "source": rng.choice(["web-app", "mobile", "api"]),
                "client_version": rng.choice(["4.12.1", "4.13.0", "5.0.2"]),
                "requested_at": (start + _dt.timedelta(seconds=index * 1.7)).isoformat(),
            },
        }
        record = LogRecord(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO,
            attributes=attributes,
            event_name=semconv.event_name(action),
        )
        records.append(ReadWriteLogRecord(record))
    return records


def measure(
    chain: LogRecordProcessor, records: list[ReadWriteLogRecord], batch: int, clock: Callable[[], int]
) -> list[float]:
    """ns/event of each batch of `batch` records, on `clock`."""
    on_emit = chain.on_emit
    figures = []
    for offset in range(0, len(records) - batch + 1, batch):
        part = records[offset : offset + batch]
        begin = clock()
        for record in part:
            on_emit(record)
        figures.append((clock() - begin) / batch)
    return figures


def sdk_emit_reference(events: int, batch: int, clock: Callable[[], int]) -> float:
    """Median ns of the stock SDK Logger.emit of the same typical events into a no-op processor: the yardstick the
    processors are compared with (DESIGN.md quotes ~20 us for it on the reference machine)."""
    provider = LoggerProvider()
    provider.add_log_record_processor(Sink())
    logger = provider.get_logger("bench")
    records = typical_records(events)
    figures = []
    for offset in range(0, len(records) - batch + 1, batch):
        part = [
            (dict(record.log_record.attributes or {}), record.log_record.event_name)
            for record in records[offset : offset + batch]
        ]
        begin = clock()
        for attributes, name in part:
            logger.emit(attributes=attributes, event_name=name)
        figures.append((clock() - begin) / batch)
    provider.shutdown()
    return statistics.median(figures)


ADVERSARIAL = {
    "digits and spaces": "1 " * 2048,
    "digits and dashes": "4-" * 2048,
    "key:value pairs": "a:" * 2048,
    "sensitive key=": "password=" * 455,
    "IBAN-like groups": "AB12 " * 800,
    "phone-like groups": "+1 " * 1365,
    "email-like labels": "a@" + "a." * 2040 + "!",
}


def adversarial_costs(clock: Callable[[], int]) -> dict[str, float]:
    """Worst-case shaped 4 KiB values (with every detector on): ms to redact each, best of 3."""
    redactor = Redactor(RedactionConfig(detectors={"email": True, "phone": True}))
    costs = {}
    for name, text in ADVERSARIAL.items():
        best = float("inf")
        for _ in range(3):
            redactor._clean.clear()
            begin = clock()
            redactor.redact_text(text)
            best = min(best, (clock() - begin) / 1e6)
        costs[name] = best
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this thread's CPU time (less distorted on a machine shared with other work)",
    )
    args = parser.parse_args()
    clock = time.perf_counter_ns if args.clock == "wall" else time.thread_time_ns

    chains = {
        "filter only": AuditFilterProcessor(Sink(), AuditPolicy()),
        "filter + redaction": AuditFilterProcessor(RedactionProcessor(RedactionConfig(), Sink()), AuditPolicy()),
        "filter + redaction (+email/phone)": AuditFilterProcessor(
            RedactionProcessor(RedactionConfig(detectors={"email": True, "phone": True}), Sink()), AuditPolicy()
        ),
        "filter + redaction + pseudonyms": AuditFilterProcessor(
            RedactionProcessor(
                RedactionConfig(exempt_keys=(semconv.USER_EMAIL, semconv.USER_NAME)),
                PseudonymProcessor(PseudonymConfig(key=b"benchmark-pseudonym-key-0123456789"), Sink()),
            ),
            AuditPolicy(),
        ),
    }
    for name, chain in chains.items():
        medians = []
        for repetition in range(args.repeat):
            records = typical_records(args.events, seed=repetition)
            gc.collect()
            gc.disable()
            try:
                medians.append(statistics.median(measure(chain, records, args.batch, clock)))
            finally:
                gc.enable()
        print(
            f"{name:36s} median {statistics.median(medians):7.0f} ns/event ({args.clock})"
            f"  (per-repetition medians: {', '.join(f'{m:.0f}' for m in medians)})"
        )
    reference = sdk_emit_reference(min(args.events, 20_000), args.batch, clock)
    print(f"{'reference: stock SDK Logger.emit':36s} median {reference:7.0f} ns/event ({args.clock})")
    for name, milliseconds in adversarial_costs(clock).items():
        print(f"adversarial 4 KiB value, {name:22s} {milliseconds:7.2f} ms ({args.clock})")


if __name__ == "__main__":
    main()
