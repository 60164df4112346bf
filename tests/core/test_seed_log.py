"""The seed SDK's dict shape produces the same record as the equivalent emit()."""

from __future__ import annotations

import pytest

from otel_audit import Actor, AuditEventError, Resource, get_audit_logger

SEED_EVENT = {
    "action": "document.share",
    "actor": {"id": "user_123", "email": "alice@example.com", "ip": "198.51.100.4", "user_agent": "Mozilla/5.0"},
    "resource": {"type": "document", "id": "doc_456"},
    "outcome": "success",
    "metadata": {"shared_with": "bob@example.com", "permission": "view"},
}


def test_log_dict_equals_emit(audit_events) -> None:
    logger = get_audit_logger()
    logger.log(SEED_EVENT)
    logger.emit(
        "document.share",
        actor=Actor(id="user_123", email="alice@example.com"),
        resource=Resource("document", "doc_456"),
        outcome="success",
        metadata={"shared_with": "bob@example.com", "permission": "view"},
        client_address="198.51.100.4",
        user_agent="Mozilla/5.0",
    )
    from_log, from_emit = audit_events.attributes
    from_log.pop("log.record.uid")
    from_emit.pop("log.record.uid")
    assert from_log == from_emit
    first, second = audit_events.records
    assert first.log_record.event_name == second.log_record.event_name == "audit.document.share"
    assert first.log_record.severity_number == second.log_record.severity_number


def test_log_rejects_unknown_keys_by_name(audit_events) -> None:
    with pytest.raises(AuditEventError) as raised:
        get_audit_logger().log(dict(SEED_EVENT, actorr={"id": "x"}))
    assert raised.value.field == "actorr"
    assert len(audit_events) == 0
