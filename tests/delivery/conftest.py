"""Fixtures for delivery tests: a real OTLP receiver on 127.0.0.1, a private spool directory, and helpers to run
emitting processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource

from otel_audit.config import AuditSettings
from otel_audit.delivery import DurableLogRecordProcessor
from otel_audit.testing.receiver import OTLPReceiver

HERE = Path(__file__).parent
EMITTER = HERE / "emitter.py"


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Pipeline:
    """A LoggerProvider whose only processor is a DurableLogRecordProcessor, for tests of the delivery stage."""

    def __init__(self, **settings: Any) -> None:
        retry = {key: settings.pop(key) for key in ("retry_initial", "retry_max", "shutdown_timeout") if key in settings}
        self.settings = AuditSettings.resolve(**settings)
        self.processor = DurableLogRecordProcessor(self.settings, **retry)
        self.provider = LoggerProvider(resource=Resource.create({"service.name": "delivery-test"}), shutdown_on_exit=False)
        self.provider.add_log_record_processor(self.processor)
        self.logger = self.provider.get_logger("delivery-test", "1.0")
        self.sequence = 0

    def emit(self, **attributes: Any) -> int:
        """Emit one record with a sequence number (`seq`); returns the number."""
        self.sequence += 1
        self.logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                event_name="audit.test.event",
                attributes={"audit.action": "test.event", "log.record.uid": f"uid-{self.sequence}", "seq": self.sequence, **attributes},
            )
        )
        return self.sequence

    def shutdown(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def make_pipeline(spool_dir: Path) -> Iterator[Callable[..., Pipeline]]:
    pipelines: list[Pipeline] = []

    def make(**settings: Any) -> Pipeline:
        settings.setdefault("spool_dir", str(spool_dir))
        settings.setdefault("flush_interval", 0.05)
        settings.setdefault("retry_initial", 0.05)
        settings.setdefault("retry_max", 0.5)
        settings.setdefault("shutdown_timeout", 2.0)
        pipeline = Pipeline(**settings)
        pipelines.append(pipeline)
        return pipeline

    yield make
    for pipeline in pipelines:
        pipeline.shutdown()


def start_emitter(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Run tests/delivery/emitter.py in a new interpreter; it prints `uid <uid>` after each emit returned."""
    return subprocess.Popen(
        [sys.executable, str(EMITTER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout` seconds passed (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return predicate()


@pytest.fixture
def make_spool() -> Iterator[Callable[..., Any]]:
    """Spools made directly, outside any pipeline. At teardown each is retired from the process-wide delivery
    stats and released, as the delivery processor does with its own at shutdown (a spool left to the garbage
    collector would report its pending bytes into later tests' gauges until a collection happened to run)."""
    from otel_audit import stats
    from otel_audit.delivery.spool import Spool

    spools: list[Spool] = []

    def make(directory: Path, **options: Any) -> Spool:
        spool = Spool(directory, **options)
        spools.append(spool)
        return spool

    yield make
    for spool in spools:
        stats.STATS.retire_source(spool._counters)
        spool.release()
