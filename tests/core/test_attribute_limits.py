"""The SDK's attribute limits never cut an audit record. OTEL_ATTRIBUTE_COUNT_LIMIT evicts the oldest attribute,
which is `audit.action` (the filter would then not see an audit event, and the record would vanish uncounted), and a
value length limit cuts ids and the `log.record.uid` that deduplicates deliveries."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits

from otel_audit import Actor, configure, get_audit_logger, semconv, shutdown
from otel_audit.stats import delivery_stats
from otel_audit.testing import AuditCapture
from otel_audit.testing.receiver import OTLPReceiver

LONG_REASON = "the reviewer asked for a second approval before the document could be shared outside the tenant"


def _emit_three(name: str) -> list[str]:
    """A plain event (the direct path when it is open), one with changes (the AuditEvent path) and one with a
    secret (redaction adds `audit.redacted` on the SDK's path); their uids."""
    logger = get_audit_logger(name)
    actor = Actor(id="user-0001", email="alice@example.com", name="Alice", roles=("editor",))
    common = {
        "actor": actor, "resource": ("document", "doc-00042"), "tenant": "tenant-1", "request_id": "req-1",
        "session_id": "session-1", "client_address": "10.0.0.7", "user_agent": "bench/1.0", "reason": LONG_REASON,
    }
    return [
        logger.emit("document.share", metadata={"plan": "pro", "items": 3}, **common),
        logger.emit("document.update", changes={"title": ("Draft", "Final")}, **common),
        logger.emit("document.share", metadata={"password": "hunter2-hunter2"}, **common),
    ]


def _assert_whole(receiver: OTLPReceiver, uids: list[str], dropped_before: float) -> None:
    records = receiver.wait_for(len(uids))
    assert [record.attributes[semconv.LOG_RECORD_UID] for record in records] == uids
    assert [record.attributes[semconv.AUDIT_ACTION] for record in records] == [
        "document.share", "document.update", "document.share",
    ]
    for record in records:
        assert record.attributes[semconv.AUDIT_REASON] == LONG_REASON
        assert record.attributes[semconv.AUDIT_RESOURCE_ID] == "doc-00042"
        assert record.attributes[semconv.USER_AGENT_ORIGINAL] == "bench/1.0"
    assert records[1].attributes[semconv.AUDIT_CHANGES] == {"title": {"old": "Draft", "new": "Final"}}
    assert records[2].attributes[semconv.AUDIT_REDACTED]
    assert delivery_stats()["dropped"] == dropped_before  # the counter is process-wide: earlier tests count too


def test_limits_from_the_environment_do_not_apply(
    otlp_receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_COUNT_LIMIT", "4")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "8")
    pipeline = configure(service_name="limits", endpoint=otlp_receiver.endpoint, spool_dir=str(tmp_path))
    dropped_before = delivery_stats()["dropped"]
    uids = _emit_three("limits-env")
    assert pipeline.force_flush(10_000)
    _assert_whole(otlp_receiver, uids, dropped_before)


@pytest.mark.parametrize("other_processor", [False, True], ids=["chain-only", "shared-with-a-processor"])
def test_limits_of_a_given_provider_do_not_apply(
    otlp_receiver: OTLPReceiver, tmp_path: Path, other_processor: bool
) -> None:
    """On a provider passed to configure(), with the direct path open or (another processor on it) closed."""
    provider = LoggerProvider(
        shutdown_on_exit=False, log_record_limits=LogRecordLimits(max_attributes=3, max_attribute_length=6)
    )
    capture = AuditCapture()
    if other_processor:
        provider.add_log_record_processor(capture)
    pipeline = configure(
        logger_provider=provider, service_name="limits", endpoint=otlp_receiver.endpoint, spool_dir=str(tmp_path)
    )
    dropped_before = delivery_stats()["dropped"]
    uids = _emit_three("limits-provider")
    assert pipeline.force_flush(10_000)
    _assert_whole(otlp_receiver, uids, dropped_before)
    if other_processor:
        assert [attributes[semconv.LOG_RECORD_UID] for attributes in capture.attributes] == uids
    shutdown()
    provider.shutdown()
