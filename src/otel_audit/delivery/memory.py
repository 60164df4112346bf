"""The `memory` delivery mode: a bounded in-process queue of encoded records that never blocks the caller.

When it is full the new record is dropped and counted (`dropped`), with a WARNING giving the counts; nothing
survives the process. Meant for tests and development, where losing events is acceptable but must be visible.
"""

from __future__ import annotations

import threading
from collections import deque

from .. import stats
from .encoder import ScopeDef
from .spool import Batch


class MemoryQueue:
    """A bounded FIFO with the spool's reader interface (read_batch / ack)."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self.emitted = 0
        self.dropped = 0
        self._items: deque[tuple[ScopeDef, bytes, int]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        stats.STATS.register_source(self._counters)

    def append(self, scope_number: int, scope: ScopeDef, record: bytes, emit_ns: int) -> None:
        """Queue one record, or drop and count it when the queue is full (never blocks, never raises)."""
        with self._lock:
            if len(self._items) >= self.max_records:
                self.dropped += 1
                full = True
            else:
                self._items.append((scope, record, emit_ns))
                self._bytes += len(record)
                self.emitted += 1
                full = False
        if full:
            stats.report_loss("dropped", 1, f"memory delivery queue full (max_queue_size={self.max_records})")

    def read_batch(self, max_records: int, max_bytes: int = 4 << 20) -> Batch | None:
        with self._lock:
            if not self._items:
                return None
            entries: list[tuple[ScopeDef, bytes]] = []
            size = 0
            for scope, record, emitted_ns in self._items:
                if len(entries) >= max_records or (entries and size + len(record) > max_bytes):
                    break
                entries.append((scope, record))
                size += len(record)
            return Batch(entries=entries, first_emit_ns=self._items[0][2], memory_count=len(entries), end=size)

    def ack(self, batch: Batch) -> None:
        with self._lock:
            for _ in range(batch.memory_count):
                self._items.popleft()
            self._bytes -= batch.end

    def drop_pending(self, reason: str) -> int:
        """Count everything still queued as dropped (shutdown ran out of time); returns how many."""
        with self._lock:
            count = len(self._items)
            self._items.clear()
            self._bytes = 0
            self.dropped += count
        if count:
            stats.report_loss("dropped", count, reason)
        return count

    def has_pending(self) -> bool:
        return bool(self._items)

    def pending_bytes(self) -> int:
        return self._bytes

    def sync(self) -> None:
        """Nothing to make durable in memory."""

    def prepare_room(self) -> None:
        """Nothing to allocate ahead in memory."""

    def adopt_orphans(self) -> int:
        return 0

    def close(self) -> None:
        """Nothing to release; drop_pending() accounts for what was left."""

    def _counters(self) -> dict[str, float]:
        return {"emitted": self.emitted, "spool_bytes": self._bytes}
