"""Audit events reach a real OTLP receiver (HTTP/protobuf and gRPC) with every convention attribute intact."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

import otel_audit
from otel_audit import (
    Actor,
    ActorType,
    Resource,
    audit_context,
    get_audit_logger,
    semconv,
)
from otel_audit.testing import OTLPReceiver

FULL_EVENT = dict(
    resource=Resource("document", "doc-42", name="Q3 plan"),
    outcome="denied",
    metadata={"shared_with": ["bob@example.com"], "permission": "edit", "limits": {"max": 3, "ratio": 0.5}},
    changes={"visibility": ("private", "team")},
    reason="policy forbids external sharing",
    error_type="PermissionDenied",
    client_address="203.0.113.7",
    user_agent="pytest-agent/1.0",
    session_id="sess-1",
    request_id="req-1",
    http_method="POST",
    http_route="/documents/{document_id}/share",
    url_path="/documents/doc-42/share",
    http_status_code=403,
)

EXPECTED_ATTRIBUTES = {
    semconv.AUDIT_ACTION: "document.share",
    semconv.AUDIT_OUTCOME: "denied",
    semconv.USER_ID: "alice",
    semconv.USER_EMAIL: "alice@example.com",
    semconv.USER_NAME: "Alice",
    semconv.USER_ROLES: ["editor", "viewer"],
    semconv.AUDIT_ACTOR_TYPE: "user",
    semconv.AUDIT_ACTOR_IMPERSONATOR_ID: "support-7",
    semconv.CLIENT_ADDRESS: "203.0.113.7",
    semconv.USER_AGENT_ORIGINAL: "pytest-agent/1.0",
    semconv.SESSION_ID: "sess-1",
    semconv.AUDIT_RESOURCE_TYPE: "document",
    semconv.AUDIT_RESOURCE_ID: "doc-42",
    semconv.AUDIT_RESOURCE_NAME: "Q3 plan",
    semconv.AUDIT_TENANT_ID: "acme",
    semconv.HTTP_REQUEST_METHOD: "POST",
    semconv.HTTP_ROUTE: "/documents/{document_id}/share",
    semconv.URL_PATH: "/documents/doc-42/share",
    semconv.HTTP_RESPONSE_STATUS_CODE: 403,
    semconv.AUDIT_REQUEST_ID: "req-1",
    semconv.ERROR_TYPE: "PermissionDenied",
    semconv.AUDIT_REASON: "policy forbids external sharing",
    semconv.AUDIT_CHANGES: {"visibility": {"old": "private", "new": "team"}},
    semconv.AUDIT_METADATA: {
        "shared_with": ["bob@example.com"],
        "permission": "edit",
        "limits": {"max": 3, "ratio": 0.5},
    },
}


def _configure(protocol: str, receiver: OTLPReceiver, spool: Path) -> None:
    endpoint = receiver.endpoint if protocol == "http/protobuf" else receiver.grpc_endpoint
    otel_audit.configure(
        service_name="billing-api",
        resource_attributes={"deployment.environment.name": "test"},
        protocol=protocol,
        endpoint=endpoint,
        flush_interval=0.05,
        spool_dir=str(spool),
    )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_every_convention_attribute_arrives(protocol: str, otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    _configure(protocol, otlp_receiver, tmp_path / "spool")
    tracer = TracerProvider().get_tracer("test")
    actor = Actor(id="alice", email="alice@example.com", name="Alice", roles=["editor", "viewer"])
    before = time.time_ns()
    with tracer.start_as_current_span("share") as span, audit_context(actor=actor, tenant="acme", impersonator="support-7"):
        uid = get_audit_logger("tests.export").emit("document.share", **FULL_EVENT)
        span_context = span.get_span_context()
    after = time.time_ns()
    assert otel_audit.current_pipeline().force_flush(10_000)

    [record] = otlp_receiver.wait_for(1)
    expected = dict(EXPECTED_ATTRIBUTES, **{semconv.LOG_RECORD_UID: uid})
    assert record.attributes == expected
    assert record.event_name == "audit.document.share"
    assert record.severity_number == 13 and record.severity_text == "WARN"
    assert before <= record.timestamp <= after
    assert record.observed_timestamp >= record.timestamp
    assert record.trace_id == format(span_context.trace_id, "032x")
    assert record.span_id == format(span_context.span_id, "016x")
    assert record.resource["service.name"] == "billing-api"
    assert record.resource["deployment.environment.name"] == "test"
    assert record.scope_name == "tests.export"


def test_outside_a_span_has_no_trace_ids_and_success_is_info(audit_pipeline, otlp_receiver: OTLPReceiver) -> None:
    get_audit_logger().emit("user.login", actor=Actor(id="bob", type=ActorType.USER))
    audit_pipeline.force_flush(10_000)
    [record] = otlp_receiver.wait_for(1)
    assert record.trace_id == "" and record.span_id == ""
    assert (record.severity_number, record.severity_text) == (9, "INFO")
    assert record.attributes[semconv.AUDIT_OUTCOME] == "success"


def test_explicit_timestamp_and_severity_override(audit_pipeline, otlp_receiver: OTLPReceiver) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    get_audit_logger().emit("user.login", outcome="failure", severity="ERROR", timestamp=when)
    audit_pipeline.force_flush(10_000)
    [record] = otlp_receiver.wait_for(1)
    assert record.timestamp == 1767323045678901000
    assert (record.severity_number, record.severity_text) == (17, "ERROR")


def test_uids_are_unique_and_time_ordered(audit_pipeline, otlp_receiver: OTLPReceiver) -> None:
    logger = get_audit_logger()
    uids = []
    for index in range(50):
        uids.append(logger.emit("item.create", resource=("item", str(index))))
        if index % 10 == 0:
            time.sleep(0.002)
    audit_pipeline.force_flush(10_000)
    received = [r.attributes[semconv.LOG_RECORD_UID] for r in otlp_receiver.wait_for(50)]
    assert sorted(received) == sorted(uids) and len(set(uids)) == 50
    millis = [int(uid.replace("-", "")[:12], 16) for uid in uids]
    assert millis == sorted(millis)
    assert all(uid[14] == "7" and uid[19] in "89ab" for uid in uids)


def test_headers_from_environment_reach_the_receiver(otlp_receiver: OTLPReceiver, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20k1,x-tenant=acme")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    pipeline = otel_audit.configure(flush_interval=0.05, spool_dir=str(tmp_path / "spool"))
    get_audit_logger().emit("user.logout")
    pipeline.force_flush(10_000)
    [record] = otlp_receiver.wait_for(1)
    assert record.resource["service.name"] == "from-env"
    assert otlp_receiver.headers[0]["authorization"] == "Bearer k1"
    assert otlp_receiver.headers[0]["x-tenant"] == "acme"
