"""OTLP/HTTP protobuf transport: POST a framed ExportLogsServiceRequest, report what the receiver said.

The standard library's http.client over one keep-alive connection, used only by the exporter thread. It makes
fewer system calls per request than urllib3 did (no liveness poll, no timeout change per request), and each
system call hands the GIL over: in a busy server the exporter then waits for the request threads to give it
back, several milliseconds each time (measured: docs/delivery.md). Retrying is the caller's job: this class
never retries a request the receiver answered and never raises for HTTP or connection failures.
"""

from __future__ import annotations

import contextlib
import email.utils
# socket.getaddrinfo looks the idna codec up lazily, on the first connection. If a fork (gunicorn --preload)
# catches the parent's exporter thread inside that import, the child's import fails and the codec registry caches
# the miss for good: every send of that worker then fails with "unknown encoding: idna". Importing it here,
# before any exporter thread exists, closes that window.
import encodings.idna  # noqa: F401
import gzip
import http.client
import json
import ssl
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceResponse,
)

from ..config import AuditSettings

USER_AGENT = "otel-audit/0.1.0 (OTLP/HTTP protobuf)"
_ERROR_TEXT_LIMIT = 512


@dataclass
class SendResult:
    """The receiver's answer; `status` 0 means no answer (connection refused, timeout, reset)."""

    status: int
    message: str = ""
    retry_after: float | None = None
    rejected: int = 0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(body: bytes, content_type: str) -> str:
    if "json" in content_type:
        try:
            document = json.loads(body)
            if isinstance(document, dict) and document.get("message"):
                return str(document["message"])[:_ERROR_TEXT_LIMIT]
        except ValueError:
            pass
    if "protobuf" in content_type:
        response = ExportLogsServiceResponse()
        with contextlib.suppress(Exception):  # a google.rpc.Status or garbage: fall back to the text
            response.ParseFromString(body)
        if response.partial_success.error_message:
            return response.partial_success.error_message[:_ERROR_TEXT_LIMIT]
    return body[:_ERROR_TEXT_LIMIT].decode("utf-8", "replace").strip()


class HttpSender:
    """Sends request bodies to the configured OTLP/HTTP logs endpoint."""

    def __init__(self, settings: AuditSettings) -> None:
        parts = urlsplit(settings.endpoint)
        self.endpoint = settings.endpoint
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/v1/logs") + (f"?{parts.query}" if parts.query else "")
        self._timeout = settings.timeout
        self._connection: http.client.HTTPConnection | None = None
        self._compression = settings.compression
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT}
        self._headers.update(settings.headers)
        if self._compression:
            self._headers["Content-Encoding"] = self._compression

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _exchange(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        """POST once; a kept-alive connection the receiver had already closed is dialled again, once."""
        reused = self._connection is not None
        connection = self._connection or self._connect()
        self._connection = connection
        try:
            connection.request("POST", self._path, body=body, headers=self._headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if reused and isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
                return self._exchange(body)
            raise
        if response.will_close:
            self.close()
        return response, data

    def send(self, body: bytes) -> SendResult:
        if self._compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif self._compression == "deflate":
            body = zlib.compress(body)
        try:
            response, data = self._exchange(body)
        except (OSError, http.client.HTTPException) as exc:
            return SendResult(status=0, message=f"{type(exc).__name__}: {exc}")
        status = response.status
        content_type = response.getheader("Content-Type", "")
        if 200 <= status < 300:
            result = SendResult(status=status)
            if data and "json" not in content_type:
                answer = ExportLogsServiceResponse()
                try:
                    answer.ParseFromString(data)
                except Exception:  # noqa: BLE001 - a 2xx with an unreadable body is still an acknowledgement
                    return result
                result.rejected = answer.partial_success.rejected_log_records
                result.message = answer.partial_success.error_message
            elif data:
                try:
                    partial = json.loads(data).get("partialSuccess") or {}
                    result.rejected = int(partial.get("rejectedLogRecords", 0))
                    result.message = str(partial.get("errorMessage", ""))
                except (ValueError, AttributeError):
                    pass
            return result
        return SendResult(
            status=status,
            message=_error_message(data, content_type) or f"HTTP {status}",
            retry_after=parse_retry_after(response.getheader("Retry-After")),
        )

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
