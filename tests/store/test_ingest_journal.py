"""SQLite's ingest journal: an accepted batch is durable before ingest answers, is stored exactly once (by
whichever process merges it), survives the process dying before the merge, and is visible to every later read."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from otel_audit.store import EventQuery
from otel_audit.store.events import StoredEvent
from otel_audit.store import journal
from otel_audit.store.otlp import PROTOBUF, ingest_request
from otel_audit.store.sqlite import SQLiteStorage
from otel_audit.store.storage import StorageError, event_row

from .helpers import audit_attributes, build_request

ROOT = Path(__file__).resolve().parents[2]


def mapped(count: int, tenant: str = "acme", **overrides: object) -> list[StoredEvent]:
    records = [audit_attributes("document.read", **overrides) for _ in range(count)]
    return ingest_request(build_request(records).SerializeToString(), PROTOBUF, tenant).events


class Announcements:
    """A stored-events listener that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[StoredEvent], int]] = []

    def __call__(self, tenant_id: str, stored: list[StoredEvent], duplicates: int) -> None:
        self.calls.append((tenant_id, stored, duplicates))


@contextmanager
def opened(path: Path | str, *, merge_in_background: bool = False) -> Iterator[SQLiteStorage]:
    """A migrated SQLite store at `path`, closed (which merges the journal) on the way out."""
    store = SQLiteStorage(str(path), merge_in_background=merge_in_background)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def storage(tmp_path) -> Iterator[SQLiteStorage]:
    with opened(tmp_path / "store.db") as store:
        yield store


def test_batches_wait_in_the_journal_until_merged_then_each_is_stored_once_in_submit_order(storage) -> None:
    heard = Announcements()
    storage.add_stored_listener(heard)
    first, second = mapped(3), mapped(2)
    storage.submit_events(first)
    storage.submit_events(second)
    storage.submit_events(first)  # an exporter's retry
    assert heard.calls == []
    assert [entry.events for entry in storage.journaled()] == [3, 2, 3]

    assert storage.merge_journal() == 5
    assert [(tenant, [event.uid for event in stored], duplicates) for tenant, stored, duplicates in heard.calls] == [
        ("acme", [event.uid for event in first], 0),
        ("acme", [event.uid for event in second], 0),
        ("acme", [], 3),
    ]
    seqs = [event.seq for event in first + second]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert storage.journaled() == []
    assert storage.merge_journal() == 0


def test_every_read_first_merges_what_is_journaled(storage) -> None:
    events = mapped(4)
    storage.submit_events(events)
    page = storage.search("acme", EventQuery())
    assert sorted(event.uid for event in page.events) == sorted(event.uid for event in events)
    assert storage.journaled() == []


def test_one_submit_of_two_tenants_journals_a_batch_for_each(storage) -> None:
    heard = Announcements()
    storage.add_stored_listener(heard)
    storage.submit_events(mapped(2, "acme") + mapped(1, "globex"))
    storage.merge_journal()
    assert sorted((tenant, len(stored)) for tenant, stored, _ in heard.calls) == [("acme", 2), ("globex", 1)]
    assert storage.count("globex", EventQuery()) == 1


def test_a_batch_merged_by_another_process_is_announced_there_from_its_rows(tmp_path) -> None:
    path = tmp_path / "store.db"
    heard_accepting, heard_merging = Announcements(), Announcements()
    with opened(path) as accepting, opened(path) as merging:
        accepting.add_stored_listener(heard_accepting)
        merging.add_stored_listener(heard_merging)
        events = mapped(3, **{"audit.metadata": {"plan": "pro", "tags": ["a", "b"]}})
        accepting.submit_events(events)
        assert merging.merge_journal() == 3
        [(tenant, stored, duplicates)] = heard_merging.calls
        assert (tenant, duplicates) == ("acme", 0)
        for original, rebuilt in zip(events, stored):
            assert rebuilt.uid == original.uid and rebuilt.seq > 0
            assert rebuilt.attributes == original.attributes and rebuilt.resource == original.resource
        assert accepting.merge_journal() == 0
        assert heard_accepting.calls == []
        assert accepting.journal.held() == 0  # the merged batch's events are let go


def test_a_read_waits_for_the_listeners_of_another_process_merge_in_flight(tmp_path) -> None:
    """The other process has committed the merge but its listeners (the ingest hooks: alert rules) still run; a
    read here must not answer before they are done (two storages: two open lock files, as two processes)."""
    path = tmp_path / "store.db"
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_hook(tenant_id: str, stored: list[StoredEvent], duplicates: int) -> None:
        entered.set()
        release.wait(30)
        order.append("hook done")

    with opened(path) as merging, opened(path) as reading:
        merging.add_stored_listener(slow_hook)
        merging.submit_events(mapped(2))
        merger = threading.Thread(target=merging.settle)
        merger.start()
        assert entered.wait(30)
        reader = threading.Thread(target=lambda: (reading.settle(), order.append("read settled")))
        reader.start()
        reader.join(0.5)  # time for a read that did not wait to finish first
        release.set()
        merger.join(30)
        reader.join(30)
        assert order == ["hook done", "read settled"]
        assert reading.count("acme", EventQuery()) == 2


