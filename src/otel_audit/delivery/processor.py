"""DurableLogRecordProcessor: the last stage of the chain, persisting each record before emit returns and exporting
it from a background thread until the receiver acknowledges it.

on_emit encodes the record once (OTLP protobuf bytes) and appends it to the spool (`disk`, `strict`) or a bounded
memory queue (`memory`). The exporter thread frames spooled bytes into ExportLogsServiceRequest bodies without
re-encoding, retries forever with exponential backoff and jitter (honouring Retry-After), and sends what the
receiver rejects as invalid to the dead-letter file. Nothing is released from the spool before that.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from .. import stats
from ..config import AuditSettings, ConfigurationError
from .deadletter import DeadLetterFile
from .encoder import ScopeDef, encode_log_record, frame_request, native_parts
from .errors import AuditDeliveryError
from .memory import MemoryQueue
from .sender import HttpSender, SendResult
from .spool import Spool, SpoolStage, SpoolWriter, write_failed


class PythonWakeCounter:
    """Counts queued records, calling `wake` every `every` of them (`_wire.WakeCounter` does the same in C)."""

    def __init__(self, every: int, wake: Callable[[], object]) -> None:
        self.every = every
        self.wake = wake
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.count >= self.every:
            self.count = 0
            self.wake()


try:  # compiled (optional, see _wire.c): counting a queued record costs no interpreter frame
    from ._wire import WakeCounter
except ImportError:
    WakeCounter = PythonWakeCounter  # type: ignore[assignment,misc]

_log = logging.getLogger("otel_audit.delivery")

# HTTP statuses that reject the records themselves: bisect the batch, dead-letter what is still refused alone.
RECORD_REJECTED = frozenset({400, 413, 422})
ORPHAN_SCAN_INTERVAL = 10.0
_RETRY_LOG_EVERY = 20


class Sender(Protocol):
    def send(self, body: bytes) -> SendResult: ...

    def close(self) -> None: ...


_processors: weakref.WeakSet[DurableLogRecordProcessor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for processor in list(_processors):
        processor._restart_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _encoded(log_record: ReadWriteLogRecord) -> bytes:
    """The record's OTLP bytes, or AuditDeliveryError naming why it cannot be encoded."""
    try:
        return encode_log_record(log_record)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AuditDeliveryError(f"cannot encode the record as OTLP: {exc}") from exc


