"""PostgreSQL storage (psycopg 3, pooled): each batch is COPYed (binary) straight into `events` with sequence
numbers reserved beforehand; a batch holding an already stored (tenant, uid) goes instead through a temporary table
and one INSERT ... ON CONFLICT DO NOTHING RETURNING, so duplicates are skipped and stored rows are known.

Text columns use the "C" collation, so prefix ranges and ordering behave the same on every database locale.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .events import StoredEvent
from .storage import EVENT_COLUMNS, Storage, StorageError, event_row, shared_schema

_COLUMNS = ", ".join(EVENT_COLUMNS)
_MIGRATION_LOCK = 0x6F7465_6C61  # pg_advisory_xact_lock key serialising schema migrations

_EVENT_COLUMN_TYPES = """
        tenant_id TEXT COLLATE "C" NOT NULL,
        uid TEXT COLLATE "C" NOT NULL,
        time_unix_nano BIGINT NOT NULL,
        observed_time_unix_nano BIGINT NOT NULL,
        received_time_unix_nano BIGINT NOT NULL,
        event_name TEXT NOT NULL,
        action TEXT COLLATE "C" NOT NULL,
        outcome TEXT COLLATE "C" NOT NULL,
        severity_number INTEGER NOT NULL,
        severity_text TEXT NOT NULL,
        actor_id TEXT COLLATE "C",
        actor_type TEXT,
        resource_type TEXT COLLATE "C",
        resource_id TEXT COLLATE "C",
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        attributes TEXT NOT NULL,
        resource TEXT NOT NULL,
        scope_name TEXT NOT NULL,
        scope_version TEXT NOT NULL,
        body TEXT NOT NULL,
        metadata_text TEXT NOT NULL"""

_SCHEMA = [
    f"CREATE TABLE events (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {_EVENT_COLUMN_TYPES})",
    *shared_schema("BIGINT"),
]

# The identity sequence is looked up once per batch (the CTE is not inlined); as a call in nextval's argument it
# was looked up for every row: EXPLAIN ANALYZE of 512 rows 1.2 -> 0.2 ms.
_RESERVE = ("WITH identity AS MATERIALIZED (SELECT pg_get_serial_sequence('events', 'seq')::regclass AS sequence)"
            " SELECT nextval(sequence) FROM identity, generate_series(1, %s)")
# COPY writes the given seq into the identity column (as INSERT ... OVERRIDING SYSTEM VALUE would).
_COPY_EVENTS = f"COPY events (seq, {_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_STAGING = f"CREATE TEMP TABLE IF NOT EXISTS events_staging (ord INTEGER NOT NULL, {_EVENT_COLUMN_TYPES}) ON COMMIT DELETE ROWS"
# Binary COPY: the server parses no text (measured: COPY 40% and the client's share 35% cheaper than text COPY).
_COPY = f"COPY events_staging (ord, {_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_NUMBER_TYPES = {"time_unix_nano": "int8", "observed_time_unix_nano": "int8", "received_time_unix_nano": "int8",
                 "severity_number": "int4"}
_COPY_TYPES = ["int4", *(_NUMBER_TYPES.get(column, "text") for column in EVENT_COLUMNS)]
_COPY_EVENTS_TYPES = ["int8", *_COPY_TYPES[1:]]
_MOVE = (
    f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM events_staging ORDER BY ord"
    " ON CONFLICT (tenant_id, uid) DO NOTHING RETURNING seq, tenant_id, uid"
)


class PostgresStorage(Storage):
    """Events in PostgreSQL; `pool_size` connections shared by the app's worker threads."""

    dialect = "postgresql"
    placeholder = "%s"
    like_operator = "ILIKE"
    partitioned = ("resource_id", "actor_id")

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: float = 10.0) -> None:
        self.url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, name="otel-audit")
        try:
            self._pool.wait(timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise StorageError(f"cannot connect to PostgreSQL within {connect_timeout} s (check the URL and server)") from None

    def _schema(self) -> list[str]:
        return list(_SCHEMA)

    def _lock_migrations(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _lock_keys(self, conn: psycopg.Connection[Any]) -> None:
        # Conflicts with itself and with writes, not with reads: without it two transactions storing the same key
        # both find nothing to replace, and the second insert fails on the first one's row.
        conn.execute("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pool.connection() as conn:
            yield conn

    def insert_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """COPY the batch into `events` under a savepoint; if a (tenant, uid) is stored already (unique violation),
        roll back to it and store the rest through the staging table. Duplicates are rare (exporter retries), and
        the direct COPY skips the staging write, the sort and the conflict checks (measured: +25% insert rate)."""
        if not events:
            return []
        unique: dict[tuple[str, str], StoredEvent] = {}
        for event in events:
            unique.setdefault((event.tenant_id, event.uid), event)
        batch = list(unique.values())
        with self.transaction() as conn:
            seqs = [row[0] for row in conn.execute(_RESERVE, (len(batch),)).fetchall()]
            try:
                with conn.transaction(), conn.cursor() as cursor, cursor.copy(_COPY_EVENTS) as copy:
                    copy.set_types(_COPY_EVENTS_TYPES)
                    for seq, event in zip(seqs, batch):
                        copy.write_row((seq, *event_row(event)))
            except psycopg.errors.UniqueViolation:
                fresh = self._insert_skipping_duplicates(conn, unique, batch)
            else:
                for seq, event in zip(seqs, batch):
                    event.seq = seq
                fresh = batch
            if self.partitioned:
                self._note_parts(conn, ((event.seq, event.tenant_id, event.time_unix_nano) for event in fresh))
        return fresh

    @staticmethod
    def _insert_skipping_duplicates(
        conn: psycopg.Connection[Any], unique: dict[tuple[str, str], StoredEvent], batch: list[StoredEvent]
    ) -> list[StoredEvent]:
        conn.execute(_STAGING)
        with conn.cursor() as cursor:
            with cursor.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for index, event in enumerate(batch):
                    copy.write_row((index, *event_row(event)))
            stored = cursor.execute(_MOVE).fetchall()
        fresh = []
        for seq, tenant_id, uid in stored:
            event = unique[(tenant_id, uid)]
            event.seq = seq
            fresh.append(event)
        fresh.sort(key=lambda event: event.seq)
        return fresh

    def close(self) -> None:
        self._pool.close()