def test_a_batch_accepted_by_a_process_that_dies_before_merging_is_stored_at_the_next_start(tmp_path) -> None:
    path = tmp_path / "store.db"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from store.helpers import audit_attributes, build_request
        from otel_audit.store.otlp import PROTOBUF, ingest_request
        from otel_audit.store.sqlite import SQLiteStorage
        storage = SQLiteStorage({str(path)!r}, merge_in_background=False)
        storage.migrate()
        records = [audit_attributes("user.login") for _ in range(7)]
        events = ingest_request(build_request(records).SerializeToString(), PROTOBUF, "acme").events
        storage.submit_events(events)
        print(",".join(event.uid for event in events), flush=True)
        os._exit(0)  # dies with the batch journaled and not merged: no close, no merge
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    accepted = result.stdout.strip().split(",")
    assert len(accepted) == 7

    with opened(path) as reopened:
        assert [entry.events for entry in reopened.journaled()] == [7]
        found = reopened.search("acme", EventQuery(limit=100)).events
        assert sorted(event.uid for event in found) == sorted(accepted)


def test_batches_left_in_a_journal_of_the_earlier_format_are_taken_over_and_stored_once(tmp_path) -> None:
    """The journal was a SQLite file (`<db>-ingest`, a `batches` table) before it was a file per process: a
    store opened next to one merges the batches beyond the merged position and removes the file."""
    path = str(tmp_path / "store.db")
    merged_before, waiting = mapped(2), mapped(3)
    with opened(path) as first:
        first.submit_events(merged_before)
    legacy = sqlite3.connect(path + "-ingest", isolation_level=None)
    legacy.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL,"
                   " events INTEGER NOT NULL, rows BLOB NOT NULL)")
    for entry_id, batch in ((1, merged_before), (2, waiting)):
        legacy.execute("INSERT INTO batches VALUES (?, 'acme', ?, ?)",
                       (entry_id, len(batch), orjson.dumps([event_row(event) for event in batch])))
    legacy.close()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("UPDATE ingest_journal_position SET position = 1")

    with opened(path) as second:
        assert not os.path.exists(path + "-ingest")
        assert [entry.events for entry in second.journaled()] == [3]
        assert second.count("acme", EventQuery()) == 5
        assert {event.uid for event in second.iterate("acme", EventQuery())} == {
            event.uid for event in merged_before + waiting}


def test_the_background_merger_stores_batches_without_a_read(tmp_path) -> None:
    heard = Announcements()
    with opened(tmp_path / "store.db", merge_in_background=True) as storage:
        storage.add_stored_listener(heard)
        storage.submit_events(mapped(5))
        for _ in range(200):  # bounded: the merger is woken by the submit
            if heard.calls:
                break
            storage._closed.wait(0.05)
        assert [(tenant, len(stored)) for tenant, stored, _ in heard.calls] == [("acme", 5)]


def test_close_merges_what_is_journaled(tmp_path) -> None:
    with opened(tmp_path / "store.db") as storage:
        storage.submit_events(mapped(6))
    assert os.listdir(tmp_path / "store.db-ingest.d") == []
    reopened = SQLiteStorage(str(tmp_path / "store.db"), merge_in_background=False)
    try:
        assert reopened.journaled() == []
        assert reopened.last_seq() == 6
    finally:
        reopened.close()


def test_a_merged_file_whose_deletion_was_lost_is_not_merged_again(storage, monkeypatch) -> None:
    """How far each file is merged commits with the events: dying before a merged file is deleted (here the
    deletion is skipped) must not store or announce its batches a second time."""
    heard = Announcements()
    storage.add_stored_listener(heard)
    storage.submit_events(mapped(3))
    storage.journal.close_file()
    with monkeypatch.context() as patch:
        patch.setattr(storage.journal, "release", lambda merged: [])
        assert storage.merge_journal() == 3
    assert len(os.listdir(storage.journal.directory)) == 1
    assert storage.merge_journal() == 0
    assert os.listdir(storage.journal.directory) == []
    assert len(heard.calls) == 1
    assert storage.count("acme", EventQuery()) == 3


def test_a_record_repeated_within_one_batch_is_stored_once_and_counted_as_a_duplicate(storage) -> None:
    heard = Announcements()
    storage.add_stored_listener(heard)
    events = mapped(2)
    storage.submit_events([*events, events[0]])
    storage.merge_journal()
    [(tenant, stored, duplicates)] = heard.calls
    assert ([event.uid for event in stored], duplicates) == ([event.uid for event in events], 1)


