"""In-process processors of audit records, in their fixed order: filter -> redact/pseudonymize -> integrity."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from opentelemetry.sdk._logs import LogRecordProcessor

from ..config import AuditSettings
from .filter import AuditFilterProcessor, AuditPolicy, Level, PolicyError, Rule
from .pseudonym import (
    PseudonymConfig,
    PseudonymNotFound,
    PseudonymProcessor,
    PseudonymVault,
    SubjectForgotten,
)
from .redact import RedactionConfig, RedactionProcessor

__all__ = [
    "AuditFilterProcessor",
    "AuditPolicy",
    "Level",
    "PolicyError",
    "PseudonymConfig",
    "PseudonymNotFound",
    "PseudonymProcessor",
    "PseudonymVault",
    "RedactionConfig",
    "RedactionProcessor",
    "Rule",
    "SubjectForgotten",
    "build_chain",
    "iter_chain",
]


def build_chain(settings: AuditSettings, delivery: LogRecordProcessor) -> LogRecordProcessor:
    """The processor chain in front of `delivery`, as one LogRecordProcessor to register on the provider.

    filter -> redact -> pseudonymize -> delivery, each stage wrapping the next: the SDK hands every registered
    processor the same record and has no way to stop a record part-way, so a chain that must be able to drop a
    record (the filter) or guarantee an order (redaction before anything leaves) is one processor calling the next.
    Bad policy, redaction or pseudonymization settings raise ConfigurationError here, i.e. at configure().
    """
    policy = AuditPolicy.from_setting(settings.policy)
    pseudonyms = PseudonymConfig.from_setting(settings.pseudonymization)
    redaction = RedactionConfig.from_setting(settings.redaction)
    chain = delivery
    if pseudonyms is not None:
        chain = PseudonymProcessor(pseudonyms, chain)
    if redaction is not None:
        if pseudonyms is not None:
            # Pseudonymized fields are replaced whole right after redaction; leave them intact so they still group.
            redaction = dataclasses.replace(redaction, exempt_keys=(*redaction.exempt_keys, *pseudonyms.fields))
        chain = RedactionProcessor(redaction, chain)
    return AuditFilterProcessor(chain, policy)


def iter_chain(processor: LogRecordProcessor) -> Iterator[LogRecordProcessor]:
    """Every stage of a chain built by build_chain, first to last (e.g. to find the PseudonymProcessor)."""
    current: LogRecordProcessor | None = processor
    while current is not None:
        yield current
        current = getattr(current, "next_processor", None)
