"""Fixtures shared by every test area: a real OTLP receiver and an audit pipeline pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
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
