"""A real OTLP logs receiver for tests and benchmarks: OTLP/HTTP (protobuf, JSON, gzip) and OTLP/gRPC on 127.0.0.1.

It decodes every request with opentelemetry-proto, keeps the records, and answers as told (status codes,
Retry-After, partial_success), so exporters can be tested against the wire protocol rather than a mock.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value_to_python(value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue (maps -> dict, arrays -> list, empty -> None)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [any_value_to_python(item) for item in value.array_value.values]
    return getattr(value, kind)


@dataclass
class ReceivedRecord:
    """One decoded log record with its resource and scope."""

    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    event_name: str
    severity_number: int
    severity_text: str
    timestamp: int
    observed_timestamp: int
    trace_id: str
    span_id: str
    body: Any
    attributes: dict[str, Any]
    raw: Any = field(repr=False)


@dataclass
class Reply:
    """How the receiver answers a request: an HTTP status, optional Retry-After, and partial_success."""

    status: int = 200
    retry_after: float | None = None
    rejected: int = 0
    message: str = ""


Responder = Callable[[ExportLogsServiceRequest], Reply]


class OTLPReceiver:
    """Start with `with OTLPReceiver() as receiver:`; export to `receiver.endpoint` (HTTP) or `receiver.grpc_endpoint`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, grpc: bool = False, grpc_port: int = 0) -> None:
        self.host = host
        self._port = port
        self._want_grpc = grpc
        self._grpc_port = grpc_port
        self.requests: list[ExportLogsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.replies: list[int] = []
        self.responder: Responder = lambda request: Reply()
        self._condition = threading.Condition()
        self._http: ThreadingHTTPServer | None = None
        self._grpc_server: Any = None
        self.http_port = 0
        self.grpc_port = 0

    @property
    def endpoint(self) -> str:
        """The OTLP/HTTP logs URL."""
        return f"http://{self.host}:{self.http_port}/v1/logs"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    def start(self) -> OTLPReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportLogsServiceRequest()
                is_json = self.headers.get("Content-Type", "").startswith("application/json")
                try:
                    if is_json:
                        json_format.Parse(body, request)
                    else:
                        request.ParseFromString(body)
                except Exception as exc:
                    self._answer(400, b'{"message": "%s"}' % str(exc).encode(), "application/json")
                    return
                reply = receiver._accept(request, {k.lower(): v for k, v in self.headers.items()})
                response = ExportLogsServiceResponse()
                if reply.rejected or reply.message:
                    response.partial_success.CopyFrom(
                        ExportLogsPartialSuccess(rejected_log_records=reply.rejected, error_message=reply.message)
                    )
                extra = {"Retry-After": str(int(reply.retry_after))} if reply.retry_after is not None else {}
                if is_json:
                    self._answer(reply.status, json_format.MessageToJson(response).encode(), "application/json", extra)
                else:
                    self._answer(reply.status, response.SerializeToString(), "application/x-protobuf", extra)

            def _answer(self, status: int, payload: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self._http = ThreadingHTTPServer((self.host, self._port), Handler)
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="otlp-receiver-http", daemon=True).start()
        if self._want_grpc:
            self._start_grpc()
        return self

    def _start_grpc(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

        receiver = self

        class Servicer(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: ExportLogsServiceRequest, context: Any) -> ExportLogsServiceResponse:
                metadata = {key: value for key, value in context.invocation_metadata()}
                reply = receiver._accept(request, metadata)
                if reply.status != 200:
                    code = grpc.StatusCode.UNAVAILABLE if reply.status in (429, 503) else grpc.StatusCode.INVALID_ARGUMENT
                    context.abort(code, reply.message or f"status {reply.status}")
                response = ExportLogsServiceResponse()
                if reply.rejected or reply.message:
                    response.partial_success.rejected_log_records = reply.rejected
                    response.partial_success.error_message = reply.message
                return response

        self._grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Servicer(), self._grpc_server)
        self.grpc_port = self._grpc_server.add_insecure_port(f"{self.host}:{self._grpc_port}")
        self._grpc_server.start()

    def _accept(self, request: ExportLogsServiceRequest, headers: dict[str, str]) -> Reply:
        reply = self.responder(request)
        with self._condition:
            self.replies.append(reply.status)
            if 200 <= reply.status < 300:
                self.requests.append(request)
                self.headers.append(headers)
            self._condition.notify_all()
        return reply

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def records(self) -> list[ReceivedRecord]:
        """Every record accepted so far, in arrival order."""
        with self._condition:
            requests = list(self.requests)
        return [record for request in requests for record in decode_request(request)]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRecord]:
        """Wait until at least `count` records arrived (or the timeout passed), then return all of them."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while sum(_count(request) for request in self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
        return self.records


def _count(request: ExportLogsServiceRequest) -> int:
    return sum(len(scope.log_records) for rl in request.resource_logs for scope in rl.scope_logs)


def decode_request(request: ExportLogsServiceRequest) -> list[ReceivedRecord]:
    """Flatten an ExportLogsServiceRequest into ReceivedRecords."""
    records = []
    for resource_logs in request.resource_logs:
        resource = {kv.key: any_value_to_python(kv.value) for kv in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append(
                    ReceivedRecord(
                        resource=resource,
                        scope_name=scope_logs.scope.name,
                        scope_version=scope_logs.scope.version,
                        event_name=record.event_name,
                        severity_number=record.severity_number,
                        severity_text=record.severity_text,
                        timestamp=record.time_unix_nano,
                        observed_timestamp=record.observed_time_unix_nano,
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        body=any_value_to_python(record.body) if record.HasField("body") else None,
                        attributes={kv.key: any_value_to_python(kv.value) for kv in record.attributes},
                        raw=record,
                    )
                )
    return records
