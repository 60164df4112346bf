"""SQLite's WAL stays bounded under steady ingest: it starts over only when a transaction begins after a
checkpoint copied every frame, which back-to-back transactions never leave room for, so the checkpointer
restarts it once it holds more than WAL_SIZE_LIMIT."""

from __future__ import annotations

import os
import time

import pytest

from otel_audit.store import EventQuery
from otel_audit.store import sqlite as sqlite_store
from otel_audit.store.otlp import PROTOBUF, ingest_request
from otel_audit.store.sqlite import SQLiteStorage

from .helpers import audit_attributes, build_request

LIMIT = 512 * 1024


def test_back_to_back_transactions_do_not_grow_the_wal_without_bound(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "WAL_SIZE_LIMIT", LIMIT)
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_INTERVAL", 0.02)
    body = build_request([audit_attributes("document.read") for _ in range(100)]).SerializeToString()
    store = SQLiteStorage(str(tmp_path / "store.db"))
    store.migrate()
    wal = tmp_path / "store.db-wal"
    largest, stored, deadline = 0, 0, time.monotonic() + 30
    try:
        while stored < 60_000 and time.monotonic() < deadline:  # about 25 MB of WAL frames in all
            for event in (events := ingest_request(body, PROTOBUF, "acme").events):
                event.uid = f"{stored}-{event.uid}"
                stored += 1
            assert len(store.insert_events(events)) == len(events)
            largest = max(largest, os.path.getsize(wal))
        assert store.count("acme", EventQuery()) == stored
    finally:
        store.close()
    # without the restart the WAL passed 1 GB here (100-event transactions write about 17 KB each per event)
    assert stored >= 20_000
    assert largest < 64 * 1024 * 1024
