"""Fixtures of the alert tests: storage on SQLite and on a throwaway PostgreSQL, a served store, a webhook receiver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from otel_audit.store import Storage, create_app, create_key, open_storage
from otel_audit.store.webhooks import WebhookSettings

from .helpers import Api, StoreServer, WebhookReceiver

FAST = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "poll_seconds": 0.05, "timeout_seconds": 5.0}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The URL of a fresh database: the tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("new_postgres_database")()


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    store = open_storage(db_url)
    yield store
    store.close()


@dataclass
class Served:
    """A running store with tenants acme and globex (admin keys) and a webhook receiver."""

    server: StoreServer
    storage: Storage
    acme: Api
    globex: Api
    receiver: WebhookReceiver


def tenant_api(storage: Storage, server: StoreServer, tenant: str) -> Api:
    return Api(server.url, create_key(storage, tenant, ["ingest", "read", "admin"], "alert tests")[1])


@pytest.fixture
def serve() -> Iterator[Callable[..., StoreServer]]:
    """Start stores over a storage (allowlist 127.0.0.1 and fast retries unless told otherwise); stopped at the end."""
    started: list[StoreServer] = []

    def start(storage: Storage, **settings: object) -> StoreServer:
        options = {"allow_hosts": ("127.0.0.1",), **FAST, **settings}
        server = StoreServer(create_app(storage, webhooks=WebhookSettings(**options))).__enter__()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__()


@pytest.fixture
def served(storage: Storage, serve: Callable[..., StoreServer]) -> Iterator[Served]:
    with WebhookReceiver() as receiver:
        server = serve(storage)
        acme, globex = tenant_api(storage, server, "acme"), tenant_api(storage, server, "globex")
        yield Served(server, storage, acme, globex, receiver)
        acme.close()
        globex.close()
