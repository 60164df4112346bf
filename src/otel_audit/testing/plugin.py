"""pytest plugin (entry point `pytest11`): the `audit_events` fixture.

Each test gets the real audit pipeline (processors included) ending in an in-memory capture instead of OTLP,
so tests assert on what would have been exported rather than on a mocked client.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..pipeline import configure, shutdown
from .capture import AuditCapture


@pytest.fixture
def audit_events() -> Iterator[AuditCapture]:
    """Capture every audit record emitted during the test; use `audit_events.assert_emitted(action=...)`."""
    capture = AuditCapture()
    configure(service_name="pytest", delivery_processor=capture)
    try:
        yield capture
    finally:
        shutdown()
