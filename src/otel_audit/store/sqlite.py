"""SQLite storage (the embedded default): one file, WAL, a single writer and pooled readers.

Each batch is one IMMEDIATE transaction of multi-row INSERTs (up to 512 rows a statement). Sequence numbers are
assigned inside it, and rows skipped as duplicates (ON CONFLICT DO NOTHING) are found with one primary-key range
read, so ingest hooks get exactly the stored events.
"""

from __future__ import annotations

import functools
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .events import EventQuery, StoredEvent
from .storage import EVENT_COLUMNS, GroupCommit, Storage, event_row, shared_schema

# 512 rows of 22 values and the first seq: within SQLite's default limit of 32,766 bound variables.
MAX_ROWS_PER_STATEMENT = 512
_ROW_MARKS = ", ".join("?" * len(EVENT_COLUMNS))


@functools.lru_cache(maxsize=16)
def _insert_sql(rows: int) -> str:
    """INSERT of `rows` rows whose seq is ?1 + row index (batches are cut into power-of-two statements, so a
    handful of statement texts are prepared once and reused)."""
    values = ", ".join(f"(?1 + {index}, {_ROW_MARKS})" for index in range(rows))
    return (f"INSERT INTO events (seq, {', '.join(EVENT_COLUMNS)}) VALUES {values}"
            " ON CONFLICT (tenant_id, uid) DO NOTHING")

_SCHEMA = [
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        time_unix_nano INTEGER NOT NULL,
        observed_time_unix_nano INTEGER NOT NULL,
        received_time_unix_nano INTEGER NOT NULL,
        event_name TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        severity_number INTEGER NOT NULL,
        severity_text TEXT NOT NULL,
        actor_id TEXT,
        actor_type TEXT,
        resource_type TEXT,
        resource_id TEXT,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        attributes TEXT NOT NULL,
        resource TEXT NOT NULL,
        scope_name TEXT NOT NULL,
        scope_version TEXT NOT NULL,
        body TEXT NOT NULL,
        metadata_text TEXT NOT NULL
    )""",
    *shared_schema("INTEGER"),
]


CHECKPOINT_INTERVAL = 1.0
# Pages of a new database. Ingest writes about three pages per event at random places in the indexes (actor and
# resource ids), each a WAL frame at commit and again at the checkpoint: 2 KiB pages write half the bytes of the
# 4 KiB default (measured: +27% and +65% insert rate at 400,000 events; 8 KiB: -22%). A database keeps the page
# size it was created with.
PAGE_SIZE = 2048
_INDEX_BY_SELECTIVITY = (
    ("resource_id", "events_tenant_resource_id"),
    ("actor_id", "events_tenant_actor"),
    ("action", "events_tenant_action"),
    ("resource_type", "events_tenant_resource_type"),
    ("outcome", "events_tenant_outcome"),
)


class SQLiteStorage(Storage):
    """Events in a SQLite file (WAL, synchronous=FULL: a stored batch survives power loss)."""

    dialect = "sqlite"
    placeholder = "?"
    like_operator = "LIKE"

    def __init__(self, path: str, *, busy_timeout: float = 30.0) -> None:
        """`busy_timeout`: how long a statement waits for another process's write lock before it fails (the app
        then answers 503 with Retry-After)."""
        self.path = path
        self.busy_timeout = busy_timeout
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._write_lock = threading.Lock()
        self._group = GroupCommit(self._insert_group)
        self._writer = self._connect()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all = [self._writer]
        self._all_lock = threading.Lock()
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="otel-audit-sqlite-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database off the ingest path (PASSIVE: never blocks the writer)."""
        conn = self._connect()
        try:
            while not self._closed.wait(CHECKPOINT_INTERVAL):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL mode creates the file; no-op for an existing one
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _schema(self) -> list[str]:
        return list(_SCHEMA)

    def _index_hint(self, query: EventQuery, ordered: bool = True) -> str:
        """The index of the most selective equality filter; time order otherwise (also for action prefixes,
        which then stop after one page instead of sorting every matching row). SQLite has no statistics
        unless ANALYZE ran, and guessed wrong (resource_type over resource_id) in the benchmark."""
        for column, index in _INDEX_BY_SELECTIVITY:
            if getattr(query, column) is not None:
                return f" INDEXED BY {index}"
        return " INDEXED BY events_tenant_time" if ordered else ""

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect()
            with self._all_lock:
                self._all.append(conn)
        try:
            yield conn
        finally:
            self._readers.put(conn)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside BEGIN IMMEDIATE (SQLite has one writer at a time anyway)."""
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A reader connection (WAL lets reads run alongside the writer); each statement sees a consistent snapshot."""
        with self._reader() as conn:
            yield conn

    def insert_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Concurrent calls are written together (GroupCommit: one transaction and fsync for all of them)."""
        if not events:
            return []
        return self._group.insert(events)

    def _insert_group(self, events: list[StoredEvent]) -> list[StoredEvent]:
        """One transaction of multi-row INSERTs; each statement inserts its rows in one call into SQLite, which
        runs without the GIL, so other requests decode meanwhile."""
        unique: dict[tuple[str, str], StoredEvent] = {}
        for event in events:
            unique.setdefault((event.tenant_id, event.uid), event)
        batch = list(unique.values())
        statements: list[tuple[int, str, list[Any]]] = []
        offset, size = 0, MAX_ROWS_PER_STATEMENT
        while offset < len(batch):
            while size > len(batch) - offset:
                size //= 2
            params: list[Any] = [0]
            for event in batch[offset : offset + size]:
                params += event_row(event)
            statements.append((offset, _insert_sql(size), params))
            offset += size
        with self.transaction() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            first = (row[0] if row else 0) + 1
            for offset, sql, params in statements:
                params[0] = first + offset
                conn.execute(sql, params)
            stored = conn.execute(
                "SELECT seq FROM events WHERE seq >= ? AND seq < ? ORDER BY seq", (first, first + len(batch))
            ).fetchall()
        fresh = []
        for (seq,) in stored:
            event = batch[seq - first]
            event.seq = seq
            fresh.append(event)
        return fresh

    def close(self) -> None:
        self._closed.set()
        self._checkpointer.join(timeout=30)
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
