"""The whole path with the real store: an instrumented app -> agent -> gateway -> `otel-audit serve` + archive.

app: otel_audit.configure() (durable spool, OTLP/HTTP) for audit events, a stock OTel SDK logger for
application logs, both to the agent -> agent.yaml -> gateway.yaml -> otel-audit store (subprocess, SQLite,
ingest-only key for tenant `acme`) and the archive file. What the app exported is what the agent acknowledged:
the library's own HTTP sender is wrapped to keep each acknowledged request, and everything downstream is compared
with those records.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

import otel_audit
from otel_audit import Actor, Resource
from otel_audit.client import AuditClient, StoredAuditEvent
from otel_audit.config import AuditSettings
from otel_audit.delivery import DurableLogRecordProcessor
from otel_audit.delivery.sender import HttpSender, SendResult

from .conftest import LOOPBACK, TEST_TIMEOUT_S, CollectorTopology, free_ports, wait_for

pytestmark = [pytest.mark.collector, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT_S)]

CLI = str(Path(sys.executable).with_name("otel-audit"))
TENANT = "acme"
SERVICE = "shop-api"
ACTIONS = ("document.share", "user.login", "invoice.approve", "document.delete")


# ------------------------------------------------------------------------------------------ the store


class StoreProcess:
    """`otel-audit serve` on SQLite in a temporary directory, with an ingest key (gateway) and a read key (tests)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.db = f"sqlite:///{workdir / 'store.db'}"
        self.ingest_key = self._create_key("ingest", "gateway")
        self.read_key = self._create_key("read", "tests")
        (self.port,) = free_ports(1)
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = workdir / "store.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [CLI, "serve", "--db", self.db, "--host", LOOPBACK, "--port", str(self.port), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, 30, interval=0.1, message=lambda: f"otel-audit serve readiness\n{self.log_tail()}")

    def _create_key(self, scopes: str, name: str) -> str:
        created = subprocess.run(
            [CLI, "keys", "create", "--db", self.db, "--tenant", TENANT, "--scopes", scopes, "--name", name, "--json"],
            check=False, capture_output=True, text=True, timeout=60,
        )
        assert created.returncode == 0, created.stderr
        return json.loads(created.stdout)["secret"]

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"otel-audit serve exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def client(self) -> AuditClient:
        return AuditClient(self.url, self.read_key, timeout=30)

    def ingest_stats(self) -> dict[str, int]:
        """The store's ingest counters for tenant acme (received, stored, duplicate, rejected, ignored)."""
        response = httpx.get(f"{self.url}/v1/stats", headers={"authorization": f"Bearer {self.read_key}"}, timeout=30)
        response.raise_for_status()
        return response.json()["ingest"]

    def stored_events(self) -> list[StoredAuditEvent]:
        with self.client() as client:
            return list(client.iter_events(page_size=500))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreProcess]:
    server = StoreProcess(tmp_path / "store")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def collectors(collector_binary: Path, store: StoreProcess, tmp_path: Path) -> Iterator[CollectorTopology]:
    """Agent + gateway from collector-config/; the gateway exports to the real store with its ingest key."""
    topology = CollectorTopology(collector_binary, tmp_path, store.url, ingest_key=store.ingest_key).start()
    try:
        yield topology
    finally:
        topology.stop()


# ------------------------------------------------------------------------------------------ the app


class RecordingSender:
    """The library's own HTTP sender, keeping the records of every request the agent acknowledged (2xx)."""

    def __init__(self, inner: HttpSender) -> None:
        self._inner = inner
        self.endpoint = inner.endpoint
        self._lock = threading.Lock()
        self.acked: dict[str, list[Any]] = defaultdict(list)  # uid -> (resource, LogRecord) per acknowledgement
        self.acked_bodies: list[bytes] = []
        self.failed_attempts = 0
        self.rejected = 0  # records the agent refused in a partial_success (the library dead-letters them)

    def send(self, body: bytes) -> SendResult:
        result = self._inner.send(body)
        if not 200 <= result.status < 300:
            with self._lock:
                self.failed_attempts += 1
            return result
        request = ExportLogsServiceRequest.FromString(body)
        with self._lock:
            self.rejected += result.rejected
            self.acked_bodies.append(body)
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        uid = plain_attributes(record.attributes)["log.record.uid"]
                        self.acked[uid].append((resource_logs.resource, scope_logs.scope, record))
        return result

    def close(self) -> None:
        self._inner.close()

    def exported(self, uid: str) -> tuple[Any, Any, Any]:
        """(resource, scope, LogRecord) as the app first exported the record with this uid."""
        with self._lock:
            return self.acked[uid][0]

    def resent(self) -> int:
        """Records the agent acknowledged more than once (resent after a lost acknowledgement)."""
        with self._lock:
            return sum(len(copies) - 1 for copies in self.acked.values())


