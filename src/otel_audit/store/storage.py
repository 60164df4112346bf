"""The storage interface of the store, and the SQL both backends (SQLite, PostgreSQL) share.

`open_storage(url)` picks the backend from the URL. Extensions (alert rules, webhooks) keep their own tables
with `apply_migrations(component, statements)` and their own queries with `transaction()`; they learn about
new events through the app's ingest hooks, which receive exactly the events each batch stored.
"""

from __future__ import annotations

import abc
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from .events import (
    MAX_TIME_UNIX_NANO, Cursor, EventQuery, Page, StoredEvent, TokenCodec, escape_like, loads_stored,
    restored_attributes,
)

EVENT_COLUMNS = (
    "tenant_id", "uid", "time_unix_nano", "observed_time_unix_nano", "received_time_unix_nano", "event_name",
    "action", "outcome", "severity_number", "severity_text", "actor_id", "actor_type", "resource_type",
    "resource_id", "trace_id", "span_id", "attributes", "resource", "scope_name", "scope_version", "body",
    "metadata_text",
)
SELECT_COLUMNS = "seq, " + ", ".join(EVENT_COLUMNS)
SCOPES = ("ingest", "read", "admin")
_SECRETS_TABLE = "CREATE TABLE store_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
DELETE_CHUNK = 10_000
# Events are numbered into parts of 2**PART_SHIFT by seq (the order they were stored). The indexes of the two
# columns with many distinct values (actor and resource ids) lead with the part, so ingest writes into one small,
# hot region of each instead of at random places all over it (SQLite, 1,000,000 stored events, 16,384 per
# transaction: 29.5k -> 64.8k events/s, 25.9 -> 13.5 us of CPU per event); a search on them asks each part.
PART_SHIFT = 16
PART = f"(seq >> {PART_SHIFT})"
# A part's time bounds are kept to whole minutes (the oldest rounded down, the newest up): a bound only says which
# parts may hold a match, so a wider one costs at most a part more asked. Events arriving "now" then widen a
# part's row about once a minute, and the transactions in between leave it alone instead of each taking its lock
# (PostgreSQL locks a row ON CONFLICT DO UPDATE targets even when its WHERE declines the update).
PART_TIME_GRAIN = 60 * 1_000_000_000
_log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The database refused an operation (configuration, connectivity, schema)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public record: the secret itself is never stored, only its SHA-256."""

    key_id: str
    tenant_id: str
    scopes: tuple[str, ...]
    name: str
    created_unix_nano: int
    revoked_unix_nano: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "tenant_id": self.tenant_id,
            "scopes": list(self.scopes),
            "name": self.name,
            "created_unix_nano": self.created_unix_nano,
            "revoked": self.revoked_unix_nano is not None,
        }


def event_row(event: StoredEvent) -> tuple[Any, ...]:
    """The INSERT parameters of an event, in EVENT_COLUMNS order."""
    return (
        event.tenant_id, event.uid, event.time_unix_nano, event.observed_time_unix_nano,
        event.received_time_unix_nano, event.event_name, event.action, event.outcome, event.severity_number,
        event.severity_text, event.actor_id, event.actor_type, event.resource_type, event.resource_id,
        event.trace_id, event.span_id, event.attributes_json, event.resource_json, event.scope_name,
        event.scope_version, event.body_json, event.metadata_text,
    )


def row_event(row: Sequence[Any]) -> StoredEvent:
    """A StoredEvent from a row of SELECT_COLUMNS."""
    (seq, tenant_id, uid, time_ns, observed_ns, received_ns, event_name, action, outcome, severity_number,
     severity_text, actor_id, actor_type, resource_type, resource_id, trace_id, span_id, attributes, resource,
     scope_name, scope_version, body, metadata_text) = row
    return StoredEvent(
        tenant_id=tenant_id, uid=uid, time_unix_nano=time_ns, observed_time_unix_nano=observed_ns,
        received_time_unix_nano=received_ns, event_name=event_name, action=action, outcome=outcome,
        severity_number=severity_number, severity_text=severity_text, actor_id=actor_id, actor_type=actor_type,
        resource_type=resource_type, resource_id=resource_id, trace_id=trace_id, span_id=span_id,
        attributes=restored_attributes(loads_stored(attributes), uid, action, outcome,
                                       (actor_id, actor_type, resource_type, resource_id), metadata_text),
        resource=loads_stored(resource), scope_name=scope_name,
        scope_version=scope_version, body=loads_stored(body), seq=seq, attributes_json=attributes,
        resource_json=resource, body_json=body, metadata_text=metadata_text,
    )


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix` (binary collation)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def shared_schema(integer_type: str, tiebreak: str = ", seq") -> list[str]:
    """The core statements both backends share after their own `events` table: the search indexes and the API
    keys table. `tiebreak` ends every search index's key after the time, so a page newest-first (time, then seq)
    reads the index in order; SQLite passes "" because its `seq` is the rowid, which ends every index entry
    already (measured at 100,000 events: the six indexes 24 -> 22 MiB, insert rate +3% to +14% in 16,384-event
    transactions)."""
    return [
        "CREATE UNIQUE INDEX events_tenant_uid ON events (tenant_id, uid)",
        f"CREATE INDEX events_tenant_time ON events (tenant_id, time_unix_nano{tiebreak})",
        f"CREATE INDEX events_tenant_action ON events (tenant_id, action, time_unix_nano{tiebreak})",
        f"CREATE INDEX events_tenant_actor ON events (tenant_id, actor_id, time_unix_nano{tiebreak})",
        f"CREATE INDEX events_tenant_resource_id ON events (tenant_id, resource_id, time_unix_nano{tiebreak})",
        f"CREATE INDEX events_tenant_resource_type ON events (tenant_id, resource_type, time_unix_nano{tiebreak})",
        f"CREATE INDEX events_tenant_outcome ON events (tenant_id, outcome, time_unix_nano{tiebreak})",
        f"""CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        scopes TEXT NOT NULL,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created_unix_nano {integer_type} NOT NULL,
        revoked_unix_nano {integer_type}
    )""",
    ]


def parts_schema(tiebreak: str) -> list[str]:
    """The migration to part-led actor and resource id indexes, and the table of each part's time bounds per
    tenant (a search visits the parts newest first and stops when no older part can hold a better match)."""
    return [
        "DROP INDEX events_tenant_actor",
        "DROP INDEX events_tenant_resource_id",
        f"CREATE INDEX events_tenant_actor ON events (tenant_id, {PART}, actor_id, time_unix_nano{tiebreak})",
        f"CREATE INDEX events_tenant_resource_id ON events (tenant_id, {PART}, resource_id, time_unix_nano{tiebreak})",
        """CREATE TABLE event_parts (
        tenant_id TEXT NOT NULL,
        part BIGINT NOT NULL,
        min_time BIGINT NOT NULL,
        max_time BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, part)
    )""",
        f"INSERT INTO event_parts (tenant_id, part, min_time, max_time) SELECT tenant_id, {PART},"
        f" MIN(time_unix_nano), MAX(time_unix_nano) FROM events GROUP BY tenant_id, {PART}",
    ]


def part_bounds(stored: Iterable[tuple[int, str, int]]) -> list[tuple[str, int, int, int]]:
    """(tenant, part, oldest time, newest time) of the stored (seq, tenant, time) triples, widened to whole
    PART_TIME_GRAIN, in key order (so concurrent writers take the `event_parts` rows' locks in the same order)."""
    bounds: dict[tuple[str, int], list[int]] = {}
    for seq, tenant_id, time_unix_nano in stored:
        key = (tenant_id, seq >> PART_SHIFT)
        found = bounds.get(key)
        if found is None:
            bounds[key] = [time_unix_nano, time_unix_nano]
        elif time_unix_nano < found[0]:
            found[0] = time_unix_nano
        elif time_unix_nano > found[1]:
            found[1] = time_unix_nano
    return [(tenant_id, part, low - low % PART_TIME_GRAIN, min(high - high % PART_TIME_GRAIN + PART_TIME_GRAIN - 1, MAX_TIME_UNIX_NANO))
            for (tenant_id, part), (low, high) in sorted(bounds.items())]


class _Pending:
    """One caller's batch waiting in a GroupCommit."""

    __slots__ = ("events", "stored", "error", "done")

    def __init__(self, events: Sequence[StoredEvent]) -> None:
        self.events = events
        self.stored: list[StoredEvent] = []
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Concurrent `insert` calls share transactions: whoever finds the writer free writes the batches queued
    meanwhile (as many as fit in `max_events`, at least one) with `write`, in one transaction, and each caller gets back its own stored
    events. A caller returns only once the transaction holding its events has committed, and raises what that
    transaction raised; a lone caller writes its batch alone, as before. Fewer, larger commits: one fsync and
    one write of each shared index page per group instead of per request."""

    def __init__(self, write: Callable[[list[StoredEvent]], list[StoredEvent]], max_events: int = 16_384) -> None:
        self._write = write
        self.max_events = max_events
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._writer = threading.Lock()

    def insert(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Store `events` (skipping stored (tenant, uid) pairs) with whatever else is queued; the new ones."""
        pending = _Pending(events)
        with self._queue_lock:
            self._queue.append(pending)
        while not pending.done:
            with self._writer:
                if not pending.done:
                    self._write_group(self._take())
        if pending.error is not None:
            raise pending.error
        return pending.stored

    def _take(self) -> list[_Pending]:
        with self._queue_lock:
            size = count = 0
            for item in self._queue:
                if count and size + len(item.events) > self.max_events:
                    break
                count += 1
                size += len(item.events)
            group, self._queue = self._queue[:count], self._queue[count:]
        return group

    def _write_group(self, group: list[_Pending]) -> None:
        try:
            stored = self._write([event for pending in group for event in pending.events])
        except BaseException as exc:  # noqa: BLE001 - raised by each caller of the group, in its own thread
            for pending in group:
                pending.error = exc
                pending.done = True
            return
        fresh = {id(event) for event in stored}
        for pending in group:
            pending.stored = [event for event in pending.events if id(event) in fresh]
            pending.done = True


StoredListener = Callable[[str, list[StoredEvent], int], None]


class Storage(abc.ABC):
    """Where events and API keys live. Every event query is confined to one tenant."""

    dialect: str
    placeholder: str
    like_operator: str
    # Columns whose index leads with the part (see PART_SHIFT), most selective first; a search on one of them
    # visits the parts. The backend keeps `event_parts` current in the transaction that stores the events.
    partitioned: tuple[str, ...] = ()
    # What ends each search index's key after the time (see shared_schema), and the SQL two-argument minimum
    # and maximum.
    index_tiebreak = ", seq"
    least_greatest = ("LEAST", "GREATEST")
    _listeners: tuple[StoredListener, ...] = ()

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """A DB-API connection inside a transaction (committed on success, rolled back on error)."""

    @abc.abstractmethod
    def read(self) -> AbstractContextManager[Any]:
        """A DB-API connection for read-only queries."""

    def snapshot(self) -> AbstractContextManager[Any]:
        """A connection for a read of several queries (a search over parts), which a backend with part-led
        indexes makes see one state of the database."""
        return self.read()

    @abc.abstractmethod
    def insert_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Store events in one transaction, skipping (tenant, uid) pairs already stored; return the new ones
        with `seq` set, in input order."""

    def submit_events(self, events: Sequence[StoredEvent]) -> None:
        """Accept events for storage: once this returns they are durable and every later read sees them. The
        stored ones (new (tenant, uid) pairs) reach the stored listeners, here at once; a backend may index
        them later, in bulk (SQLite's ingest journal)."""
        for tenant_id, batch in by_tenant(events).items():
            stored = self.insert_events(batch)
            self._announce(tenant_id, stored, len(batch) - len(stored))

    def add_stored_listener(self, listener: StoredListener) -> None:
        """Call `listener(tenant_id, stored_events, duplicates)` for every submitted batch once it is stored,
        from whichever thread stored it (exceptions are logged)."""
        self._listeners = (*self._listeners, listener)

    def remove_stored_listener(self, listener: StoredListener) -> None:
        """Stop calling `listener` (compared by equality: a bound method is a new object at each access)."""
        self._listeners = tuple(item for item in self._listeners if item != listener)

    def _announce(self, tenant_id: str, stored: list[StoredEvent], duplicates: int) -> None:
        for listener in self._listeners:
            try:
                listener(tenant_id, stored, duplicates)
            except Exception:  # noqa: BLE001 - the events are stored; a listener failure must not undo that
                _log.exception("otel-audit store: stored-events listener %r failed", listener)

    def settle(self) -> None:
        """Make every submitted event visible to reads (a no-op where submit_events stores at once)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    def _schema(self) -> list[str]:
        """The statements of the core schema's first version."""

    # migrations -------------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the core schema (idempotent, safe to run from several processes)."""
        self.apply_migrations("core", [self._schema(), [_SECRETS_TABLE]])
        if self.partitioned:
            self.apply_migrations("event-parts", [parts_schema(self.index_tiebreak)])

    @property
    def tokens(self) -> TokenCodec:
        """Seals cursors and tail positions with this database's secret key (created on first use)."""
        codec = getattr(self, "_tokens", None)
        if codec is None:
            p = self.placeholder
            with self.transaction() as conn:
                conn.execute(
                    f"INSERT INTO store_secrets (name, value) VALUES ({p}, {p}) ON CONFLICT (name) DO NOTHING",
                    ("token_key", secrets.token_hex(16)),
                )
                key = conn.execute(f"SELECT value FROM store_secrets WHERE name = {p}", ("token_key",)).fetchone()[0]
            codec = self._tokens = TokenCodec(bytes.fromhex(key))
        return codec

    def apply_migrations(self, component: str, versions: Sequence[Sequence[str]]) -> int:
        """Apply the not-yet-applied versions (lists of statements) of a component's schema; return its version."""
        p = self.placeholder
        with self.transaction() as conn:
            self._lock_migrations(conn)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL,"
                " PRIMARY KEY (component, version))"
            )
            row = conn.execute(
                f"SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = {p}", (component,)
            ).fetchone()
            current = int(row[0])
            for version, statements in enumerate(versions, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"INSERT INTO schema_migrations (component, version) VALUES ({p}, {p})", (component, version))
                current = version
        return current

    def _lock_migrations(self, conn: Any) -> None:
        """Serialise concurrent migrations (SQLite's write transaction already does)."""

    def _index_hint(self, query: EventQuery, ordered: bool = True) -> str:
        """Text after `FROM events` steering the planner to an index for a newest-first page (`ordered`) or a
        count (PostgreSQL's statistics-based planner needs none)."""
        return ""

    # events -----------------------------------------------------------------------------------------------

    def _where(self, tenant_id: str, query: EventQuery) -> tuple[str, list[Any]]:
        p = self.placeholder
        clauses = [f"tenant_id = {p}"]
        params: list[Any] = [tenant_id]
        for column, value in (
            ("action", query.action), ("actor_id", query.actor_id), ("resource_type", query.resource_type),
            ("resource_id", query.resource_id), ("outcome", query.outcome),
        ):
            if value is not None:
                clauses.append(f"{column} = {p}")
                params.append(value)
        if query.action_prefix:
            clauses.append(f"action >= {p} AND action < {p}")
            params += [query.action_prefix, _prefix_end(query.action_prefix)]
        if query.since is not None:
            clauses.append(f"time_unix_nano >= {p}")
            params.append(query.since)
        if query.until is not None:
            clauses.append(f"time_unix_nano < {p}")
            params.append(query.until)
        if query.text is not None:
            clauses.append(f"metadata_text {self.like_operator} {p} ESCAPE '\\'")
            params.append(f"%{escape_like(query.text)}%")
        return " AND ".join(clauses), params

    def _note_parts(self, conn: Any, stored: Iterable[tuple[int, str, int]]) -> None:
        """Widen `event_parts` to the stored (seq, tenant, time) triples, in the transaction storing them. A
        row that already covers a batch is only read (no lock): see PART_TIME_GRAIN."""
        p = self.placeholder
        least, greatest = self.least_greatest
        sql = (
            f"INSERT INTO event_parts (tenant_id, part, min_time, max_time) VALUES ({p}, {p}, {p}, {p})"
            f" ON CONFLICT (tenant_id, part) DO UPDATE SET min_time = {least}(event_parts.min_time, excluded.min_time),"
            f" max_time = {greatest}(event_parts.max_time, excluded.max_time)"
            " WHERE excluded.min_time < event_parts.min_time OR excluded.max_time > event_parts.max_time"
        )
        known = f"SELECT min_time, max_time FROM event_parts WHERE tenant_id = {p} AND part = {p}"
        for tenant_id, part, low, high in part_bounds(stored):  # one or two (tenant, part) pairs per batch
            row = conn.execute(known, (tenant_id, part)).fetchone()
            if row is None or low < row[0] or high > row[1]:
                conn.execute(sql, (tenant_id, part, low, high))

    def _uses_parts(self, query: EventQuery) -> bool:
        """Whether the query's most selective filter is on a part-led index (see `partitioned`)."""
        return any(getattr(query, column) is not None for column in self.partitioned)

    def search(self, tenant_id: str, query: EventQuery) -> Page:
        """One page of the tenant's events matching `query`, newest first."""
        self.settle()
        p = self.placeholder
        where, params = self._where(tenant_id, query)
        if query.cursor is not None:
            where += f" AND (time_unix_nano, seq) < ({p}, {p})"
            params += [query.cursor.time_unix_nano, query.cursor.seq]
        select = f"SELECT {SELECT_COLUMNS} FROM events{self._index_hint(query)} WHERE {where}"
        order = f" ORDER BY time_unix_nano DESC, seq DESC LIMIT {query.limit + 1}"
        if not self._uses_parts(query):
            with self.read() as conn:
                rows = conn.execute(select + order, params).fetchall()
        else:
            rows = self._search_parts(tenant_id, query, f"{select} AND {PART} = {p}{order}", params)
        events = [row_event(row) for row in rows[: query.limit]]
        next_cursor = None
        if len(rows) > query.limit:
            last = events[-1]
            next_cursor = Cursor(last.time_unix_nano, last.seq)
        return Page(events, next_cursor)

    def _search_parts(self, tenant_id: str, query: EventQuery, part_sql: str, params: list[Any]) -> list[Any]:
        """The first limit + 1 rows, newest first, asking one part at a time in the order of their newest event
        and stopping once no part left can hold a newer row than the ones found (parts follow arrival, so with
        events stored roughly in time order a page usually needs only the newest parts)."""
        p = self.placeholder
        bounds = [f"tenant_id = {p}"]
        bound_params: list[Any] = [tenant_id]
        if query.since is not None:
            bounds.append(f"max_time >= {p}")
            bound_params.append(query.since)
        if query.until is not None:
            bounds.append(f"min_time < {p}")
            bound_params.append(query.until)
        if query.cursor is not None:
            bounds.append(f"min_time <= {p}")
            bound_params.append(query.cursor.time_unix_nano)
        wanted = query.limit + 1
        found: list[Any] = []
        with self.snapshot() as conn:
            parts = conn.execute(
                f"SELECT part, max_time FROM event_parts WHERE {' AND '.join(bounds)} ORDER BY max_time DESC",
                bound_params,
            ).fetchall()
            for part, max_time in parts:
                if len(found) >= wanted and max_time < found[wanted - 1][3]:
                    break
                found += conn.execute(part_sql, [*params, part]).fetchall()
                found.sort(key=lambda row: (row[3], row[0]), reverse=True)
                del found[wanted:]
        return found

    def iterate(self, tenant_id: str, query: EventQuery, page_size: int = 1000) -> Iterator[StoredEvent]:
        """Every matching event, newest first, fetched page by page (for exports)."""
        page_query = query.with_cursor(query.cursor, page_size)
        while True:
            page = self.search(tenant_id, page_query)
            yield from page.events
            if page.next_cursor is None:
                return
            page_query = page_query.with_cursor(page.next_cursor)

    def count(self, tenant_id: str, query: EventQuery) -> int:
        """How many of the tenant's events match `query` (cursor and limit ignored)."""
        self.settle()
        p = self.placeholder
        where, params = self._where(tenant_id, query)
        with self.snapshot() as conn:
            if self._uses_parts(query):
                # the parts as literal values: an IN subquery would not seek the part-led index
                rows = conn.execute(f"SELECT part FROM event_parts WHERE tenant_id = {p}", (tenant_id,))
                parts = [row[0] for row in rows]
                if not parts:
                    return 0
                where += f" AND {PART} IN ({', '.join([p] * len(parts))})"
                params += parts
            sql = f"SELECT COUNT(*) FROM events{self._index_hint(query, ordered=False)} WHERE {where}"
            return int(conn.execute(sql, params).fetchone()[0])

    def get_event(self, tenant_id: str, uid: str) -> StoredEvent | None:
        """The tenant's event with this `log.record.uid`, or None."""
        self.settle()
        p = self.placeholder
        with self.read() as conn:
            row = conn.execute(
                f"SELECT {SELECT_COLUMNS} FROM events WHERE tenant_id = {p} AND uid = {p}", (tenant_id, uid)
            ).fetchone()
        return row_event(row) if row else None

    def events_after(self, tenant_id: str, seq: int, limit: int = 1000) -> list[StoredEvent]:
        """The tenant's events stored after `seq`, in the order they were stored (for `tail`)."""
        self.settle()
        p = self.placeholder
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT {SELECT_COLUMNS} FROM events WHERE seq > {p} AND tenant_id = {p} ORDER BY seq LIMIT {int(limit)}",
                (seq, tenant_id),
            ).fetchall()
        return [row_event(row) for row in rows]

    def last_seq(self) -> int:
        """The highest stored sequence number (0 when empty)."""
        self.settle()
        with self.read() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def delete_older_than(self, cutoff_unix_nano: int, tenant_id: str | None = None) -> int:
        """Delete events with a timestamp before the cutoff, in chunks; return how many were deleted."""
        self.settle()
        p = self.placeholder
        tenant_clause, tenant_params = (f" AND tenant_id = {p}", [tenant_id]) if tenant_id is not None else ("", [])
        deleted = 0
        while True:
            with self.transaction() as conn:
                cursor = conn.execute(
                    f"DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE time_unix_nano < {p}{tenant_clause}"
                    f" LIMIT {DELETE_CHUNK})",
                    [cutoff_unix_nano, *tenant_params],
                )
                count = cursor.rowcount
                if count < DELETE_CHUNK and self.partitioned:
                    # a part whose newest event is older than the cutoff is empty now; its bound may be up to a
                    # PART_TIME_GRAIN later than that event, so the parts below cutoff + grain are checked
                    conn.execute(
                        f"DELETE FROM event_parts WHERE max_time < {p}{tenant_clause} AND NOT EXISTS (SELECT 1"
                        f" FROM events WHERE events.tenant_id = event_parts.tenant_id AND {PART} = event_parts.part)",
                        [cutoff_unix_nano + PART_TIME_GRAIN, *tenant_params],
                    )
            deleted += count
            if count < DELETE_CHUNK:
                return deleted

    def count_older_than(self, cutoff_unix_nano: int, tenant_id: str | None = None) -> int:
        """How many events delete_older_than would delete."""
        self.settle()
        p = self.placeholder
        tenant_clause, tenant_params = (f" AND tenant_id = {p}", [tenant_id]) if tenant_id is not None else ("", [])
        with self.read() as conn:
            row = conn.execute(
                f"SELECT COUNT(*) FROM events WHERE time_unix_nano < {p}{tenant_clause}", [cutoff_unix_nano, *tenant_params]
            ).fetchone()
        return int(row[0])

    # API keys ---------------------------------------------------------------------------------------------

    def put_key(self, key: ApiKey, key_hash: str) -> None:
        """Store a key record under the SHA-256 of its secret (replacing one with the same key_id). Key writes are
        serialized (see _lock_keys), so processes storing the same key at once (`serve --dev-key` started twice on
        one database) all succeed."""
        p = self.placeholder
        with self.transaction() as conn:
            self._lock_keys(conn)
            conn.execute(f"DELETE FROM api_keys WHERE key_id = {p} OR key_hash = {p}", (key.key_id, key_hash))
            conn.execute(
                "INSERT INTO api_keys (key_id, tenant_id, scopes, name, key_hash, created_unix_nano, revoked_unix_nano)"
                f" VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                (key.key_id, key.tenant_id, ",".join(key.scopes), key.name, key_hash, key.created_unix_nano,
                 key.revoked_unix_nano),
            )

    def _lock_keys(self, conn: Any) -> None:
        """Make the transaction the only writer of api_keys until it ends; a no-op where the transaction already is
        the only writer (SQLite's BEGIN IMMEDIATE)."""

    def key_by_hash(self, key_hash: str) -> tuple[ApiKey, str] | None:
        """The key record and stored hash for a secret's SHA-256, or None."""
        p = self.placeholder
        with self.read() as conn:
            row = conn.execute(
                "SELECT key_id, tenant_id, scopes, name, created_unix_nano, revoked_unix_nano, key_hash"
                f" FROM api_keys WHERE key_hash = {p}",
                (key_hash,),
            ).fetchone()
        if row is None:
            return None
        return _row_key(row), row[6]

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Key records (never secrets), of one tenant or all."""
        p = self.placeholder
        sql = "SELECT key_id, tenant_id, scopes, name, created_unix_nano, revoked_unix_nano FROM api_keys"
        params: tuple[Any, ...] = ()
        if tenant_id is not None:
            sql += f" WHERE tenant_id = {p}"
            params = (tenant_id,)
        with self.read() as conn:
            rows = conn.execute(sql + " ORDER BY created_unix_nano, key_id", params).fetchall()
        return [_row_key(row) for row in rows]

    def revoke_key(self, key_id: str, revoked_unix_nano: int, tenant_id: str | None = None) -> bool:
        """Mark a key revoked (optionally only if it belongs to `tenant_id`); False if there is no such key."""
        p = self.placeholder
        sql = f"UPDATE api_keys SET revoked_unix_nano = {p} WHERE key_id = {p} AND revoked_unix_nano IS NULL"
        params: list[Any] = [revoked_unix_nano, key_id]
        if tenant_id is not None:
            sql += f" AND tenant_id = {p}"
            params.append(tenant_id)
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount > 0


def by_tenant(events: Sequence[StoredEvent]) -> dict[str, list[StoredEvent]]:
    """The events of each tenant, in their order."""
    groups: dict[str, list[StoredEvent]] = {}
    for event in events:
        groups.setdefault(event.tenant_id, []).append(event)
    return groups


def _row_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        key_id=row[0], tenant_id=row[1], scopes=tuple(s for s in row[2].split(",") if s), name=row[3],
        created_unix_nano=row[4], revoked_unix_nano=row[5],
    )


DEFAULT_URL = "sqlite:///otel-audit.db"


def open_storage(url: str | None = None, *, migrate: bool = True) -> Storage:
    """Open `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://...` (default: OTEL_AUDIT_STORE_DB,
    else otel-audit.db in the working directory) and bring its schema up to date."""
    url = url or os.environ.get("OTEL_AUDIT_STORE_DB") or DEFAULT_URL
    storage: Storage
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStorage

        path = url[len("sqlite://"):]
        if not path.startswith("/") or len(path) < 2:
            raise StorageError(f"SQLite URL must look like sqlite:///file.db or sqlite:////abs/file.db, got {url!r}")
        storage = SQLiteStorage(path[1:])
    elif url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        storage = PostgresStorage(url)
    else:
        raise StorageError(f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://")
    if migrate:
        storage.migrate()
    return storage
