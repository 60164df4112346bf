"""uvicorn's HTTP/1.1 protocols for `otel-audit serve`, answering bytes that are not HTTP with a JSON 400.

uvicorn answers a request it cannot parse itself, before the app sees it, with a plain-text 400. Every other
error of the store is JSON (`{"error": code, "message": ...}`), and clients rely on that, so these subclasses
replace that one answer (`send_400_response`, which both of uvicorn's HTTP/1.1 protocols call on a parser error)
and change nothing else: the connection is still closed after it, the server keeps serving the others.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: uvicorn's pure-Python parser (h11) only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

MALFORMED_HTTP = "malformed_http"


def bad_request(default_headers: list[tuple[bytes, bytes]], message: str) -> bytes:
    """A complete `400 Bad Request` response with the store's JSON error body, closing the connection."""
    body = json.dumps({"error": MALFORMED_HTTP, "message": message}).encode()
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n"]
    return b"".join(head) + body


class _JsonBadRequest:
    """The one method the protocols below replace; everything else is uvicorn's."""

    transport: asyncio.Transport
    server_state: Any

    def send_400_response(self, msg: str) -> None:
        self.transport.write(bad_request(self.server_state.default_headers, msg))
        self.transport.close()


class H11JsonErrors(_JsonBadRequest, H11Protocol):
    """uvicorn's h11 protocol with the JSON 400."""


if HttpToolsProtocol is not None:

    class HttpToolsJsonErrors(_JsonBadRequest, HttpToolsProtocol):
        """uvicorn's httptools protocol (the faster parser, installed by the `store` extra) with the JSON 400."""

    HTTP_PROTOCOL: type[asyncio.Protocol] = HttpToolsJsonErrors
else:
    HTTP_PROTOCOL = H11JsonErrors
