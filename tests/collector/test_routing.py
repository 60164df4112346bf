"""Real agent + gateway processes route audit records to the store unchanged, and nowhere else.

app (OTel SDK, OTLP/HTTP) -> agent.yaml -> gateway.yaml -> OtlpLogSink (stand-in store) + archive file
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from .conftest import (
    TEST_TIMEOUT_S,
    CollectorTopology,
    OtlpLogSink,
    RecordingExporter,
    attr_value,
    make_logger_provider,
    wait_for,
)

pytestmark = [pytest.mark.collector, pytest.mark.timeout(TEST_TIMEOUT_S)]

_seq = itertools.count(1)


def new_uid() -> str:
    # time-ordered enough for a test; the store only needs uniqueness
    return f"{time.time_ns():020d}-{uuid.uuid4().hex}"


class App:
    """The application side: an SDK logger whose exports are recorded (what the agent acknowledged)."""

    def __init__(self, topology: CollectorTopology) -> None:
        from opentelemetry.sdk._logs import LoggerProvider  # noqa: F401 (import check)

        self.exporter = RecordingExporter(topology.agent_otlp_http_logs_url)
        self.provider = make_logger_provider(self.exporter)
        self.logger = self.provider.get_logger("otel_audit.tests.collector")
        self.audit_uids: list[str] = []
        self.app_uids: list[str] = []

    def audit(self, action: str = "document.share", *, event_name: str | None = "default",
              with_action: bool = True) -> str:
        from opentelemetry._logs import SeverityNumber

        uid = new_uid()
        seq = next(_seq)
        attributes = {
            "log.record.uid": uid,
            "audit.outcome": "success",
            "audit.actor.type": "user",
            "user.id": "u-42",
            "user.email": "alice@example.com",
            "user.roles": ["admin", "editor"],
            "audit.resource.type": "document",
            "audit.resource.id": f"doc-{seq}",
            "audit.tenant.id": "tenant-a",
            "http.request.method": "POST",
            "http.response.status_code": 200,
            "client.address": "203.0.113.7",
            # values the app-log redaction would mask: audit records must arrive untouched
            "audit.reason": "password reset with token abc; card 4111111111111111",
            "audit.changes": {"title": {"old": "draft", "new": "final"}, "shared": {"old": False, "new": True}},
            "audit.metadata": {"ratio": 0.25, "tags": ["a", "b"], "depth": {"level": 2}},
            "audit.chain.id": "chain-1",
            "audit.chain.seq": seq,
            "audit.chain.prev": "00" * 32,
            "audit.chain.hash": uuid.uuid4().hex * 2,
        }
        if with_action:
            attributes["audit.action"] = action
        self.logger.emit(
            timestamp=time.time_ns(),
            event_name=f"audit.{action}" if event_name == "default" else event_name,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=f"{action} by u-42",
            attributes=attributes,
        )
        self.audit_uids.append(uid)
        return uid

    def app_log(self, event_name: str | None = None) -> str:
        from opentelemetry._logs import SeverityNumber

        uid = new_uid()
        self.logger.emit(
            timestamp=time.time_ns(),
            event_name=event_name,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body="cache miss; looks like an audit.document.share but is not one",
            attributes={"log.record.uid": uid, "password": "hunter2", "cache.key": "k1"},
        )
        self.app_uids.append(uid)
        return uid

    def close(self) -> None:
        self.provider.shutdown()


def sink_by_uid(sink: OtlpLogSink) -> dict[object, list[object]]:
    by_uid: dict[object, list[object]] = defaultdict(list)
    for _resource, _scope, lr in sink.log_records():
        by_uid[attr_value(lr, "log.record.uid")].append(lr)
    return by_uid


def archive_uids(path: Path) -> list[str]:
    """log.record.uid values in the gateway's archive (file exporter, OTLP JSON lines)."""
    if not path.exists():
        return []
    uids = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for rl in json.loads(line).get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                for lr in sl.get("logRecords", []):
                    for kv in lr.get("attributes", []):
                        if kv["key"] == "log.record.uid":
                            uids.append(kv["value"]["stringValue"])
    return uids


def app_log_file_uids(path: Path) -> dict[str, dict]:
    """uid -> attributes (key -> OTLP JSON value) of records the agent's application pipeline wrote."""
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for rl in json.loads(line).get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                for lr in sl.get("logRecords", []):
                    attrs = {kv["key"]: kv["value"] for kv in lr.get("attributes", [])}
                    uid = attrs.get("log.record.uid", {}).get("stringValue")
                    if uid:
                        out[uid] = attrs
    return out


def assert_identical_to_sent(received: object, sent: object) -> None:
    """Attributes (order, types, nesting) and the other record fields are what the app exported."""
    assert list(received.attributes) == list(sent.attributes)  # type: ignore[attr-defined]
    for name in ("event_name", "body", "severity_number", "severity_text", "time_unix_nano",
                 "trace_id", "span_id", "flags"):
        assert getattr(received, name) == getattr(sent, name), name


