"""OTLP/HTTP protobuf transport: POST a framed ExportLogsServiceRequest, report what the receiver said.

urllib3 (a dependency of the SDK's HTTP exporter through requests) with one pooled keep-alive connection; it
measured faster per request than requests and httpx (see benchmarks/bench_delivery.py). Retrying is the caller's
job: this class never retries and never raises for HTTP or connection failures.
"""

from __future__ import annotations

import contextlib
import email.utils
# urllib3 looks the idna codec up lazily, on the first connection. If a fork (gunicorn --preload) catches the
# parent's exporter thread inside that import, the child's import fails and the codec registry caches the miss for
# good: every send of that worker then fails with "unknown encoding: idna". Importing it here, before any exporter
# thread exists, closes that window.
import encodings.idna  # noqa: F401
import gzip
import json
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
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
        self._path = (parts.path or "/v1/logs") + (f"?{parts.query}" if parts.query else "")
        self._pool = urllib3.connection_from_url(
            settings.endpoint, maxsize=1, block=True, timeout=urllib3.Timeout(total=settings.timeout), retries=False
        )
        self._compression = settings.compression
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": USER_AGENT}
        self._headers.update(settings.headers)
        if self._compression:
            self._headers["Content-Encoding"] = self._compression

    def send(self, body: bytes) -> SendResult:
        if self._compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif self._compression == "deflate":
            body = zlib.compress(body)
        try:
            response = self._pool.urlopen("POST", self._path, body=body, headers=self._headers, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            return SendResult(status=0, message=f"{type(exc).__name__}: {exc}")
        status = response.status
        content_type = response.headers.get("Content-Type", "")
        if 200 <= status < 300:
            result = SendResult(status=status)
            if response.data and "json" not in content_type:
                answer = ExportLogsServiceResponse()
                try:
                    answer.ParseFromString(response.data)
                except Exception:  # noqa: BLE001 - a 2xx with an unreadable body is still an acknowledgement
                    return result
                result.rejected = answer.partial_success.rejected_log_records
                result.message = answer.partial_success.error_message
            elif response.data:
                try:
                    partial = json.loads(response.data).get("partialSuccess") or {}
                    result.rejected = int(partial.get("rejectedLogRecords", 0))
                    result.message = str(partial.get("errorMessage", ""))
                except (ValueError, AttributeError):
                    pass
            return result
        return SendResult(
            status=status,
            message=_error_message(response.data or b"", content_type) or f"HTTP {status}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def close(self) -> None:
        self._pool.close()
