"""End to end: the library's exporter -> `otel-audit serve` (a real subprocess) -> AuditClient and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import otel_audit
from otel_audit import Actor, AuditEvent, Resource, semconv
from otel_audit.client import AsyncAuditClient, AuditClient, AuditClientError

from .helpers import exchange_raw, free_port

DEV_KEY = "e2e-dev-key-0123456789"
CLI = [str(Path(sys.executable).with_name("otel-audit"))]


class ServeProcess:
    def __init__(self, db_url: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*CLI, "serve", "--db", db_url, "--port", str(self.port), "--dev-key", f"{DEV_KEY}:acme", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"otel-audit serve exited: {self.process.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("otel-audit serve did not become ready in 30 s")
            time.sleep(0.1)

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, stderr = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate(timeout=15)
        return stderr


@pytest.fixture
def serve(tmp_path) -> Iterator[ServeProcess]:
    server = ServeProcess(f"sqlite:///{tmp_path}/e2e.db")
    yield server
    server.stop()


# What uvicorn's parser refuses before the app sees it: a binary request line, a header line without a colon,
# a broken chunk size.
NOT_HTTP = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    b"POST /v1/logs HTTP/1.1\r\nhost: x\r\nthis line has no colon\r\n\r\n",
    b"POST /v1/logs HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
]


def assert_json_400_then_serving(server: ServeProcess, request: bytes) -> None:
    status, headers, body = exchange_raw(server.port, request)
    assert status.startswith(b"HTTP/1.1 400"), (status, body)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"error": "malformed_http", "message": "Invalid HTTP request received."}
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("request_bytes", NOT_HTTP, ids=["binary", "header-without-colon", "bad-chunk-size"])
def test_bytes_that_are_not_http_get_a_json_400_and_the_server_keeps_serving(serve, request_bytes) -> None:
    assert_json_400_then_serving(serve, request_bytes)


def wait_for_events(client: AuditClient, expected: int, **filters) -> list:
    deadline = time.monotonic() + 20
    while True:
        events = client.search_events(**filters).events
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_library_export_is_found_by_the_client_with_every_attribute_intact(serve, tmp_path) -> None:
    otel_audit.configure(
        service_name="e2e-service",
        endpoint=f"{serve.url}/v1/logs",
        headers={"authorization": f"Bearer {DEV_KEY}"},
        spool_dir=str(tmp_path / "spool"),
        flush_interval=0.05,
    )
    try:
        event = AuditEvent(
            action="document.share",
            outcome="success",
            actor=Actor(id="user-7", type="user", name="Alice", roles=("admin", "editor")),
            resource=Resource("document", "doc-42", "Q3 plan"),
            tenant_id="acme",
            client_address="203.0.113.7",
            request_id="req-1",
            http_method="POST",
            http_route="/documents/{id}/share",
            http_status_code=200,
            changes={"visibility": {"old": "private", "new": "team"}},
            metadata={"shared_with": ["bob", "carol"], "expires_days": 7, "notify": True, "ratio": 0.25,
                      "nested": {"k": {"deeper": "v"}}},
        )
        logger = otel_audit.get_audit_logger("e2e")
        uid = logger.emit_event(event)
        other_uid = logger.emit("user.login", actor="user-8", resource=("session", "s-1"), outcome="failure")
        assert otel_audit.current_pipeline().force_flush(10_000)
    finally:
        otel_audit.shutdown()

    with AuditClient(serve.url, DEV_KEY) as client:
        [found] = wait_for_events(client, 1, resource_id="doc-42")
        assert found.uid == uid
        assert found.attributes == semconv.event_to_attributes(event, uid)
        assert found.event == event
        assert (found.action, found.outcome, found.actor_id, found.resource_type, found.resource_id, found.tenant_id) == (
            "document.share", "success", "user-7", "document", "doc-42", "acme")
        assert found.event_name == "audit.document.share"
        assert found.severity_text == "INFO" and found.severity_number == 9
        assert found.resource["service.name"] == "e2e-service"
        assert found.scope_name == "e2e"
        assert abs(found.time - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
        assert client.get_event(uid) == found
        assert [e.uid for e in wait_for_events(client, 1, action="user.*", outcome="failure")] == [other_uid]
        assert client.count_events(actor_id="user-8") == 1
        assert {e.uid for e in client.iter_events(page_size=1)} == {uid, other_uid}
        with pytest.raises(AuditClientError) as caught:
            client.search_events(outcome="maybe")
        assert (caught.value.status, caught.value.parameter) == (400, "outcome")
        exported = [json.loads(line) for line in client.export_events("ocsf", resource_id="doc-42")]
        assert exported[0]["metadata"]["uid"] == uid

    async def search_async() -> list:
        async with AsyncAuditClient(serve.url, DEV_KEY) as client:
            return [event async for event in client.iter_events(resource_id="doc-42")]

    import asyncio

    assert [event.uid for event in asyncio.run(search_async())] == [uid]

    cli_env = {**os.environ, "OTEL_AUDIT_URL": serve.url, "OTEL_AUDIT_API_KEY": DEV_KEY}
    result = subprocess.run([*CLI, "search", "--resource-id", "doc-42", "--json"], capture_output=True, text=True,
                            env=cli_env, timeout=60)
    assert result.returncode == 0, result.stderr
    [printed] = json.loads(result.stdout)
    assert printed["uid"] == uid and printed["attributes"] == found.attributes
    table = subprocess.run([*CLI, "search", "--action", "user.*"], capture_output=True, text=True, env=cli_env, timeout=60)
    assert table.returncode == 0 and "user.login" in table.stdout and "document.share" not in table.stdout
    bad = subprocess.run([*CLI, "search", "--since", "yesterday-ish"], capture_output=True, text=True, env=cli_env,
                         timeout=60)
    assert bad.returncode == 1 and "since" in bad.stderr
    denied = subprocess.run([*CLI, "search", "--api-key", "nope-nope-nope"], capture_output=True, text=True,
                            env=cli_env, timeout=60)
    assert denied.returncode == 1 and "401" in denied.stderr


def test_cli_keys_tail_and_retention_against_a_served_database(tmp_path) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    created = subprocess.run([*CLI, "keys", "create", "--db", db, "--tenant", "globex", "--scopes", "ingest,read",
                              "--json"], capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["tenant_id"] == "globex" and key["scopes"] == ["ingest", "read"]
    bad = subprocess.run([*CLI, "keys", "create", "--db", db, "--tenant", "globex", "--scopes", "root"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown scope 'root'" in bad.stderr
    server = ServeProcess(db)
    try:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        from .helpers import audit_attributes, build_request

        old = audit_attributes("user.login", **{semconv.AUDIT_RESOURCE_ID: "old"})
        new = audit_attributes("user.login", **{semconv.AUDIT_RESOURCE_ID: "new"})
        two_years_ago = time.time_ns() - 2 * 365 * 86_400 * 10**9
        request = build_request([old, new], times=[two_years_ago, time.time_ns()])
        tail = subprocess.Popen([*CLI, "tail", "--url", server.url, "--api-key", key["secret"], "--json", "--last", "0",
                                 "--interval", "0.1", "--max-events", "2"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started = threading.Thread(target=tail.stderr.readline, daemon=True)  # "following new events ..."
        started.start()
        started.join(timeout=30)
        assert not started.is_alive(), "otel-audit tail did not start following within 30 s"
        response = httpx.post(f"{server.url}/v1/logs", content=request.SerializeToString(), timeout=10,
                              headers={"authorization": f"Bearer {key['secret']}", "content-type": "application/x-protobuf"})
        assert response.status_code == 200
        assert not ExportLogsServiceResponse.FromString(response.content).HasField("partial_success")
        out, _ = tail.communicate(timeout=60)
        assert [json.loads(line)["uid"] for line in out.splitlines()] == [old[semconv.LOG_RECORD_UID],
                                                                         new[semconv.LOG_RECORD_UID]]
        dry = subprocess.run([*CLI, "retention", "--db", db, "--older-than", "365d", "--dry-run"], capture_output=True,
                             text=True, timeout=60)
        assert dry.returncode == 0 and dry.stdout.startswith("1 events")
        done = subprocess.run([*CLI, "retention", "--db", db, "--older-than", "365d"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 and done.stdout.startswith("deleted 1 events"), done.stderr
        with AuditClient(server.url, key["secret"]) as client:
            assert [event.resource_id for event in client.search_events()] == ["new"]
        listed = subprocess.run([*CLI, "keys", "list", "--db", db, "--json"], capture_output=True, text=True, timeout=60)
        key_ids = {item["key_id"] for item in json.loads(listed.stdout)}
        assert key["key_id"] in key_ids
        revoke = subprocess.run([*CLI, "keys", "revoke", "--db", db, key["key_id"]], capture_output=True, text=True,
                                timeout=60)
        assert revoke.returncode == 0
        deadline = time.monotonic() + 15  # running stores cache key lookups for 5 s
        while time.monotonic() < deadline:
            status = httpx.get(f"{server.url}/v1/events", headers={"x-api-key": key["secret"]}, timeout=5).status_code
            if status == 401:
                break
            time.sleep(0.25)
        assert status == 401
    finally:
        server.stop()


def test_sigterm_stops_serve_cleanly_with_every_accepted_event_stored(tmp_path) -> None:
    """uvicorn re-raises SIGTERM once it has stopped, so the app closes its storage itself on shutdown: the
    ingest journal is merged and SQLite's WAL checkpointed and removed."""
    from otel_audit.store import EventQuery
    from otel_audit.store.sqlite import SQLiteStorage

    from .helpers import audit_attributes, build_request

    server = ServeProcess(f"sqlite:///{tmp_path}/stop.db")
    records = [audit_attributes() for _ in range(20)]
    try:
        response = httpx.post(f"{server.url}/v1/logs", content=build_request(records).SerializeToString(), timeout=10,
                              headers={"authorization": f"Bearer {DEV_KEY}", "content-type": "application/x-protobuf"})
        assert response.status_code == 200
    finally:
        server.stop()
    assert not os.path.exists(f"{tmp_path}/stop.db-wal")
    assert os.listdir(f"{tmp_path}/stop.db-ingest.d") == []
    storage = SQLiteStorage(f"{tmp_path}/stop.db", merge_in_background=False)
    try:
        stored = {event.uid for event in storage.iterate("acme", EventQuery())}
        assert stored == {record[semconv.LOG_RECORD_UID] for record in records}
    finally:
        storage.close()


