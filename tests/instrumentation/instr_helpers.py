"""Real servers on 127.0.0.1 for the instrumentation tests: uvicorn (ASGI) and werkzeug (WSGI) in threads."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from werkzeug.serving import make_server

import otel_audit
from otel_audit.testing import OTLPReceiver
from otel_audit.testing.receiver import ReceivedRecord

START_TIMEOUT = 10.0


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # proxy_headers=False: uvicorn would otherwise rewrite the client from X-Forwarded-For itself (it trusts
    # 127.0.0.1 by default), and the tests are about the middleware's own trusted-proxy rule.
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, backlog=512,
                            proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        sock.close()


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Run `app` under werkzeug's threaded WSGI server on a free 127.0.0.1 port; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(START_TIMEOUT)
        server.server_close()


def records_by_action(receiver: OTLPReceiver) -> dict[str, list[ReceivedRecord]]:
    """Every received record grouped by audit.action."""
    grouped: dict[str, list[ReceivedRecord]] = {}
    for record in receiver.records:
        grouped.setdefault(record.attributes.get("audit.action", ""), []).append(record)
    return grouped


def wait_for_action(receiver: OTLPReceiver, action: str, count: int = 1) -> list[ReceivedRecord]:
    """Flush and wait (bounded) until `count` records with `action` arrived; return them."""
    pipeline = otel_audit.current_pipeline()
    assert pipeline is not None
    deadline = time.monotonic() + 10.0
    found: list[ReceivedRecord] = []
    while time.monotonic() < deadline:
        pipeline.force_flush(5_000)
        found = records_by_action(receiver).get(action, [])
        if len(found) >= count:
            break
        receiver.wait_for(len(receiver.records) + 1, timeout=0.1)
    return found
