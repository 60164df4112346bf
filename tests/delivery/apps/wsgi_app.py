"""A WSGI app for the gunicorn test: configures otel-audit at import (so `--preload` does it in the master, before
fork) from OTEL_AUDIT_ENDPOINT / OTEL_AUDIT_SPOOL_DIR, and audits every request with the worker's pid."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

import otel_audit

faulthandler.register(signal.SIGUSR1, all_threads=True, file=sys.stderr)

otel_audit.configure(service_name="wsgi-app", flush_interval=0.05, redaction=False)
audit = otel_audit.get_audit_logger("wsgi-app")
audit.emit("app.start", metadata={"pid": os.getpid()})


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/health":
        body = b"ok"
    else:
        uid = audit.emit("document.read", metadata={"pid": os.getpid()})
        body = f"{os.getpid()} {uid}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
