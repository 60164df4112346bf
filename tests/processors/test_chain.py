"""build_chain: the fixed order filter -> redact -> pseudonymize -> delivery, and what configure() enables by default."""

from __future__ import annotations

from opentelemetry.sdk._logs import LogRecordProcessor

import otel_audit
from otel_audit.config import AuditSettings
from otel_audit.processors import (
    AuditFilterProcessor,
    PseudonymProcessor,
    RedactionProcessor,
    build_chain,
    iter_chain,
)
from otel_audit.testing import AuditCapture


def stage_types(chain: LogRecordProcessor) -> list[type]:
    return [type(stage) for stage in iter_chain(chain)]


def test_default_chain_is_filter_then_redaction_then_delivery() -> None:
    capture = AuditCapture()
    pipeline = otel_audit.configure(delivery_processor=capture)
    assert stage_types(pipeline.chain) == [AuditFilterProcessor, RedactionProcessor, AuditCapture]
    assert isinstance(pipeline.chain, AuditFilterProcessor) and pipeline.chain.policy.keeps_everything


def test_full_chain_order_with_pseudonyms() -> None:
    capture = AuditCapture()
    settings = AuditSettings.resolve(pseudonymization={"key": "k" * 32})
    chain = build_chain(settings, capture)
    assert stage_types(chain) == [AuditFilterProcessor, RedactionProcessor, PseudonymProcessor, AuditCapture]
    redaction = chain.next_processor if isinstance(chain, AuditFilterProcessor) else None
    assert isinstance(redaction, RedactionProcessor)
    redactor = redaction.redactor
    assert redactor.key_decision("user.email") == "skip" and redactor.key_decision("user.name") == "skip"


def test_redaction_off_leaves_filter_and_delivery() -> None:
    chain = build_chain(AuditSettings.resolve(redaction=False), AuditCapture())
    assert stage_types(chain) == [AuditFilterProcessor, AuditCapture]


def test_shutdown_and_flush_reach_the_delivery_stage() -> None:
    class Recording(AuditCapture):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            self.calls.append(f"flush {timeout_millis}")
            return True

        def shutdown(self) -> None:
            self.calls.append("shutdown")

    delivery = Recording()
    chain = build_chain(AuditSettings.resolve(pseudonymization={"key": "k" * 32}), delivery)
    assert chain.force_flush(1234) is True
    chain.shutdown()
    assert delivery.calls == ["flush 1234", "shutdown"]
