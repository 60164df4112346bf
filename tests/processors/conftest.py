"""Shared helpers for the processor tests: the corpus and a configured pipeline ending in an in-memory capture."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import otel_audit
from otel_audit.testing import AuditCapture

HERE = Path(__file__).parent


def load_corpus(name: str) -> list[dict[str, str]]:
    with open(HERE / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


POSITIVES = load_corpus("corpus_positive.jsonl")
NEGATIVES = load_corpus("corpus_negative.jsonl")


@pytest.fixture
def capture_pipeline() -> Iterator[Any]:
    """A factory: configure(**settings) with an AuditCapture as delivery; shut down after the test."""
    pipelines = []

    def make(**settings: Any) -> AuditCapture:
        capture = AuditCapture()
        pipelines.append(otel_audit.configure(service_name="processors-test", delivery_processor=capture, **settings))
        return capture

    yield make
    otel_audit.shutdown()
