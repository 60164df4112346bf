"""The SQLite store's ingest journal: accepted batches, durable before ingest answers, indexed later in bulk.

Writing a batch into the indexed `events` table costs a few randomly placed index pages per event, and each
commit writes every page it touched (twice with the checkpoint): small commits write the same pages again and
again. The journal is a second SQLite file next to the database holding each accepted batch as one row, a
sequential append; the storage's merger moves journaled batches into `events` many at a time. The merged
position is stored in the main database in the same transaction as the events, so a batch is indexed exactly
once even when the process dies between the two files' commits.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# The journal's WAL file is cut back to this size whenever it starts over.
WAL_SIZE_LIMIT = 16 * 1024 * 1024
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL,"
    " events INTEGER NOT NULL, rows BLOB NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One accepted batch: its journal id, tenant and number of events (its rows: IngestJournal.rows)."""

    id: int
    tenant_id: str
    events: int


class MergeLock:
    """Held through a whole merge, announcements included, by one thread of one process of the store at a time
    (a re-entrant thread lock and an flock on `path`). A read that settles takes it too, so it also waits for
    another process's merge in flight until that process's listeners (the ingest hooks) have run."""

    def __init__(self, path: str, timeout: float) -> None:
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                self._lock_file()
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def _lock_file(self) -> None:
        """flock, waiting up to `timeout` (as SQLite's busy timeout does), then OperationalError (the app: 503)."""
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("another process of the store holds the merge lock") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def close(self) -> None:
        os.close(self._fd)


class IngestJournal:
    """Append-only batches in the SQLite file `path` (WAL, synchronous=FULL), shared by every process of a store."""

    def __init__(self, path: str, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        self._lock = threading.Lock()
        self.merge_lock = MergeLock(path + "-merge.lock", busy_timeout)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            # Debian's SQLite overwrites deleted content with zeros (SECURE_DELETE): releasing merged batches
            # wrote 16 MB of zeros per 16,384 events, 40-50 ms of each merge. FAST zeroes only inside B-tree
            # pages; the freed pages holding rows are reused by later batches. The events themselves live in
            # the database, whose deletes (retention) are still zeroed.
            self._conn.execute("PRAGMA secure_delete=FAST")
            self._conn.execute(_SCHEMA)

    def append(self, tenant_id: str, rows: Sequence[Sequence[Any]]) -> int:
        """Store one batch durably (committed and synced); its journal id."""
        blob = orjson.dumps(rows)
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO batches (tenant_id, events, rows) VALUES (?, ?, ?)", (tenant_id, len(rows), blob)
            )
            return int(cursor.lastrowid or 0)

    def last_id(self) -> int:
        """The id of the newest journaled batch (0 when none was ever journaled)."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
        return int(row[0]) if row else 0

    def continue_after(self, position: int) -> None:
        """Number the next batches above `position` (the database's merged position), whatever this file held."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('batches', ?)", (position,))
                elif row[0] < position:
                    self._conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'batches'", (position,))
            finally:
                self._conn.execute("COMMIT")

    def entries_after(self, position: int, max_events: int) -> list[JournalEntry]:
        """Batches with an id above `position`, oldest first, as many as fit in `max_events` (at least one).
        Their rows stay on disk: the process that journaled a batch still holds them (see `rows`)."""
        entries: list[JournalEntry] = []
        total = 0
        with self._lock:
            cursor = self._conn.execute("SELECT id, tenant_id, events FROM batches WHERE id > ? ORDER BY id", (position,))
            for entry_id, tenant_id, events in cursor:
                if entries and total + events > max_events:
                    break
                entries.append(JournalEntry(entry_id, tenant_id, events))
                total += events
            cursor.close()
        return entries

    def rows(self, entry_id: int) -> list[list[Any]]:
        """A journaled batch's event rows (EVENT_COLUMNS order), decoded; only the merge lock's holder releases
        batches, so one it was handed by entries_after is still here."""
        with self._lock:
            (blob,) = self._conn.execute("SELECT rows FROM batches WHERE id = ?", (entry_id,)).fetchone()
        rows: list[list[Any]] = orjson.loads(blob)
        return rows

    def release(self, up_to: int) -> None:
        """Forget the batches up to id `up_to` (merged into the database; their pages are reused by later ones)."""
        with self._lock:
            self._conn.execute("DELETE FROM batches WHERE id <= ?", (up_to,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        self.merge_lock.close()
