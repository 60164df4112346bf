"""The main job (`make demo`): the whole flow on one machine, with nothing to install beyond the package.

1. start the otel-audit store (`otel-audit serve`, embedded SQLite) and a webhook receiver on 127.0.0.1;
2. create the seed's alert rule "Excessive Failed Logins" (5 failed logins by one user within 300 s) and a webhook;
3. run the document-sharing service (examples/document_service.py) with the library exporting to the store;
4. print what search finds, the alert that fired, and the signed webhook delivery the receiver verified.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))

import otel_audit  # noqa: E402
from document_service import DocumentService, run_sample_traffic  # noqa: E402
from otel_audit.client import AuditClient  # noqa: E402
from otel_audit.webhook_signature import WebhookSignatureError, verify  # noqa: E402

API_KEY = "demo-key-acme"
TENANT = "acme"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebhookReceiver:
    """A tiny Slack-like endpoint that verifies each delivery's signature before accepting it."""

    def __init__(self) -> None:
        self.secret = ""
        self.verified: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the demo's output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    verify(body, self.headers, receiver.secret)
                except WebhookSignatureError as exc:
                    self.send_response(401)
                    self.end_headers()
                    print(f"  webhook receiver refused a delivery: {exc}")
                    return
                receiver.verified.append(json.loads(body))
                receiver.arrived.set()
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/security"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start_store(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_audit.cli", "serve", "--db", f"sqlite:///{workdir / 'audit.db'}",
         "--port", str(port), "--dev-key", f"{API_KEY}:{TENANT}", "--webhook-allow-host", "127.0.0.1"],
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"otel-audit serve exited with {process.returncode}")
        time.sleep(0.1)
    process.terminate()
    raise SystemExit("otel-audit serve did not become ready within 30 s")


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        store, base_url = start_store(workdir)
        receiver = WebhookReceiver()
        try:
            with AuditClient(base_url, API_KEY) as client:
                webhook = client.create_webhook(receiver.url, description="security channel")
                receiver.secret = webhook.secret or ""
                client.create_alert_rule(
                    "Excessive Failed Logins",
                    {"action": "user.login", "outcome": "failure", "count": 5, "window_seconds": 300,
                     "group_by": ["user.id"]},
                    severity="high",
                    webhook_ids=[webhook.id],
                )
                print(f"store on {base_url} (SQLite), alert rule and webhook {receiver.url} created\n")

                pipeline = otel_audit.configure(
                    service_name="document-service",
                    endpoint=f"{base_url}/v1/logs",
                    headers={"authorization": f"Bearer {API_KEY}"},
                    spool_dir=str(workdir / "spool"),
                    flush_interval=0.1,
                )
                run_sample_traffic(DocumentService())
                pipeline.force_flush()
                wait_until(lambda: client.count_events() >= 10, timeout=15)

                events = list(client.iter_events())
                print(f"search found {len(events)} events (newest first):")
                print(f"  {'time':<12} {'action':<16} {'outcome':<8} {'actor':<8} {'resource':<22} reason")
                for event in events:
                    resource = f"{event.resource_type or ''}/{event.resource_id or ''}".strip("/")
                    print(f"  {event.time.strftime('%H:%M:%S.%f')[:12]} {event.action:<16} {event.outcome:<8} "
                          f"{event.actor_id or '':<8} {resource:<22} {event.attributes.get('audit.reason', '')}")
                denied = client.search_events(outcome="denied")
                print(f"\nsearch outcome=denied: {[(e.action, e.actor_id) for e in denied]}")

                receiver.arrived.wait(timeout=15)
                for alert in client.list_alerts():
                    print(f"\nalert fired: {alert.rule['name']} ({alert.rule['severity']}) for {alert.group}: "
                          f"{alert.count} events within {alert.window_seconds:.0f} s")
                for payload in receiver.verified:
                    print(f"webhook delivery received, signature verified: {json.dumps(payload)[:160]}...")
                for delivery in client.list_webhook_deliveries():
                    print(f"delivery log: {delivery.status} after {delivery.attempts} attempt(s), "
                          f"HTTP {delivery.last_status_code}")
                if not receiver.verified:
                    raise SystemExit("no webhook delivery arrived within 15 s")
        finally:
            otel_audit.shutdown()
            store.terminate()
            store.wait(timeout=10)
            receiver.server.shutdown()


if __name__ == "__main__":
    main()
