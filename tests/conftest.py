"""Fixtures shared by every test area: a real OTLP receiver and an audit pipeline pointed at it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import otel_audit
from otel_audit.testing import OTLPReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A real OTLP/HTTP + OTLP/gRPC logs receiver on 127.0.0.1 (random ports)."""
    with OTLPReceiver(grpc=True) as receiver:
        yield receiver


@pytest.fixture
def audit_pipeline(otlp_receiver: OTLPReceiver, tmp_path: Path) -> Iterator[otel_audit.AuditPipeline]:
    """The default audit pipeline exporting over OTLP/HTTP to `otlp_receiver`, spooling under tmp_path."""
    pipeline = otel_audit.configure(
        service_name="test-service",
        endpoint=otlp_receiver.endpoint,
        flush_interval=0.05,
        spool_dir=str(tmp_path / "spool"),
    )
    yield pipeline
    otel_audit.shutdown()


@pytest.fixture(autouse=True)
def _no_pipeline_leaks() -> Iterator[None]:
    """Each test starts and ends without a configured audit pipeline."""
    yield
    otel_audit.shutdown()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[object]:
    """One throwaway PostgreSQL server for the whole session (initdb in a temporary directory, 127.0.0.1)."""
    from otel_audit.store.pgcluster import PostgresCluster, PostgresUnavailable

    try:
        cluster = PostgresCluster(durable=False)
    except PostgresUnavailable as exc:
        pytest.skip(f"{exc}")
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def new_postgres_database(postgres_cluster) -> Callable[[], str]:
    """Create a fresh database on the session's PostgreSQL server and return its URL, one per call."""
    import psycopg

    numbers = itertools.count()

    def create() -> str:
        name = f"test_{next(numbers)}"
        with psycopg.connect(postgres_cluster.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return postgres_cluster.url.rsplit("/", 1)[0] + "/" + name

    return create