def test_a_row_skipped_for_anything_but_a_duplicate_fails_the_merge_and_stays_journaled(storage) -> None:
    """The insert ignores conflicts (no statement journal); a row it skipped must have been stored before, so a
    row SQLite refused for another reason (here a NULL event name) is an error, never a counted duplicate."""
    heard = Announcements()
    storage.add_stored_listener(heard)
    good, bad = mapped(2)
    bad.event_name = None  # type: ignore[assignment]
    storage.submit_events([good, bad])
    with pytest.raises(StorageError, match=bad.uid):
        storage.merge_journal()
    assert heard.calls == []
    assert len(storage.journaled()) == 1
    with storage.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_an_app_stops_listening_to_its_storage_when_it_shuts_down(storage) -> None:
    from otel_audit.store import create_app

    app = create_app(storage)
    assert len(storage._listeners) == 1
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return incoming.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert storage._listeners == ()


def journal_files(storage: SQLiteStorage) -> list[str]:
    return sorted(name for name in os.listdir(storage.journal.directory) if name.endswith(journal.SUFFIX))


def test_a_process_starts_a_new_file_past_the_rotation_size_and_merged_inactive_files_are_deleted(
    storage, monkeypatch
) -> None:
    monkeypatch.setattr(journal, "ROTATE_BYTES", 1)  # every batch after the first starts a file
    batches = [mapped(2) for _ in range(3)]
    for batch in batches:
        storage.submit_events(batch)
    assert len(journal_files(storage)) == 3
    assert storage.merge_journal() == 6
    assert journal_files(storage) == [storage.journal.own_file]  # the active one stays
    assert [event.seq for event in batches[0] + batches[1] + batches[2]] == sorted(
        event.seq for event in batches[0] + batches[1] + batches[2])


def test_another_process_active_file_is_merged_but_kept_until_that_process_lets_go(tmp_path) -> None:
    path = tmp_path / "store.db"
    with opened(path) as appending, opened(path) as merging:
        appending.submit_events(mapped(2))
        assert merging.merge_journal() == 2
        assert journal_files(merging) == [appending.journal.own_file]
        appending.submit_events(mapped(1))
        assert merging.merge_journal() == 1
        appending.close()
        assert merging.merge_journal() == 0
        assert journal_files(merging) == []
        assert merging.count("acme", EventQuery()) == 3


def write_orphan(directory: str, *records: bytes) -> str:
    """A journal file no process holds (as one whose process died), holding `records` back to back."""
    os.makedirs(directory, exist_ok=True)
    name = f"99999-{os.urandom(6).hex()}{journal.SUFFIX}"
    with open(os.path.join(directory, name), "wb") as file:
        for record in records:
            file.write(record)
    return name


def record_of(events: list[StoredEvent], tenant: str = "acme") -> bytes:
    return journal.encode_record(tenant, len(events), orjson.dumps([event_row(event) for event in events]))


def test_an_orphan_file_cut_short_by_a_crash_is_merged_to_its_last_whole_batch_then_deleted(tmp_path, caplog) -> None:
    path = tmp_path / "store.db"
    whole, cut = mapped(2), mapped(3)
    name = write_orphan(str(path) + "-ingest.d", record_of(whole), record_of(cut)[:-10])
    with opened(path) as storage:
        assert storage.merge_journal() == 2
        assert journal_files(storage) == []
        assert {event.uid for event in storage.iterate("acme", EventQuery())} == {event.uid for event in whole}
    assert any(name in message and "not a whole batch" in message for message in caplog.messages)


def test_damaged_bytes_in_an_orphan_file_are_skipped_and_reported_and_the_batches_around_them_stored(
    tmp_path, caplog
) -> None:
    path = tmp_path / "store.db"
    before, damaged, after = mapped(2), mapped(2), mapped(3)
    broken = bytearray(record_of(damaged))
    broken[40] ^= 0xFF  # a flipped byte in the payload: the CRC no longer matches
    name = write_orphan(str(path) + "-ingest.d", record_of(before), bytes(broken), record_of(after))
    with opened(path) as storage:
        assert storage.merge_journal() == 5
        assert {event.uid for event in storage.iterate("acme", EventQuery())} == {
            event.uid for event in before + after}
        assert journal_files(storage) == []
    start = len(record_of(before))
    assert any(f"{name}: bytes {start}-{start + len(broken)} are damaged" in message for message in caplog.messages)


def test_a_batch_still_being_appended_ends_what_a_merger_reads_of_an_active_file(tmp_path) -> None:
    whole, partial = mapped(2), mapped(2)
    name = write_orphan(str(tmp_path), record_of(whole), record_of(partial)[:30])
    read = journal.read_records(str(tmp_path / name), 0, 100, active=True)
    assert [entry.events for entry in read.entries] == [2] and read.finished_at is None
    read = journal.read_records(str(tmp_path / name), 0, 100, active=False)
    assert [entry.events for entry in read.entries] == [2] and read.finished_at == len(record_of(whole))


def test_a_file_a_process_died_creating_is_removed_by_the_next_merge(storage) -> None:
    left = os.path.join(storage.journal.directory, f".99999-{os.urandom(6).hex()}{journal.SUFFIX}.new")
    open(left, "wb").close()
    storage.submit_events(mapped(1))
    assert storage.merge_journal() == 1
    assert not os.path.exists(left)
