"""A database that is busy or has lost its connections answers 503 + Retry-After (exporters and collectors retry
those), never 500 (which they drop); the retried batch is then stored once, and the store keeps serving."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from otel_audit.store import EventQuery, Storage, create_app, journal, open_storage
from otel_audit.store.sqlite import SQLiteStorage

from .conftest import Tenant
from .helpers import ServerThread, audit_attributes, build_request

PROTOBUF = "application/x-protobuf"
MAX_ATTEMPTS = 20


def post(server: ServerThread, tenant: Tenant, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/logs", content=body, headers=tenant.headers(content_type=PROTOBUF), timeout=30)


def assert_retryable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "storage_unavailable"


def terminate_other_sessions(admin) -> int:
    """Terminate every other session of the database (the store's pooled connections); how many there were."""
    return admin.execute(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()) AS killed"
    ).fetchone()[0]


def post_until_stored(server: ServerThread, tenant: Tenant, body: bytes) -> list[int]:
    """Post until the body is stored; every refusal before that must be a retryable 503."""
    statuses = []
    for _ in range(MAX_ATTEMPTS):
        response = post(server, tenant, body)
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        assert_retryable(response)
    return statuses


def test_sqlite_journal_that_cannot_be_synced_answers_503_then_stores_the_retry_once(tmp_path, monkeypatch) -> None:
    """A journal append the disk refuses (here its fdatasync fails once, as on EIO) is not accepted: 503, and
    the retry goes to a new file and is stored once."""
    storage = SQLiteStorage(str(tmp_path / "store.db"), busy_timeout=0.2)
    storage.migrate()
    tenant = Tenant(storage, "acme")
    body = build_request([audit_attributes(), audit_attributes()]).SerializeToString()
    failures = [OSError(errno.EIO, "Input/output error")]
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fdatasync(fd)

    monkeypatch.setattr(journal.os, "fdatasync", fdatasync)
    try:
        with ServerThread(create_app(storage)) as server:
            assert_retryable(post(server, tenant, body))
            assert post(server, tenant, body).status_code == 200
            assert post(server, tenant, body).status_code == 200  # a second retry is a duplicate: skipped
        assert storage.count("acme", EventQuery()) == 2
    finally:
        storage.close()
    assert os.listdir(tmp_path / "store.db-ingest.d") == []


def test_sqlite_database_locked_by_another_writer_still_accepts_ingest_and_stores_it_once_free(tmp_path) -> None:
    """Accepted batches wait in the journal while another writer holds the database (a long retention run,
    say), and are stored once it lets go; reads wait for them."""
    path = str(tmp_path / "store.db")
    storage = SQLiteStorage(path, busy_timeout=0.2)
    storage.migrate()
    tenant = Tenant(storage, "acme")
    body = build_request([audit_attributes(), audit_attributes()]).SerializeToString()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        with ServerThread(create_app(storage)) as server:
            blocker.execute("BEGIN IMMEDIATE")
            assert post(server, tenant, body).status_code == 200
            assert post(server, tenant, body).status_code == 200
            assert_retryable(httpx.get(f"{server.url}/v1/events", headers=tenant.headers(), timeout=30))
            blocker.execute("ROLLBACK")
            stats = httpx.get(f"{server.url}/v1/stats", headers=tenant.headers(), timeout=30).json()
            assert stats["ingest"] == {
                "received": 4, "stored": 2, "duplicate": 2, "rejected": 0, "ignored": 0}
        assert storage.count("acme", EventQuery()) == 2
    finally:
        blocker.close()
        storage.close()


@dataclass
class PostgresStore:
    """A store server on a fresh PostgreSQL database, and an autocommit admin session on that database."""

    storage: Storage
    tenant: Tenant
    server: ServerThread
    admin: Any


@pytest.fixture
def postgres_store(new_postgres_database) -> Iterator[PostgresStore]:
    psycopg = pytest.importorskip("psycopg")
    url = new_postgres_database()
    storage = open_storage(url)
    try:
        with ServerThread(create_app(storage)) as server, psycopg.connect(url, autocommit=True) as admin:
            yield PostgresStore(storage, Tenant(storage, "acme"), server, admin)
    finally:
        storage.close()


@pytest.mark.postgres
def test_postgresql_connections_lost_answer_503_until_the_pool_reconnects(postgres_store: PostgresStore) -> None:
    store = postgres_store
    assert post(store.server, store.tenant, build_request([audit_attributes()]).SerializeToString()).status_code == 200
    assert terminate_other_sessions(store.admin) >= 1
    # each broken pooled connection fails one request, then is replaced
    statuses = post_until_stored(store.server, store.tenant, build_request([audit_attributes()]).SerializeToString())
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert store.storage.count("acme", EventQuery()) == 2


@pytest.mark.postgres
def test_postgresql_turned_read_only_answers_503_until_it_takes_writes_again(postgres_store: PostgresStore) -> None:
    """A standby or a failover in progress refuses writes (ReadOnlySqlTransaction): retryable, not a 500."""
    store, admin = postgres_store, postgres_store.admin
    body = build_request([audit_attributes()]).SerializeToString()
    database = admin.execute("SELECT current_database()").fetchone()[0]
    admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    terminate_other_sessions(admin)  # the pool reconnects, and its new sessions are read-only
    for _ in range(3):
        assert_retryable(post(store.server, store.tenant, body))
    admin.execute("SET default_transaction_read_only = off")
    admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    terminate_other_sessions(admin)
    statuses = post_until_stored(store.server, store.tenant, body)
    assert statuses[-1] == 200, statuses
    assert store.storage.count("acme", EventQuery()) == 1