class DurableLogRecordProcessor(LogRecordProcessor):
    """Durable OTLP/HTTP delivery for the `disk`, `strict` and `memory` modes (see docs/delivery.md)."""

    def __init__(
        self,
        settings: AuditSettings,
        *,
        sender: Sender | None = None,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        shutdown_timeout: float | None = None,
    ) -> None:
        self.settings = settings
        self.mode = settings.delivery
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.shutdown_timeout = settings.timeout if shutdown_timeout is None else shutdown_timeout
        self._source: Spool | MemoryQueue
        if self.mode == "memory":
            self._source = MemoryQueue(settings.max_queue_size)
        else:
            try:
                self._source = Spool(
                    settings.spool_dir,
                    max_bytes=settings.max_spool_bytes,
                    fsync="always" if self.mode == "strict" else "interval",
                    full_policy=settings.full_policy,
                    full_timeout=settings.full_timeout,
                )
            except OSError as exc:
                raise ConfigurationError(f"spool_dir: cannot use {settings.spool_dir!r} for the audit spool: {exc}") from exc
        self._append_log = getattr(self._source, "append_log", None)
        self._sender: Sender = sender or HttpSender(settings)
        self.dead_letters = DeadLetterFile(Path(settings.spool_dir) / "dead-letter.jsonl")
        self._max_batch = settings.max_batch_size
        self._scopes: dict[tuple[int, int], tuple[int, ScopeDef, Any, Any]] = {}
        self._scopes_lock = threading.Lock()
        self.exported = 0
        self.retried = 0
        # Count each queued record; every max_batch_size records, wake the exporter (it also wakes on its interval).
        self._appended = WakeCounter(self._max_batch, self._wake_exporter)
        self._after_full_batch = False
        self._inflight_since = 0
        self._stopping = False
        self._deadline = float("inf")
        self._shut_down = False
        self._start_worker()
        _processors.add(self)
        stats.STATS.register_source(self._counters)
        stats.register_metrics()

    # -- emit path -------------------------------------------------------------------------------------------

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """Encode once and persist; raises AuditDeliveryError when the record cannot be accepted."""
        scope = self._scopes.get((id(log_record.resource), id(log_record.instrumentation_scope)))
        if scope is None:
            scope = self._scope_entry(log_record.resource, log_record.instrumentation_scope)
        log = log_record.log_record
        emit_ns = log.observed_timestamp or time.time_ns()
        append_log = self._append_log
        try:
            # The compiled spool encodes and writes the usual record in one call; what it leaves (see
            # SpoolWriter.append_log) takes the reference path: encoder.py's bytes when it did not encode them.
            pending = None if append_log is None else append_log(scope[0], scope[1], log, emit_ns)
        except OSError as exc:
            raise write_failed(exc) from exc
        if pending is not True:
            self._source.append(scope[0], scope[1], pending if pending is not None else _encoded(log_record), emit_ns)
        self._appended()

    def _scope_entry(self, resource: Any, instrumentation_scope: Any) -> tuple[int, ScopeDef, Any, Any]:
        key = (id(resource), id(instrumentation_scope))
        with self._scopes_lock:
            entry = self._scopes.get(key)
            if entry is None:
                # The resource and scope objects are kept referenced so their ids cannot be reused.
                scope_def = ScopeDef.for_scope(resource, instrumentation_scope)
                entry = (len(self._scopes) + 1, scope_def, resource, instrumentation_scope)
                self._scopes[key] = entry
        return entry

    def direct_stage(self, logger: Any) -> Callable[..., bool] | None:
        """This stage of the chain's direct path (see AuditLogger._emit_record): the record, given by its fields,
        is encoded and queued exactly as on_emit would queue the log record holding them. In `disk` and `strict`
        mode a compiled stage (`_wire.SpoolStage`) encodes, frames and writes it in one call of the spool's
        `append_parts`; in `memory` mode the compiled encoder's bytes go to the queue. None without the compiled
        parts (no C compiler)."""
        scope_number, scope_def = self._scope_entry(logger.resource, logger.instrumentation_scope)[:2]
        append = self._source.append
        if SpoolStage is not None and isinstance(self._source, SpoolWriter):
            # The compiled spool's stage: append_parts, then Spool.append for what it leaves, then _appended.
            return SpoolStage(self._source, scope_number, scope_def, append, self._appended, write_failed)
        if native_parts is None or not isinstance(self._source, MemoryQueue):
            return None

        def queue_stage(
            timestamp: int, observed: int, severity_number: Any, severity_text: str, attributes: dict[str, Any],
            event_name: str, trace_id: int, span_id: int, trace_flags: int,
        ) -> bool:
            record = native_parts(
                timestamp, observed, severity_number, severity_text, attributes, event_name, trace_id, span_id,
                trace_flags,
            )
            if record is None:
                return False  # as above
            append(scope_number, scope_def, record, observed)
            self._appended()
            return True

        return queue_stage

    def _wake_exporter(self) -> None:
        self._wake.set()  # the exporter thread's event of the moment: a forked child makes its own

    # -- exporter thread ---------------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="otel-audit-exporter", daemon=True)
        self._worker.start()

    def _restart_after_fork(self) -> None:
        """A forked child exports its own records with a thread of its own (the parent's did not survive fork)."""
        self._scopes_lock = threading.Lock()
        self.dead_letters = DeadLetterFile(self.dead_letters.path)
        if isinstance(self._sender, HttpSender):
            # The parent's pooled connection (and its lock) must not be shared: the child dials its own.
            self._sender = HttpSender(self.settings)
        self.exported = self.retried = 0
        self._inflight_since = 0
        if not self._shut_down:
            self._start_worker()

    def _run(self) -> None:
        """The exporter loop: one batch in flight at a time, read from the spool's acknowledged position, so a
        batch that failed for any reason is simply read and sent again."""
        next_sync = next_scan = time.monotonic()
        while True:
            if self._stopping and (not self._source.has_pending() or time.monotonic() >= self._deadline):
                break
            try:
                if not self._export_next():
                    break
            except Exception:  # noqa: BLE001 - the exporter thread must outlive any single failure
                _log.exception("otel-audit: delivery error; the records stay spooled and are retried")
                self._inflight_since = 0
                if self._stopping or not self._pause(self.retry_max):
                    break  # at shutdown an unexpected error ends the drain; the spool keeps the records for the next start
            self._source.prepare_room()  # on every wake-up: the writer's room for what comes next
            now = time.monotonic()
            if now >= next_sync:
                next_sync = now + self.settings.flush_interval
                self._sync()
            if now >= next_scan and not self._stopping:
                next_scan = now + ORPHAN_SCAN_INTERVAL
                try:
                    self._source.adopt_orphans()
                except OSError:
                    _log.exception("otel-audit: cannot scan the spool directory for unfinished lanes")
        self._notify_progress()

    def _export_next(self) -> bool:
        """Send the next batch, or wait for records; False when the loop must end (shutdown)."""
        batch = self._source.read_batch(self._max_batch)
        if batch is None:
            self._notify_progress()
            if self._stopping:
                return False
            self._wait_for_records()
            return True
        full = len(batch.entries) >= self._max_batch
        if full:
            self._wake.clear()  # the wake-up these records caused is used up
        elif self._after_full_batch and not self._stopping and not self._wake.is_set():
            # What arrived while a full batch was out goes with the next one (at the next wake-up, a flush, or the
            # flush interval), not in a small request of its own: each request costs the exporter a fixed share.
            self._after_full_batch = False
            self._wait_for_records()
            return True
        self._inflight_since = batch.first_emit_ns
        if batch.entries and not self._deliver(batch.entries):
            return False  # shutting down and out of time: the batch stays in the spool
        self._source.ack(batch)
        self._inflight_since = 0
        self._notify_progress()
        self._after_full_batch = full
        if not full and not self._stopping:
            self._wait_for_records()
        return True

    def _wait_for_records(self) -> None:
        """Sleep until on_emit has a full batch's worth, a flush or shutdown wakes the thread, or flush_interval."""
        self._wake.wait(self.settings.flush_interval)
        self._wake.clear()

    def _sync(self) -> None:
        try:
            self._source.sync()
        except OSError:
            _log.exception("otel-audit: fsync of the spool failed")

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _deliver(self, entries: Sequence[tuple[ScopeDef, bytes]]) -> bool:
        """Send until acknowledged or dead-lettered; False only when shutdown's time ran out first."""
        body = frame_request(entries)
        attempt = 0
        while True:
            result = self._sender.send(body)
            status = result.status
            if 200 <= status < 300:
                if result.rejected:
                    reason = f"partial_success: {result.message or 'no message'}"
                    self.dead_letters.write(entries, reason=reason, status=status, rejected=result.rejected)
                self.exported += len(entries) - min(result.rejected, len(entries))
                return True
            if status in RECORD_REJECTED:
                if len(entries) > 1:
                    middle = len(entries) // 2
                    return self._deliver(entries[:middle]) and self._deliver(entries[middle:])
                self.dead_letters.write(entries, reason=result.message or f"HTTP {status}", status=status)
                return True
            self.retried += 1
            if attempt % _RETRY_LOG_EVERY == 0:
                _log.warning(
                    "otel-audit: export to %s failed (%s); retrying, records stay in the spool",
                    getattr(self._sender, "endpoint", "the receiver"),
                    f"HTTP {status}: {result.message}" if status else result.message,
                )
            delay = result.retry_after if result.retry_after is not None and status in (429, 503) else None
            if delay is None:
                delay = min(self.retry_max, self.retry_initial * 2**min(attempt, 30)) * random.uniform(0.5, 1.0)
            attempt += 1
            if self._stopping and self.mode != "memory":
                return False  # the spool keeps the batch for the next start; don't hold up exit
            if not self._pause(delay):
                return False

    def _pause(self, delay: float) -> bool:
        """Sleep before a retry; False when shutdown's deadline comes first."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return False
        self._stop.wait(min(delay, remaining))
        return time.monotonic() < self._deadline

    # -- LogRecordProcessor lifecycle --------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until everything emitted so far was acknowledged (or dead-lettered); False on timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        while self._source.has_pending():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._worker.is_alive():
                return False
            self._wake.set()
            with self._progress:
                self._progress.wait(min(remaining, 0.05))
        return True

    def shutdown(self) -> None:
        """Flush for at most `shutdown_timeout` seconds, then stop. In `disk`/`strict` mode whatever is not
        acknowledged stays in the spool and is sent by the next process to start; in `memory` mode it is counted
        as dropped."""
        if self._shut_down:
            return
        self._shut_down = True
        self._deadline = time.monotonic() + self.shutdown_timeout
        self._stopping = True
        self._wake.set()
        if self.mode != "memory":
            self._source.close()  # no new appends; the worker still drains what is there
            self._stop.set()  # a retry pause ends now: what the receiver has not taken stays spooled
        self._worker.join(self.shutdown_timeout + 1.0)
        self._stop.set()
        self._worker.join(1.0)
        if isinstance(self._source, MemoryQueue):
            self._source.drop_pending("memory delivery shut down before the receiver acknowledged them")
        self._sender.close()
        stats.STATS.retire_source(self._counters)
        stats.STATS.retire_source(self._source._counters)
        if isinstance(self._source, Spool):
            self._source.release()

    def _counters(self) -> dict[str, float]:
        age = (time.time_ns() - self._inflight_since) / 1e9 if self._inflight_since else 0.0
        return {"exported": self.exported, "retried": self.retried, "oldest_unexported_age": age}
