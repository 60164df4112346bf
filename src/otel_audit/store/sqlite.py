"""SQLite storage (the embedded default): one file, WAL, a single writer and pooled readers.

Ingest (`submit_events`) appends each batch to the ingest journal (journal.py: a file per process) and returns once
it is synced there; a merger thread moves journaled batches into `events` many at a time, and every event read first
merges what is still journaled, so a read sees each accepted event. A merge is one IMMEDIATE transaction of
multi-row INSERTs (up to 512 rows a statement); sequence numbers are assigned inside it, rows skipped as
duplicates (INSERT OR IGNORE) are found by counting the new seq range (and reading it only when the count falls
short), so listeners get exactly the stored events, and each stored part's time bounds are widened in
`event_parts` (see storage.PART_SHIFT).
`insert_events` writes one batch directly, the same way.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

import orjson

from .events import EventQuery, StoredEvent
from .journal import IngestJournal, JournalEntry, legacy_batches
from .storage import (
    EVENT_COLUMNS,
    GroupCommit,
    Storage,
    StorageError,
    by_tenant,
    event_row,
    row_event,
    shared_schema,
)

_log = logging.getLogger(__name__)

# 512 rows of 22 values and the first seq: within SQLite's default limit of 32,766 bound variables.
MAX_ROWS_PER_STATEMENT = 512
_ROW_MARKS = ", ".join("?" * len(EVENT_COLUMNS))


@functools.lru_cache(maxsize=16)
def _insert_sql(rows: int) -> str:
    """INSERT of `rows` rows whose seq is ?1 + row index (batches are cut into power-of-two statements, so a
    handful of statement texts are prepared once and reused).

    OR IGNORE, not ON CONFLICT DO NOTHING: a statement that may abort halfway (DO NOTHING covers only the
    unique index; a NOT NULL failure would still abort) makes SQLite keep a statement journal of every page it
    changes, in a temporary file: 7 KB per event at 1,000,000 stored, a third of a merge's time (measured:
    35 -> 24 us of CPU per event). Nothing can abort an OR IGNORE statement; _insert_rows checks that each row
    it skipped is a duplicate."""
    values = ", ".join(f"(?1 + {index}, {_ROW_MARKS})" for index in range(rows))
    return f"INSERT OR IGNORE INTO events (seq, {', '.join(EVENT_COLUMNS)}) VALUES {values}"

_EVENTS_TABLE = """CREATE TABLE events (
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
    )"""


CHECKPOINT_INTERVAL = 1.0
# The checkpointer makes the WAL start over once it holds more than this, and the file is cut back to this size
# when it does: merges write tens of MB each. 64 MiB cost a 102,400-event OTLP/HTTP run 3-15% (the file grew
# again each time: new blocks to allocate); 256 MiB stays within one run's noise, and a 409,600-event run took
# 30.6-31.6k events/s where the unbounded WAL took 28.7-29.9k (two alternating pairs each, 1,000,000 stored).
WAL_SIZE_LIMIT = 256 * 1024 * 1024
# Events one merge moves from the journal into `events`: a transaction of 512 events writes ~3.6 pages per event
# at 100,000 stored events, one of 4,096 ~2 (measured), and 16,384 per transaction insert 27k events/s at
# 1,000,000 stored events where 512 insert 15k (benchmarks/bench_store.py's records; before the part-led indexes).
MERGE_MAX_EVENTS = 16_384
# How often an idle merger looks for batches other processes journaled (their own merger normally takes them).
MERGE_POLL_INTERVAL = 1.0
_JOURNAL_POSITION = [
    "CREATE TABLE ingest_journal_position (position INTEGER NOT NULL)",
    "INSERT INTO ingest_journal_position (position) VALUES (0)",
]
# How far each journal file is merged (bytes); `ingest_journal_position` is what the earlier journal, a SQLite
# file, had merged, read once to take over its batches.
_JOURNAL_FILES = ["CREATE TABLE ingest_journal_files (name TEXT PRIMARY KEY, merged INTEGER NOT NULL)"]
_SET_MERGED = ("INSERT INTO ingest_journal_files (name, merged) VALUES (?, ?)"
               " ON CONFLICT (name) DO UPDATE SET merged = excluded.merged")
# Pages of a new database. Before the part-led indexes, ingest wrote about three pages per event at random places
# in the actor and resource-id indexes, each a WAL frame at commit and again at the checkpoint: 2 KiB pages write
# half the bytes of the 4 KiB default (measured: +27% and +65% insert rate at 400,000 events; 8 KiB: -22%). A
# database keeps the page size it was created with.
PAGE_SIZE = 2048
_INDEX_BY_SELECTIVITY = (
    ("resource_id", "events_tenant_resource_id"),
    ("actor_id", "events_tenant_actor"),
    ("action", "events_tenant_action"),
    ("resource_type", "events_tenant_resource_type"),
    ("outcome", "events_tenant_outcome"),
)


def _check_skipped_are_stored(conn: sqlite3.Connection, skipped: list[Sequence[Any]]) -> None:
    """Raise StorageError (rolling the transaction back) unless every row an OR IGNORE insert skipped has its
    (tenant, uid) stored already: a row skipped for anything else (a NULL where none is allowed) is never
    passed off as a duplicate."""
    for row in skipped:
        if conn.execute("SELECT 1 FROM events WHERE tenant_id = ? AND uid = ?", (row[0], row[1])).fetchone() is None:
            raise StorageError(f"SQLite refused event {row[1]!r} of tenant {row[0]!r} (a column it requires is empty)")


class SQLiteStorage(Storage):
    """Events in a SQLite file (WAL, synchronous=FULL: a stored batch survives power loss)."""

    dialect = "sqlite"
    placeholder = "?"
    like_operator = "LIKE"
    partitioned = ("resource_id", "actor_id")
    # `seq` is the rowid, which ends every index entry anyway (a database created before keeps `seq` in its
    # index keys, which serves the same searches)
    index_tiebreak = ""
    least_greatest = ("MIN", "MAX")

    def __init__(self, path: str, *, busy_timeout: float = 30.0, merge_in_background: bool = True) -> None:
        """`busy_timeout`: how long a statement waits for another process's write lock before it fails (the app
        then answers 503 with Retry-After). Without `merge_in_background`, journaled batches are merged only by
        reads, `merge_journal()` and `close()`."""
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
        self.journal = IngestJournal(path + "-ingest.d", merge_lock_path=path + "-ingest-merge.lock",
                                     busy_timeout=busy_timeout)
        self._merge_wanted = threading.Event()
        self._merger: threading.Thread | None = None
        self._merger_lock = threading.Lock()
        self._merge_in_background = merge_in_background

    def migrate(self) -> None:
        """The shared schema, the journal's table, what a journal of the earlier format still holds, and the
        merger (which needs all three)."""
        super().migrate()
        self.apply_migrations("sqlite-journal", [_JOURNAL_POSITION, _JOURNAL_FILES])
        self._take_over_legacy_journal()
        self._start_merger()

    def _take_over_legacy_journal(self) -> None:
        """Append the batches a journal of the earlier format (the SQLite file `<db>-ingest`) holds beyond its
        merged position to this process's journal file, mark them taken, then delete that file. A crash in
        between takes them over again, and the merge skips the copies as duplicates."""
        legacy = self.path + "-ingest"
        if not os.path.exists(legacy):
            return
        with self.journal.merge_lock:
            if not os.path.exists(legacy):
                return
            with self.read() as conn:
                position = conn.execute("SELECT position FROM ingest_journal_position").fetchone()[0]
            batches = legacy_batches(legacy, position)
            for _, tenant_id, events, rows in batches:
                self.journal.append_encoded(tenant_id, events, rows, kept=(None, orjson.loads(rows)))
            if batches:
                with self.transaction() as conn:
                    conn.execute("UPDATE ingest_journal_position SET position = ?", (batches[-1][0],))
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(legacy + suffix):
                    os.remove(legacy + suffix)
            if batches:
                _log.info("otel-audit store: took %d batches over from the earlier ingest journal %s", len(batches), legacy)

    def _start_merger(self) -> None:
        with self._merger_lock:
            if self._merger is None and self._merge_in_background and not self._closed.is_set():
                self._merger = threading.Thread(target=self._merge_loop, name="otel-audit-sqlite-merge", daemon=True)
                self._merger.start()
                self._merge_wanted.set()

    def _merge_loop(self) -> None:
        """Merge journaled batches whenever some arrive (batches journaled during a merge go in the next one,
        together: the busier ingest is, the larger each merge)."""
        while not self._closed.is_set():
            self._merge_wanted.wait(MERGE_POLL_INTERVAL)
            self._merge_wanted.clear()
            if self._closed.is_set():
                return
            try:
                self.settle()  # an idle poll reads two numbers and takes no write lock
            except Exception:  # noqa: BLE001 - the batches stay journaled; the next merge or read retries them
                _log.exception("otel-audit store: merging the ingest journal failed; retrying")
                self._closed.wait(MERGE_POLL_INTERVAL)

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database off the ingest path (PASSIVE: never blocks the writer)."""
        conn = self._connect()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            while not self._closed.wait(CHECKPOINT_INTERVAL):
                _, wal_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if wal_frames * page_size > WAL_SIZE_LIMIT:
                    self._restart_wal(conn)
        finally:
            conn.close()

    def _restart_wal(self, conn: sqlite3.Connection) -> None:
        """Make the next transaction write the WAL from its start (cut back to WAL_SIZE_LIMIT). The WAL starts
        over only when a transaction begins after a checkpoint copied every frame, which never happens while
        transactions follow each other without a gap: under steady ingest it grew by 2 KB per event (200 MB in
        a 100,000-event OTLP/HTTP run, 958 MB loading 200,000 events), and every read and checkpoint paid for
        its size. A RESTART checkpoint with this process's writer held off copies what the PASSIVE one left
        (little) and waits for readers (and other processes' writers, up to busy_timeout) to move on."""
        with self._write_lock:
            conn.execute("PRAGMA wal_checkpoint(RESTART)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL mode creates the file; no-op for an existing one
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _schema(self) -> list[str]:
        return [_EVENTS_TABLE, *shared_schema("INTEGER", tiebreak=self.index_tiebreak)]

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
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A reader inside one read transaction (WAL: it sees the database as of its first query)."""
        with self._reader() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A reader connection (WAL lets reads run alongside the writer); each statement sees a consistent snapshot."""
        with self._reader() as conn:
            yield conn

    def submit_events(self, events: Sequence[StoredEvent]) -> None:
        """Journal the batch (one synced append per tenant) and wake the merger; see the module docstring."""
        groups = by_tenant(events)
        for tenant_id, batch in groups.items():
            rows = [event_row(event) for event in batch]
            # the journal keeps the events (for the listeners) and rows (for the merge) of this process's batches
            # until they are merged, so neither is rebuilt from the journal here
            self.journal.append(tenant_id, rows, kept=(batch, rows))
        if groups:
            self._start_merger()
            self._merge_wanted.set()

    def settle(self) -> None:
        """Merge whatever is still journaled (by any process), so the read that follows sees it and this
        process's listeners have heard of it."""
        with self.journal.merge_lock:
            if self.journal.unmerged(self._merged_offsets()):
                self.merge_journal()

    def _merged_offsets(self, conn: sqlite3.Connection | None = None) -> dict[str, int]:
        """How far each journal file is merged (bytes), by name."""
        if conn is None:
            with self.read() as reader:
                return self._merged_offsets(reader)
        return dict(conn.execute("SELECT name, merged FROM ingest_journal_files").fetchall())

    def journaled(self) -> list[JournalEntry]:
        """The batches journaled and not merged yet (by any process)."""
        return self.journal.entries(self._merged_offsets(), 2**62)

    def merge_journal(self) -> int:
        """Move every journaled batch into `events`, up to MERGE_MAX_EVENTS per transaction; how many were new.
        How far each file is merged commits with the events, so no batch is merged twice. Files merged to
        their end that no process appends to any more are deleted."""
        merged = 0
        with self.journal.merge_lock:
            while True:
                with self.transaction() as conn:
                    offsets = self._merged_offsets(conn)
                    entries = self.journal.entries(offsets, MERGE_MAX_EVENTS)
                    if entries:
                        batches = [self._batch_of(entry) for entry in entries]
                        seqs = self._insert_rows(conn, [row for _, rows in batches for row in rows])
                        ends = {entry.file: entry.end for entry in entries}  # entries of a file come in order
                        conn.executemany(_SET_MERGED, ends.items())
                if not entries:
                    break
                self._announce_merged(entries, batches, seqs)
                merged += sum(seq is not None for seq in seqs)
            deleted = self.journal.release(offsets)
            if deleted:
                with self.transaction() as conn:
                    conn.executemany("DELETE FROM ingest_journal_files WHERE name = ?", [(name,) for name in deleted])
        return merged

    @staticmethod
    def _batch_of(entry: JournalEntry) -> tuple[list[StoredEvent] | None, Sequence[Sequence[Any]]]:
        """A batch's events and rows: kept since submit when this process accepted it, else its rows decoded
        from the journal (and no events)."""
        kept: tuple[list[StoredEvent], Sequence[Sequence[Any]]] | None = entry.kept
        return kept if kept is not None else (None, entry.rows())

    def _announce_merged(self, entries: list[JournalEntry],
                         batches: list[tuple[list[StoredEvent] | None, Sequence[Sequence[Any]]]],
                         seqs: list[int | None]) -> None:
        """Tell the listeners what each merged batch stored (this process's own batches keep their event
        objects; another process's are rebuilt from their rows)."""
        offset = 0
        for entry, (events, rows) in zip(entries, batches):
            batch_seqs = seqs[offset : offset + entry.events]
            offset += entry.events
            stored = []
            if events is None:
                stored = [row_event((seq, *row)) for seq, row in zip(batch_seqs, rows) if seq is not None]
            else:
                for event, seq in zip(events, batch_seqs):
                    if seq is not None:
                        event.seq = seq
                        stored.append(event)
            self._announce(entry.tenant_id, stored, entry.events - len(stored))

    def insert_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Concurrent calls are written together (GroupCommit: one transaction and fsync for all of them)."""
        if not events:
            return []
        return self._group.insert(events)

    def _insert_group(self, events: list[StoredEvent]) -> list[StoredEvent]:
        with self.transaction() as conn:
            seqs = self._insert_rows(conn, [event_row(event) for event in events])
        fresh = []
        for event, seq in zip(events, seqs):
            if seq is not None:
                event.seq = seq
                fresh.append(event)
        return fresh

    def _insert_rows(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[int | None]:
        """Insert rows (EVENT_COLUMNS order) with multi-row INSERTs, skipping (tenant, uid) pairs already stored
        or earlier in `rows`; each row's seq, None for a skipped one (row i gets seq first + i, so a skipped row
        leaves a gap). Each statement inserts its rows in one call into SQLite, which runs without the GIL, so
        other requests decode meanwhile; the Python work per row is kept small, as a merge gets a third of the
        GIL while two request threads decode."""
        statements: list[tuple[int, str, list[Any]]] = []
        offset, size = 0, MAX_ROWS_PER_STATEMENT
        while offset < len(rows):
            while size > len(rows) - offset:
                size //= 2
            params: list[Any] = [0, *chain.from_iterable(rows[offset : offset + size])]
            statements.append((offset, _insert_sql(size), params))
            offset += size
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        first = (row[0] if row else 0) + 1
        for offset, sql, params in statements:
            params[0] = first + offset
            conn.execute(sql, params)
        end = first + len(rows)
        (count,) = conn.execute("SELECT COUNT(*) FROM events WHERE seq >= ? AND seq < ?", (first, end)).fetchone()
        seqs: list[int | None]
        if count == len(rows):
            seqs = list(range(first, end))
        else:
            seqs = [None] * len(rows)
            for (seq,) in conn.execute("SELECT seq FROM events WHERE seq >= ? AND seq < ?", (first, end)):
                seqs[seq - first] = seq
            _check_skipped_are_stored(conn, [row for row, seq in zip(rows, seqs) if seq is None])
        if self.partitioned:
            self._note_parts(conn, ((seq, row[0], row[2])  # seq, tenant, time
                                    for row, seq in zip(rows, seqs) if seq is not None))
        return seqs

    def close(self) -> None:
        """Stop the merger and merge what is journaled (what fails to merge stays journaled for the next start).
        Closing again does nothing."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._merge_wanted.set()
        if self._merger is not None:
            self._merger.join(timeout=60)
        try:
            self.settle()
            self.journal.close_file()
            self.merge_journal()  # deletes this process's file, now that it is inactive and merged
        except Exception:  # noqa: BLE001 - durable in the journal; merged when the store next opens
            _log.exception("otel-audit store: merging the ingest journal at close failed")
        self.journal.close()
        self._checkpointer.join(timeout=30)
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
