"""In-process processors of audit records, in their fixed order: filter -> redact/pseudonymize -> integrity."""

from __future__ import annotations

from opentelemetry.sdk._logs import LogRecordProcessor

from ..config import AuditSettings


def build_chain(settings: AuditSettings, delivery: LogRecordProcessor) -> LogRecordProcessor:
    """The processor chain in front of `delivery`, as one LogRecordProcessor to register on the provider."""
    return delivery
