"""Helpers of the alert tests: OTLP requests of login events, a real webhook receiver, a served store with lifespan."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_audit import semconv
from otel_audit.logger import new_uid

NS = 1_000_000_000
SEED_RULE = {
    "name": "Excessive Failed Logins",
    "type": "threshold",
    "condition": {"action": "user.login", "outcome": "failure", "count": 5, "window_seconds": 300,
                  "group_by": ["user.id"]},
    "severity": "high",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; bounded in time and in rounds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def login_event(user: str = "mallory", outcome: str = "failure", action: str = "user.login",
                uid: str | None = None, **extra: Any) -> dict[str, Any]:
    """The attributes of a login audit record."""
    attributes = {
        semconv.AUDIT_ACTION: action, semconv.AUDIT_OUTCOME: outcome, semconv.LOG_RECORD_UID: uid or new_uid(),
        semconv.AUDIT_ACTOR_TYPE: "user", semconv.USER_ID: user, semconv.CLIENT_ADDRESS: "203.0.113.7",
    }
    attributes.update(extra)
    return attributes


def otlp_request(records: Sequence[dict[str, Any]], times: Sequence[int]) -> bytes:
    """A protobuf ExportLogsServiceRequest with one audit record per attribute map, at the given times."""
    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    scope_logs.scope.name = "alert-tests"
    for attributes, time_unix_nano in zip(records, times, strict=True):
        record = scope_logs.log_records.add()
        record.event_name = semconv.event_name(attributes[semconv.AUDIT_ACTION])
        record.time_unix_nano = time_unix_nano
        record.observed_time_unix_nano = time_unix_nano
        record.severity_number = 13
        for key, value in attributes.items():
            entry = record.attributes.add()
            entry.key = key
            entry.value.string_value = value
    return request.SerializeToString()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 recording POSTs; answers `statuses` in turn (then 200), can be held."""

    port: int = field(default_factory=free_port)
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    answered: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.release.set()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bind(self) -> WebhookReceiver:
        """Hold the port without listening: connections are refused (the receiver is "down")."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.release.wait(30)
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status < 300:
                        receiver.received.append(Received(dict(self.headers.items()), body))
                    receiver.answered.append(status)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.allow_reuse_address = True
        self._server.server_bind()
        return self

    def start(self) -> WebhookReceiver:
        """Listen and serve (binding first if needed)."""
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._server.server_activate()
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StoreServer:
    """The store app under uvicorn on 127.0.0.1 in a thread, with its lifespan (so the delivery worker runs)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="alert-test-store", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StoreServer:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "the store to start", timeout=15)
        if not self.server.started:
            raise RuntimeError("the store did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class Api:
    """A tenant's view of a served store: httpx calls with its admin key."""

    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=15)

    def ingest(self, records: Sequence[dict[str, Any]], times: Sequence[int]) -> httpx.Response:
        response = self.http.post("/v1/logs", content=otlp_request(records, times),
                                  headers={"content-type": "application/x-protobuf"})
        assert response.status_code == 200, response.text
        return response

    def create_webhook(self, url: str, **extra: Any) -> dict[str, Any]:
        response = self.http.post("/v1/webhooks", json={"url": url, **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def create_rule(self, **overrides: Any) -> dict[str, Any]:
        response = self.http.post("/v1/alert-rules", json={**SEED_RULE, **overrides})
        assert response.status_code == 201, response.text
        return response.json()

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("/v1/alerts", params=params)
        assert response.status_code == 200, response.text
        return response.json()["alerts"]

    def deliveries(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("/v1/webhook-deliveries", params=params)
        assert response.status_code == 200, response.text
        return response.json()["deliveries"]

    def close(self) -> None:
        self.http.close()