class InstrumentedApp:
    """otel_audit for audit events and a stock OTel SDK logger for application logs, both to the agent."""

    def __init__(self, agent_logs_url: str, spool_dir: Path) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource as SdkResource
        from opentelemetry.sdk.trace import TracerProvider

        settings = {"service_name": SERVICE, "endpoint": agent_logs_url, "spool_dir": str(spool_dir),
                    "flush_interval": 0.05}
        resolved = AuditSettings.resolve(**settings)
        self.sender = RecordingSender(HttpSender(resolved))
        self.pipeline = otel_audit.configure(
            delivery_processor=DurableLogRecordProcessor(resolved, sender=self.sender), **settings
        )
        self.audit = otel_audit.get_audit_logger("shop.api")
        self.tracer = TracerProvider().get_tracer("shop.api")

        self.log_provider = LoggerProvider(resource=SdkResource.create({"service.name": SERVICE}))
        self.log_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=agent_logs_url, timeout=5), schedule_delay_millis=100)
        )
        self.app_logger = self.log_provider.get_logger("shop.api.app")

        self._lock = threading.Lock()
        self.emitted: list[str] = []
        self.app_markers: list[str] = []

    def emit_audit(self) -> str:
        """One audit event with every kind of attribute value (strings, int, float, bool, list, nested maps)."""
        with self._lock:
            n = len(self.emitted)
        denied = n % 5 == 4
        span = self.tracer.start_as_current_span(f"request-{n}") if n % 2 else nullcontext()
        with span:
            uid = self.audit.emit(
                ACTIONS[n % len(ACTIONS)],
                actor=Actor(id=f"user-{n % 7}", email=f"user{n % 7}@example.com", name="Ünïcode Name ✓",
                            roles=("admin", "editor")),
                resource=Resource("document", f"doc-{n}", "Q3 plan"),
                outcome="denied" if denied else "success",
                reason="missing share permission" if denied else None,
                tenant=TENANT,
                client_address="203.0.113.7",
                request_id=f"req-{n}",
                http_method="POST",
                http_route="/documents/{id}/share",
                http_status_code=403 if denied else 200,
                changes={"visibility": {"old": "private", "new": "team"}, "pinned": {"old": False, "new": True}},
                metadata={"seq": n, "ratio": 0.25, "notify": True, "tags": ["a", "b"],
                          "nested": {"level": {"deeper": "v", "count": 2}}},
            )
        with self._lock:
            self.emitted.append(uid)
        return uid

    def emit_app_log(self) -> str:
        """An application log whose body carries a unique marker (and mentions an audit action, as logs do)."""
        from opentelemetry._logs import LogRecord, SeverityNumber

        marker = f"app-log-{uuid.uuid4().hex}"
        self.app_logger.emit(LogRecord(
            timestamp=time.time_ns(), severity_number=SeverityNumber.WARN, severity_text="WARN",
            body=f"cache miss on the audit.document.share page {marker}",
            attributes={"cache.key": "documents", "tenant": TENANT},
        ))
        with self._lock:
            self.app_markers.append(marker)
        return marker

    def close(self) -> None:
        """Flush both pipelines: afterwards every audit event is acknowledged by the agent."""
        try:
            assert self.pipeline.force_flush(120_000), "the audit spool did not drain to the agent"
            self.log_provider.force_flush(30_000)
        finally:
            otel_audit.shutdown()
            self.log_provider.shutdown()


@pytest.fixture
def app(collectors: CollectorTopology, tmp_path: Path) -> Iterator[InstrumentedApp]:
    instrumented = InstrumentedApp(collectors.agent_otlp_http_logs_url, tmp_path / "spool")
    try:
        yield instrumented
    finally:
        otel_audit.shutdown()
        instrumented.log_provider.shutdown()