def test_audit_records_reach_store_once_unchanged_and_app_logs_never(
    topology: CollectorTopology, otlp_sink: OtlpLogSink
) -> None:
    app = App(topology)
    try:
        for i in range(40):
            app.audit("document.share" if i % 2 else "user.login")
            app.app_log(event_name=None if i % 3 else "app.cache.miss")
        # edge cases of the routing rule (event_name prefix OR audit.action present)
        app.audit("user.logout", event_name=None)                # audit.action only
        app.audit("session.expire", with_action=False)           # event_name only
        app.app_log(event_name="auditing.report")                # prefix look-alike: not audit
        app.app_log(event_name="audit")                          # no dot: not audit
    finally:
        app.close()

    assert app.exporter.failed_batches == 0
    expected = set(app.audit_uids)
    assert set(app.exporter.sent) >= expected | set(app.app_uids)

    wait_for(lambda: expected <= set(sink_by_uid(otlp_sink)), 60,
             message=lambda: f"audit records at the store\n{topology.logs()}")
    # the application pipeline (batch 1 s + file flush 1 s) has written every app log: by then a
    # misrouted one would have reached the store as well
    wait_for(lambda: set(app.app_uids) <= set(app_log_file_uids(topology.app_log_path)), 60,
             message=lambda: f"app logs in {topology.app_log_path}\n{topology.logs()}")
    wait_for(lambda: expected <= set(archive_uids(topology.archive_path)), 60,
             message=lambda: f"audit records in the archive {topology.archive_path}")

    received = sink_by_uid(otlp_sink)
    assert set(received) == expected, "only audit records reach the store"
    # guard: the SDK really sent nested maps and lists (so the comparison below covers them)
    first = app.exporter.sent[app.audit_uids[0]]
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in first.attributes}
    assert kinds["audit.changes"] == "kvlist_value" and kinds["user.roles"] == "array_value"
    for uid in expected:
        assert len(received[uid]) == 1, f"{uid} arrived {len(received[uid])} times"
        assert_identical_to_sent(received[uid][0], app.exporter.sent[uid])

    for req in otlp_sink.requests:
        assert req.headers.get("authorization") == f"Bearer {topology.ingest_key}"

    archived = archive_uids(topology.archive_path)
    assert sorted(archived) == sorted(expected), "archive holds each audit record once"

    app_file = app_log_file_uids(topology.app_log_path)
    assert not (set(app_file) & expected), "audit records never enter the application pipeline"
    # the application pipeline is allowed to rewrite: it redacted the password
    assert all(a["password"].get("stringValue") != "hunter2" for a in app_file.values())


@pytest.mark.slow
def test_no_audit_record_lost_across_gateway_outage_and_agent_crash(
    topology: CollectorTopology, otlp_sink: OtlpLogSink
) -> None:
    app = App(topology)
    try:
        # A: steady state
        for _ in range(30):
            app.audit()
            app.app_log()

        # B: the gateway is down for ~20 s while the app keeps logging; the agent's persistent
        # queue takes everything (the app sees no error)
        topology.gateway.stop()
        down_until = time.monotonic() + 20
        while time.monotonic() < down_until:
            app.audit()
            app.app_log()
            time.sleep(0.1)
        during_outage = len(app.audit_uids) - 30
        assert during_outage > 0
        topology.gateway.start()

        # C: back to normal
        for _ in range(30):
            app.audit()

        # D: the store refuses (503), records pile up in the agent's queue, then the agent crashes
        otlp_sink.fail_with(503)
        pending = [app.audit() for _ in range(40)]
        wait_for(lambda: otlp_sink.refused > 0, 60,
                 message=lambda: f"a refused delivery attempt\n{topology.logs()}")
        topology.agent.kill()
        topology.agent.start()
        otlp_sink.fail_with(None)

        # E: the restarted agent takes new records as well
        for _ in range(20):
            app.audit()
    finally:
        app.close()

    assert app.exporter.failed_batches == 0, "the agent acknowledged every record the app sent"
    expected = set(app.audit_uids)
    assert set(pending) <= expected

    wait_for(lambda: expected <= set(sink_by_uid(otlp_sink)), 240, interval=0.5,
             message=lambda: (
                 f"all {len(expected)} audit records at the store; missing "
                 f"{len(expected - set(sink_by_uid(otlp_sink)))}\n{topology.logs()}"))
    wait_for(lambda: set(app.app_uids) <= set(app_log_file_uids(topology.app_log_path)), 60,
             message="app logs in the agent's application-logs file")

    received = sink_by_uid(otlp_sink)
    assert None not in received, "every record at the store carries log.record.uid"
    assert set(received) == expected, "0 audit records lost, no application log at the store"
    duplicates = {uid: lrs for uid, lrs in received.items() if len(lrs) > 1}
    for uid, lrs in received.items():
        # a duplicate is the same record again (same uid, same content), never a different one
        for lr in lrs:
            assert_identical_to_sent(lr, app.exporter.sent[uid])
    print(f"\n{len(expected)} audit records ({during_outage} during the gateway outage, "
          f"{len(pending)} queued across the agent crash); {len(duplicates)} delivered more than once")

    wait_for(lambda: expected <= set(archive_uids(topology.archive_path)), 60,
             message="every audit record in the archive")


def test_store_rejecting_permanently_leaves_records_in_the_archive(
    topology: CollectorTopology, otlp_sink: OtlpLogSink
) -> None:
    """A 401 from the store (wrong ingest key) is a permanent OTLP/HTTP error: the collector does
    not retry it. The synchronous fan-out still wrote the records to the archive, which is the
    documented recovery path (collector-config/README.md, "What each pipeline guarantees")."""
    otlp_sink.fail_with(401)
    app = App(topology)
    try:
        for _ in range(10):
            app.audit()
    finally:
        app.close()
    expected = set(app.audit_uids)
    wait_for(lambda: expected <= set(archive_uids(topology.archive_path)), 60,
             message=lambda: f"rejected audit records in the archive\n{topology.logs()}")
    wait_for(lambda: otlp_sink.refused >= 1, 30, message="the store to be asked")
    assert not sink_by_uid(otlp_sink), "nothing was accepted by the store"
