"""Searches on the part-led indexes (actor and resource ids, see storage.PART_SHIFT) against a plain sort of
every stored event: events spread over several parts, stored out of time order, with equal times across parts,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import random

import pytest

from otel_audit import semconv
from otel_audit.store import EventQuery, Storage, open_storage
from otel_audit.store.events import Cursor
from otel_audit.store.storage import PART_SHIFT

from .helpers import audit_attributes
from .test_storage import BASE, ingest

SECOND = 1_000_000_000


def continue_from(storage: Storage, seq: int) -> None:
    """Make the next stored event's seq `seq + 1` (how else would a test reach the next part)."""
    with storage.transaction() as conn:
        if storage.dialect == "sqlite":
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (seq,))
        else:
            conn.execute("SELECT setval(pg_get_serial_sequence('events', 'seq'), %s)", (seq,))


def store_spread(storage: Storage, rng: random.Random) -> None:
    """Batches of both tenants across parts 0-3, a batch straddling each boundary, with times drawn from a
    narrow overlapping range (a later part often holds older events; equal times are common)."""
    for part_start in (0, 1, 3):
        if part_start:
            continue_from(storage, (part_start << PART_SHIFT) - 3)
        for tenant in ("acme", "globex", "acme"):
            records = [
                audit_attributes(
                    rng.choice(["document.read", "document.update"]),
                    **{semconv.USER_ID: rng.choice(["alice", "bob"]),
                       semconv.AUDIT_RESOURCE_ID: rng.choice(["doc-1", "doc-2"]),
                       semconv.AUDIT_OUTCOME: rng.choice(["success", "failure"])},
                )
                for _ in range(rng.randrange(4, 9))
            ]
            times = [BASE + rng.randrange(40) * SECOND for _ in records]
            ingest(storage, records, tenant=tenant, times=times)


def every_page(storage: Storage, tenant: str, query: EventQuery) -> list[str]:
    uids: list[str] = []
    cursor: Cursor | None = None
    for _ in range(200):
        page = storage.search(tenant, query.with_cursor(cursor))
        uids += [event.uid for event in page.events]
        cursor = page.next_cursor
        if cursor is None:
            return uids
    raise AssertionError("pagination did not end")


FILTERS = [
    {"actor_id": "alice"},
    {"resource_id": "doc-1"},
    {"resource_id": "doc-2", "actor_id": "bob"},
    {"actor_id": "bob", "action": "document.update", "outcome": "failure"},
    {"actor_id": "alice", "since": BASE + 10 * SECOND, "until": BASE + 30 * SECOND},
    {"resource_id": "doc-9"},
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_part_led_searches_page_through_exactly_what_a_full_sort_finds(storage: Storage, seed: int) -> None:
    store_spread(storage, random.Random(seed))
    acme_parts = {event.seq >> PART_SHIFT for event in storage.search("acme", EventQuery(limit=1000)).events}
    assert acme_parts == {0, 1, 2, 3}
    for tenant in ("acme", "globex"):
        everything = storage.search(tenant, EventQuery(limit=1000)).events  # time-ordered index, no parts
        for filters in FILTERS:
            expected = [
                event.uid for event in everything
                if all(getattr(event, name) == value for name, value in filters.items() if name not in ("since", "until"))
                and filters.get("since", 0) <= event.time_unix_nano < filters.get("until", 2**63)
            ]
            for limit in (1, 2, 3, 7, 1000):
                assert every_page(storage, tenant, EventQuery(limit=limit, **filters)) == expected, (filters, limit)
            assert storage.count(tenant, EventQuery(**filters)) == len(expected), filters


def test_retention_forgets_the_parts_it_emptied(storage: Storage) -> None:
    ingest(storage, [audit_attributes(**{semconv.USER_ID: "alice"}) for _ in range(3)], times=[BASE] * 3)
    continue_from(storage, 1 << PART_SHIFT)
    newer = ingest(storage, [audit_attributes(**{semconv.USER_ID: "alice"}) for _ in range(2)],
                   times=[BASE + 5 * SECOND, BASE + 6 * SECOND])
    assert storage.delete_older_than(BASE + SECOND) == 3
    with storage.read() as conn:
        parts = conn.execute("SELECT part FROM event_parts").fetchall()
    assert [row[0] for row in parts] == [1]
    found = storage.search("acme", EventQuery(actor_id="alice"))
    assert [event.uid for event in found.events] == [event.uid for event in reversed(newer)]
    assert storage.count("acme", EventQuery(actor_id="alice")) == 2


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/old.db"
    return str(request.getfixturevalue("new_postgres_database")())


def test_a_database_from_before_the_parts_is_upgraded_when_opened(database_url: str) -> None:
    url = database_url
    old = open_storage(url, migrate=False)
    old.partitioned = ()  # the schema and ingest of the earlier version
    old.migrate()
    stored = ingest(old, [audit_attributes(**{semconv.AUDIT_RESOURCE_ID: "doc-1"}) for _ in range(3)],
                    times=[BASE + index * SECOND for index in range(3)])
    continue_from(old, (1 << PART_SHIFT) - 1)
    stored += ingest(old, [audit_attributes(**{semconv.AUDIT_RESOURCE_ID: "doc-1"}) for _ in range(2)],
                     times=[BASE - SECOND, BASE + 9 * SECOND])
    old.close()
    upgraded = open_storage(url)
    try:
        with upgraded.read() as conn:
            if upgraded.dialect == "sqlite":
                index_sql = conn.execute(
                    "SELECT sql FROM sqlite_master WHERE name = 'events_tenant_resource_id'").fetchone()[0]
            else:
                index_sql = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'events_tenant_resource_id'"
                                         ).fetchone()[0]
            parts = conn.execute("SELECT part, min_time, max_time FROM event_parts ORDER BY part").fetchall()
        assert "seq >> 16" in index_sql
        assert [tuple(row) for row in parts] == [(0, BASE, BASE + 2 * SECOND), (1, BASE - SECOND, BASE + 9 * SECOND)]
        expected = [event.uid for event in sorted(stored, key=lambda event: (event.time_unix_nano, event.seq), reverse=True)]
        assert every_page(upgraded, "acme", EventQuery(limit=2, resource_id="doc-1")) == expected
    finally:
        upgraded.close()


def test_a_part_whose_newest_event_ties_the_bound_is_still_asked(storage: Storage) -> None:
    """Two boundaries: a later part's newest event at exactly the time of the page's last candidate (and a higher
    seq, so it ranks first among equal times), and a part whose newest event is exactly at `since`."""
    alice = {semconv.USER_ID: "alice"}
    older = ingest(storage, [audit_attributes(**alice) for _ in range(3)],
                   times=[BASE + 9 * SECOND, BASE + 5 * SECOND, BASE + 5 * SECOND])
    continue_from(storage, 1 << PART_SHIFT)
    [tie] = ingest(storage, [audit_attributes(**alice)], times=[BASE + 5 * SECOND])
    continue_from(storage, 2 << PART_SHIFT)
    [at_since] = ingest(storage, [audit_attributes(**alice)], times=[BASE + 2 * SECOND])
    page = storage.search("acme", EventQuery(limit=2, actor_id="alice"))
    assert [event.uid for event in page.events] == [older[0].uid, tie.uid]
    since = storage.search("acme", EventQuery(actor_id="alice", since=BASE + 2 * SECOND))
    assert [event.uid for event in since.events] == [older[0].uid, tie.uid, older[2].uid, older[1].uid, at_since.uid]