def test_serve_with_two_worker_processes_shares_one_database(tmp_path) -> None:
    from otel_audit.store import EventQuery
    from otel_audit.store.sqlite import SQLiteStorage

    from .helpers import audit_attributes, build_request

    server = ServeProcess(f"sqlite:///{tmp_path}/workers.db", "--workers", "2")
    uids: list[str] = []

    def post(count: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(count):  # new connections spread over both workers
                attributes = audit_attributes()
                uids.append(attributes[semconv.LOG_RECORD_UID])
                response = http.post("/v1/logs", content=build_request([attributes]).SerializeToString(),
                                     headers={"authorization": f"Bearer {DEV_KEY}", "content-type": "application/x-protobuf",
                                              "connection": "close"})
                assert response.status_code == 200

    try:
        post(6)
        for request in NOT_HTTP:  # the workers answer with the same protocol as a single process
            assert_json_400_then_serving(server, request)
        with AuditClient(server.url, DEV_KEY) as client:
            assert {event.uid for event in client.iter_events()} == set(uids)
        post(4)
    finally:
        server.stop()
    # a clean stop merges what the workers journaled: the database holds everything, the journal nothing
    assert os.listdir(f"{tmp_path}/workers.db-ingest.d") == []
    storage = SQLiteStorage(f"{tmp_path}/workers.db", merge_in_background=False)
    try:
        assert {event.uid for event in storage.iterate("acme", EventQuery())} == set(uids)
    finally:
        storage.close()
