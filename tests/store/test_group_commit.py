"""GroupCommit: concurrent inserts share one transaction, each caller gets back exactly its own stored events, and
every caller of a failed transaction gets its error (real SQLite storage; its writes are observed, not faked)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest

from otel_audit import semconv
from otel_audit.store import EventQuery, StoredEvent, open_storage
from otel_audit.store.otlp import map_request
from otel_audit.store.sqlite import SQLiteStorage
from otel_audit.store.storage import GroupCommit

from .helpers import audit_attributes, build_request

WAIT = 30


def events(count: int, uids: list[str] | None = None) -> list[StoredEvent]:
    records = [audit_attributes(**({semconv.LOG_RECORD_UID: uid} if uid else {})) for uid in (uids or [None] * count)]
    return map_request(build_request(records), "acme").events


@pytest.fixture
def storage(tmp_path) -> Iterator[SQLiteStorage]:
    store = open_storage(f"sqlite:///{tmp_path}/group.db")
    assert isinstance(store, SQLiteStorage)
    yield store
    store.close()


class HeldWrites:
    """Wraps the storage's group write: writes wait until released; records each group's size; the writes
    numbered in `failures` raise the error given there instead."""

    def __init__(self, write, failures: dict[int, BaseException] | None = None) -> None:
        self.write = write
        self.release = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []
        self.failures = failures or {}

    def __call__(self, batch: list[StoredEvent]) -> list[StoredEvent]:
        self.sizes.append(len(batch))
        self.entered.set()
        assert self.release.wait(WAIT)
        if len(self.sizes) - 1 in self.failures:
            raise self.failures[len(self.sizes) - 1]
        return self.write(batch)


def run_concurrently(group: GroupCommit, held: HeldWrites, batches: list[list[StoredEvent]]) -> list[object]:
    """Insert the first batch, wait until its write holds the writer, queue the others in order, then release."""
    results: list[object] = [None] * len(batches)

    def insert(index: int) -> None:
        try:
            results[index] = group.insert(batches[index])
        except BaseException as exc:  # noqa: BLE001 - compared by the tests
            results[index] = exc

    threads = [threading.Thread(target=insert, args=(index,)) for index in range(len(batches))]
    threads[0].start()
    assert held.entered.wait(WAIT)
    for queued, thread in enumerate(threads[1:], start=1):  # one at a time, so the queue keeps their order
        thread.start()
        deadline = time.monotonic() + WAIT
        while len(group._queue) < queued:
            assert time.monotonic() < deadline, "an insert never reached the queue"
            threading.Event().wait(0.005)
    held.release.set()
    for thread in threads:
        thread.join(WAIT)
    return results


def test_batches_queued_behind_a_write_are_written_together_and_each_caller_gets_its_own(storage) -> None:
    held = HeldWrites(storage._insert_group)
    group = GroupCommit(held)
    shared = "0190f000-0000-7000-8000-000000000001"
    batches = [events(3), events(4), events(2, [shared, "0190f000-0000-7000-8000-000000000002"]),
               events(1, [shared])]
    results = run_concurrently(group, held, batches)
    assert held.sizes == [3, 7]  # the first alone, then the three queued meanwhile in one transaction
    assert [len(result) for result in results] == [3, 4, 2, 0]  # the repeated uid is stored for its first caller
    for batch, result in zip(batches, results):
        assert all(event in batch for event in result) and all(event.seq > 0 for event in result)
    assert storage.count("acme", EventQuery()) == 9


def test_every_caller_of_a_failed_group_gets_its_error_and_later_inserts_work(storage) -> None:
    busy = sqlite3.OperationalError("database is locked")
    held = HeldWrites(storage._insert_group, failures={1: busy})
    group = GroupCommit(held)
    results = run_concurrently(group, held, [events(2), events(2), events(2)])
    assert held.sizes == [2, 4]
    assert len(results[0]) == 2 and results[1] is busy and results[2] is busy
    assert len(group.insert(events(5))) == 5
    assert storage.count("acme", EventQuery()) == 7


def test_a_group_stops_at_max_events_and_the_rest_is_written_next(storage) -> None:
    held = HeldWrites(storage._insert_group)
    group = GroupCommit(held, max_events=5)
    results = run_concurrently(group, held, [events(1), events(3), events(3), events(2)])
    assert held.sizes == [1, 3, 5]  # 3 + 3 would pass the limit; the next group takes the two remaining batches
    assert [len(result) for result in results] == [1, 3, 3, 2]
