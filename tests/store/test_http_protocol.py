"""The HTTP/1.1 protocols `otel-audit serve` runs: bytes uvicorn cannot parse get the store's JSON 400, with both
parsers (httptools, which the store extra installs, and h11, uvicorn's fallback)."""

from __future__ import annotations

import json

import httpx
import pytest

from otel_audit.store import create_app
from otel_audit.store.http_protocol import HTTP_PROTOCOL, H11JsonErrors, bad_request

from .helpers import ServerThread, exchange_raw


def test_the_store_extra_runs_the_httptools_parser() -> None:
    assert HTTP_PROTOCOL.__name__ == "HttpToolsJsonErrors"


def test_bad_request_is_a_complete_response_with_the_default_headers() -> None:
    response = bad_request([(b"server", b"uvicorn"), (b"date", b"Sat, 05 Dec 2026 00:00:00 GMT")], 'a "quoted" reason')
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert lines[1:] == [b"server: uvicorn", b"date: Sat, 05 Dec 2026 00:00:00 GMT", b"content-type: application/json",
                         b"content-length: %d" % len(body), b"connection: close"]
    assert json.loads(body) == {"error": "malformed_http", "message": 'a "quoted" reason'}


@pytest.mark.parametrize("protocol", [HTTP_PROTOCOL, H11JsonErrors], ids=lambda protocol: protocol.__name__)
def test_a_request_line_that_is_not_http_gets_json_and_the_server_keeps_serving(storage, protocol) -> None:
    with ServerThread(create_app(storage), http=protocol) as server:
        status, headers, body = exchange_raw(server.port, b"\x16\x03\x01 definitely not HTTP\r\n\r\n")
        assert status == b"HTTP/1.1 400 Bad Request"
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"error": "malformed_http", "message": "Invalid HTTP request received."}
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