# ------------------------------------------------------------------------------------------ comparing


def record_count(body: bytes) -> int:
    """How many log records an ExportLogsServiceRequest body carries."""
    request = ExportLogsServiceRequest.FromString(body)
    return sum(len(scope_logs.log_records) for resource_logs in request.resource_logs
               for scope_logs in resource_logs.scope_logs)


def plain_value(value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue (maps -> dict, arrays -> list)."""
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: plain_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [plain_value(item) for item in value.array_value.values]
    return None if kind is None else getattr(value, kind)


def plain_attributes(attributes: Any) -> dict[str, Any]:
    return {kv.key: plain_value(kv.value) for kv in attributes}


def assert_same(got: Any, want: Any, path: str = "attributes") -> None:
    """Equal values of equal types all the way down (1 != 1.0 != True here, unlike Python's ==)."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} {got!r} != {type(want).__name__} {want!r}"
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path}: keys {sorted(set(got) ^ set(want))} differ"
        for key in want:
            assert_same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {len(got)} items != {len(want)}"
        for index, (got_item, want_item) in enumerate(zip(got, want)):
            assert_same(got_item, want_item, f"{path}[{index}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def assert_stored_as_exported(stored: StoredAuditEvent, exported: tuple[Any, Any, Any]) -> None:
    """The store kept exactly what the app exported: attributes, record fields, resource and scope."""
    resource, scope, record = exported
    assert_same(stored.attributes, plain_attributes(record.attributes))
    assert_same(stored.resource, plain_attributes(resource.attributes), "resource")
    assert (stored.scope_name, stored.scope_version) == (scope.name, scope.version)
    assert (stored.event_name, stored.severity_number, stored.severity_text) == (
        record.event_name, record.severity_number, record.severity_text)
    assert (stored.time_unix_nano, stored.observed_time_unix_nano) == (
        record.time_unix_nano, record.observed_time_unix_nano)
    assert (stored.trace_id, stored.span_id) == (record.trace_id.hex(), record.span_id.hex())
    assert stored.tenant_id == TENANT


def archive_records(path: Path) -> list[tuple[dict, dict]]:
    """(resource, logRecord) pairs of the gateway's archive (OTLP JSON lines), trace/span ids as base64."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for resource_logs in json.loads(line).get("resourceLogs", []):
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    for name in ("traceId", "spanId"):
                        if record.get(name):
                            record[name] = base64.b64encode(bytes.fromhex(record[name])).decode()
                    if record.get("body") == {}:
                        del record["body"]  # the collector writes an unset body as an empty AnyValue
                    out.append((resource_logs.get("resource", {}), record))
    return out


def archive_uid(record: dict) -> str | None:
    for kv in record.get("attributes", []):
        if kv["key"] == "log.record.uid":
            return kv["value"]["stringValue"]
    return None


def archive_by_uid(path: Path) -> dict[str | None, list[tuple[dict, dict]]]:
    by_uid: dict[str | None, list[tuple[dict, dict]]] = defaultdict(list)
    for resource, record in archive_records(path):
        by_uid[archive_uid(record)].append((resource, record))
    return by_uid


def assert_archived_as_exported(archived: tuple[dict, dict], exported: tuple[Any, Any, Any]) -> None:
    """The archive's OTLP JSON is the JSON form of exactly the protobuf record (and resource) the app exported."""
    resource, _scope, record = exported
    assert archived[1] == json_format.MessageToDict(record, use_integers_for_enums=True)
    assert archived[0] == json_format.MessageToDict(resource, use_integers_for_enums=True)


def app_log_bodies(path: Path) -> list[str]:
    """Bodies of the records the agent's application-logs pipeline wrote to its file."""
    if not path.exists():
        return []
    bodies = []
    for line in path.read_text().splitlines():
        if line.strip():
            for resource_logs in json.loads(line).get("resourceLogs", []):
                for scope_logs in resource_logs.get("scopeLogs", []):
                    for record in scope_logs.get("logRecords", []):
                        bodies.append(record.get("body", {}).get("stringValue", ""))
    return bodies


def markers_in(bodies: list[str], markers: list[str]) -> set[str]:
    text = "\n".join(bodies)
    return {marker for marker in markers if marker in text}


def stored_uids(store: StoreProcess) -> set[str]:
    return {event.uid for event in store.stored_events()}


def diagnostics(store: StoreProcess, collectors: CollectorTopology) -> str:
    return f"{collectors.logs()}\n--- store log ---\n{store.log_tail()}"


# ------------------------------------------------------------------------------------------ the tests


def test_every_audit_event_reaches_the_store_once_as_exported_and_app_logs_never(
    store: StoreProcess, collectors: CollectorTopology, app: InstrumentedApp
) -> None:
    for _ in range(60):
        app.emit_audit()
        app.emit_app_log()
    app.close()

    emitted = set(app.emitted)
    assert len(emitted) == 60
    assert emitted <= set(app.sender.acked), "the agent acknowledged every audit event"
    assert app.sender.rejected == 0
    wait_for(lambda: emitted <= stored_uids(store), 60, interval=0.3,
             message=lambda: f"all {len(emitted)} audit events in the store\n{diagnostics(store, collectors)}")
    # positive control: the application logs went through the agent, into its own pipeline
    wait_for(lambda: markers_in(app_log_bodies(collectors.app_log_path), app.app_markers) == set(app.app_markers),
             60, message=lambda: f"application logs in {collectors.app_log_path}\n{collectors.logs()}")
    wait_for(lambda: emitted <= set(archive_by_uid(collectors.archive_path)), 60,
             message=lambda: f"audit events in the archive {collectors.archive_path}")

    events = store.stored_events()
    assert sorted(event.uid for event in events) == sorted(emitted), "each audit event stored once, nothing else"
    with store.client() as client:
        assert client.count_events() == len(emitted)
        assert client.count_events(action="document.*") == 30
    stats = store.ingest_stats()
    # a retry anywhere on the way (under load) may deliver a record twice; the store must keep it once
    assert (stats["stored"], stats["rejected"], stats["ignored"]) == (60, 0, 0), stats
    assert stats["received"] == stats["stored"] + stats["duplicate"], stats

    for event in events:
        assert_stored_as_exported(event, app.sender.exported(event.uid))
    # guards: the comparison covered nested maps, lists, numbers, booleans and trace context
    sample = {event.uid: event for event in events}[app.emitted[1]]
    assert sample.attributes["audit.metadata"]["nested"] == {"level": {"deeper": "v", "count": 2}}
    assert sample.attributes["audit.changes"]["pinned"] == {"old": False, "new": True}
    assert sample.attributes["user.roles"] == ["admin", "editor"]
    assert len(sample.trace_id) == 32 and sample.trace_id != "0" * 32
    assert sample.resource["service.name"] == SERVICE
    assert sum(event.outcome == "denied" for event in events) == 12

    for event in events:
        assert not markers_in([json.dumps(event.attributes), json.dumps(event.body)], app.app_markers)

    archived = archive_by_uid(collectors.archive_path)
    assert set(archived) == emitted, "the archive holds the audit events and nothing else"
    for uid in emitted:
        assert len(archived[uid]) == 1, f"{uid} archived {len(archived[uid])} times"
        assert_archived_as_exported(archived[uid][0], app.sender.exported(uid))


class Stream:
    """Emits an audit event and an application log every `interval` seconds on a thread until stopped."""

    def __init__(self, app: InstrumentedApp, interval: float = 0.05) -> None:
        self.app = app
        self.interval = interval
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-stream", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.app.emit_audit()
                self.app.emit_app_log()
            except BaseException as exc:  # noqa: BLE001 - the test asserts there were none
                self.errors.append(exc)
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the emitting thread did not stop"


def test_no_audit_event_lost_across_a_gateway_outage_and_agent_restarts(
    store: StoreProcess, collectors: CollectorTopology, app: InstrumentedApp
) -> None:
    with Stream(app) as stream:
        wait_for(lambda: len(app.emitted) >= 40, 30, message="the stream to start")
        wait_for(lambda: len(stored_uids(store)) >= 20, 60, interval=0.3,
                 message=lambda: f"the first events in the store\n{diagnostics(store, collectors)}")

        # the gateway goes away for ~20 s; the agent acknowledges the app and queues on disk
        collectors.gateway.stop()
        outage_start = time.monotonic()
        at_outage = len(app.emitted)
        time.sleep(12)
        queued_by_agent = {uid for uid in app.emitted[at_outage:] if uid in app.sender.acked}
        assert queued_by_agent, "the agent acknowledged records while the gateway was down"

        # the agent crashes with those records in its persistent queue and comes back (gateway still down)
        collectors.agent.kill()
        collectors.agent.start()
        time.sleep(max(0.0, 20 - (time.monotonic() - outage_start)))
        during_outage = len(app.emitted) - at_outage
        assert not stored_uids(store) & set(app.emitted[at_outage:]), "the gateway was down: nothing got through"
        collectors.gateway.start()
        gateway_back = time.monotonic()

        # stream on, then restart the agent gracefully in the middle of it
        time.sleep(3)
        collectors.agent.restart()
        time.sleep(3)
    assert not stream.errors, f"emit failed: {stream.errors!r}"
    app.close()

    emitted = set(app.emitted)
    assert len(emitted) == len(app.emitted), "emit returned a distinct uid for every event"
    assert emitted <= set(app.sender.acked), "the agent acknowledged every audit event"
    assert app.sender.rejected == 0
    wait_for(lambda: emitted <= stored_uids(store), 150, interval=0.5,
             message=lambda: (f"all {len(emitted)} audit events in the store; missing "
                              f"{len(emitted - stored_uids(store))}\n{diagnostics(store, collectors)}"))
    drained_after = time.monotonic() - gateway_back

    events = store.stored_events()
    uids = Counter(event.uid for event in events)
    assert set(uids) == emitted, "0 audit events lost, nothing else stored"
    assert max(uids.values()) == 1, "the store de-duplicated by log.record.uid"
    with store.client() as client:
        assert client.count_events() == len(emitted)
    for event in events:
        assert_stored_as_exported(event, app.sender.exported(event.uid))

    # at-least-once: an app that lost acknowledgements sends the same requests again; the store keeps one copy
    natural = store.ingest_stats()
    replayed = app.sender.acked_bodies[:5]
    replayed_records = sum(record_count(body) for body in replayed)
    replay_sender = HttpSender(AuditSettings.resolve(endpoint=collectors.agent_otlp_http_logs_url))
    try:
        assert [replay_sender.send(body).status for body in replayed] == [200] * len(replayed)
    finally:
        replay_sender.close()
    wait_for(lambda: store.ingest_stats()["received"] >= natural["received"] + replayed_records, 60,
             message=lambda: f"the replayed records at the store\n{diagnostics(store, collectors)}")

    stats = store.ingest_stats()
    assert stats["stored"] == len(emitted)
    assert stats["duplicate"] >= natural["duplicate"] + replayed_records
    assert stored_uids(store) == emitted
    assert stats["received"] == stats["stored"] + stats["duplicate"], "every record received was stored or a duplicate"
    assert (stats["rejected"], stats["ignored"]) == (0, 0), "no application log reached the store"
    delivered_app_logs = markers_in(app_log_bodies(collectors.app_log_path), app.app_markers)
    assert delivered_app_logs, "application logs flowed through the agent's own pipeline"

    # every copy that reached the archive (duplicates included) is the exported record, byte for byte in JSON
    def archived_copies() -> int:
        return sum(len(copies) for copies in archive_by_uid(collectors.archive_path).values())

    wait_for(lambda: emitted <= set(archive_by_uid(collectors.archive_path)) and archived_copies() >= stats["received"],
             60, message="every audit event, with the replayed copies, in the archive")
    archived = archive_by_uid(collectors.archive_path)
    assert set(archived) == emitted
    for uid, copies in archived.items():
        for copy in copies:
            assert_archived_as_exported(copy, app.sender.exported(uid))
    archive_duplicates = sum(len(copies) - 1 for copies in archived.values())
    assert archive_duplicates >= replayed_records
    print(f"\n{len(emitted)} audit events ({during_outage} during the 20 s gateway outage, {len(queued_by_agent)} "
          f"queued by the agent before its crash); {replayed_records} replayed; store: {stats}; archive duplicates: {archive_duplicates}; "
          f"app resent to the agent: {app.sender.resent()}, failed send attempts: {app.sender.failed_attempts}; "
          f"application logs delivered to the app pipeline: {len(delivered_app_logs)}/{len(app.app_markers)}; "
          f"store complete {drained_after:.1f} s after the gateway came back")
