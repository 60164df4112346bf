"""Fixtures of the store tests: storage on SQLite and on a throwaway PostgreSQL server, a served store app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_audit.store import Storage, create_app, create_key, open_storage

from .helpers import ServerThread


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path) -> Iterator[Storage]:
    """A fresh, migrated storage: the same tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("new_postgres_database")()
    store = open_storage(url)
    yield store
    store.close()


class Tenant:
    """A tenant with keys of each scope combination the tests need."""

    def __init__(self, storage: Storage, tenant_id: str) -> None:
        self.id = tenant_id
        self.key = create_key(storage, tenant_id, ["ingest", "read", "admin"], "all")[1]
        self.ingest_key = create_key(storage, tenant_id, ["ingest"], "ingest only")[1]
        self.read_key = create_key(storage, tenant_id, ["read"], "read only")[1]

    def headers(self, key: str | None = None, content_type: str | None = None) -> dict[str, str]:
        headers = {"authorization": f"Bearer {key or self.key}"}
        if content_type:
            headers["content-type"] = content_type
        return headers


@pytest.fixture
def served(storage: Storage) -> Iterator[tuple[ServerThread, Tenant, Tenant]]:
    """The store app on a real socket over `storage`, with tenants acme and globex."""
    acme, globex = Tenant(storage, "acme"), Tenant(storage, "globex")
    with ServerThread(create_app(storage)) as server:
        yield server, acme, globex
