"""A pure ASGI app for the uvicorn --workers test: each worker process imports it, configures otel-audit from
OTEL_AUDIT_ENDPOINT / OTEL_AUDIT_SPOOL_DIR and audits every request with its pid."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from typing import Any

import otel_audit

faulthandler.register(signal.SIGUSR1, all_threads=True, file=sys.stderr)

otel_audit.configure(service_name="asgi-app", flush_interval=0.05, redaction=False)
audit = otel_audit.get_audit_logger("asgi-app")
audit.emit("app.start", metadata={"pid": os.getpid()})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        body = b"ok"
    else:
        uid = audit.emit("document.read", metadata={"pid": os.getpid()})
        body = f"{os.getpid()} {uid}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
