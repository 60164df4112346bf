"""Builders for OTLP requests and a real uvicorn server around the store app, for the store tests."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_audit import semconv
from otel_audit.logger import new_uid


def set_any_value(target: AnyValue, value: Any) -> None:
    """Fill an OTLP AnyValue from a Python value (the inverse of the store's decoding)."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, Mapping):
        target.kvlist_value.SetInParent()
        for key, item in value.items():
            entry = target.kvlist_value.values.add()
            entry.key = key
            set_any_value(entry.value, item)
    elif isinstance(value, (list, tuple)):
        target.array_value.SetInParent()
        for item in value:
            set_any_value(target.array_value.values.add(), item)
    elif value is not None:
        raise TypeError(type(value))


def audit_attributes(action: str = "document.share", **extra: Any) -> dict[str, Any]:
    """Attributes of a valid audit record (a fresh uid unless one is given)."""
    attributes: dict[str, Any] = {
        semconv.AUDIT_ACTION: action,
        semconv.AUDIT_OUTCOME: "success",
        semconv.LOG_RECORD_UID: new_uid(),
        semconv.AUDIT_ACTOR_TYPE: "user",
        semconv.USER_ID: "alice",
        semconv.AUDIT_RESOURCE_TYPE: "document",
        semconv.AUDIT_RESOURCE_ID: "doc-1",
    }
    attributes.update(extra)
    return {key: value for key, value in attributes.items() if value is not None}


def build_request(
    records: Sequence[Mapping[str, Any]],
    *,
    resource: Mapping[str, Any] | None = None,
    event_names: Sequence[str | None] | None = None,
    times: Sequence[int] | None = None,
) -> ExportLogsServiceRequest:
    """An ExportLogsServiceRequest with one record per attribute map (event_name from audit.action by default)."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in (resource or {"service.name": "store-tests"}).items():
        entry = resource_logs.resource.attributes.add()
        entry.key = key
        set_any_value(entry.value, value)
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "tests"
    scope_logs.scope.version = "1.0"
    now = time.time_ns()
    for index, attributes in enumerate(records):
        record = scope_logs.log_records.add()
        name = event_names[index] if event_names else None
        action = attributes.get(semconv.AUDIT_ACTION)
        record.event_name = name if name is not None else (semconv.event_name(action) if isinstance(action, str) else "")
        record.time_unix_nano = times[index] if times else now + index
        record.observed_time_unix_nano = now
        record.severity_number = 9
        record.severity_text = "INFO"
        record.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
        record.span_id = bytes.fromhex("b7ad6b7169203331")
        for key, value in attributes.items():
            entry = record.attributes.add()
            entry.key = key
            set_any_value(entry.value, value)
    return request


def otlp_json(request: ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON as the spec writes it: protobuf's JSON mapping, but traceId/spanId in hex (not base64)."""
    document = json_format.MessageToDict(request)
    for resource_logs in document.get("resourceLogs", []):
        for scope_logs in resource_logs.get("scopeLogs", []):
            for record in scope_logs.get("logRecords", []):
                for name in ("traceId", "spanId"):
                    if name in record:
                        record[name] = base64.b64decode(record[name]).hex()
    return json.dumps(document).encode()


def exchange_raw(port: int, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Send bytes on a new connection and read the answer until the server closes it: status line, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status.encode(), headers, body


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread (a real socket)."""

    def __init__(self, app: Any, http: Any = "auto") -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", access_log=False,
                                lifespan="off", http=http)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="store-test-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
