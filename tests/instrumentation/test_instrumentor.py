"""AuditInstrumentor: in-process instrument()/uninstrument(), and `opentelemetry-instrument` as a real subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from instr_helpers import records_by_action, serve_asgi, serve_wsgi, wait_for_action
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import otel_audit
from otel_audit.instrumentation.instrumentor import AuditInstrumentor
from otel_audit.testing import OTLPReceiver

APPS = Path(__file__).parent / "apps"
BIN = Path(sys.executable).parent
probe_audit = otel_audit.get_audit_logger("tests.probe")


@contextmanager
def instrumented(**options: Any) -> Iterator[AuditInstrumentor]:
    instrumentor = AuditInstrumentor()
    instrumentor.instrument(**options)
    try:
        yield instrumentor
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/invoices/{invoice_id}/void")
    def void(invoice_id: str) -> dict[str, str]:
        return {"voided": invoice_id}

    @app.post("/probe")
    def probe() -> dict[str, bool]:
        probe_audit.emit("probe.ping")
        return {"ok": True}

    return app


def test_entry_point_is_registered_for_opentelemetry_instrument() -> None:
    from importlib.metadata import entry_points

    [entry] = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "otel_audit"]
    assert entry.load() is AuditInstrumentor


def test_apps_created_before_and_after_instrument_are_audited_until_uninstrument(
    audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver
) -> None:
    async def rotate(request: Any) -> JSONResponse:
        return JSONResponse({"rotated": request.path_params["key_id"]})

    before = Starlette(routes=[Route("/keys/{key_id}/rotate", rotate, methods=["POST"])])
    with instrumented():
        after = fastapi_app()
        with serve_asgi(after) as after_url, serve_asgi(before) as before_url:
            assert httpx.post(f"{after_url}/invoices/i-1/void").status_code == 200
            assert httpx.post(f"{before_url}/keys/k-1/rotate").status_code == 200
            [void] = wait_for_action(otlp_receiver, "invoice.void")
            [rotated] = wait_for_action(otlp_receiver, "key.rotate")
            AuditInstrumentor().uninstrument()
            assert httpx.post(f"{after_url}/invoices/i-2/void").status_code == 200
            assert httpx.post(f"{after_url}/probe").status_code == 200
            wait_for_action(otlp_receiver, "probe.ping")
    assert void.attributes["audit.resource.id"] == "i-1"
    assert rotated.attributes["http.route"] == "/keys/{key_id}/rotate"
    assert [record.attributes["audit.resource.id"] for record in records_by_action(otlp_receiver)["invoice.void"]] == ["i-1"]


def test_explicitly_instrumented_app_is_not_audited_twice(audit_pipeline: otel_audit.AuditPipeline,
                                                          otlp_receiver: OTLPReceiver) -> None:
    from otel_audit.instrumentation.fastapi import instrument_app

    with instrumented():
        app = instrument_app(fastapi_app())
        with serve_asgi(app) as base_url:
            assert httpx.post(f"{base_url}/invoices/i-3/void").status_code == 200
            assert httpx.post(f"{base_url}/probe").status_code == 200
            wait_for_action(otlp_receiver, "probe.ping")
    assert len(records_by_action(otlp_receiver)["invoice.void"]) == 1


def test_flask_apps_are_audited_with_no_code_change(audit_pipeline: otel_audit.AuditPipeline,
                                                    otlp_receiver: OTLPReceiver) -> None:
    with instrumented(trusted_proxies="127.0.0.1"):
        app = Flask("zero")

        @app.put("/settings/<name>")
        def put_setting(name: str) -> dict[str, str]:
            return {"name": name}

        with serve_wsgi(app) as base_url:
            assert httpx.put(f"{base_url}/settings/theme", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 200
            [record] = wait_for_action(otlp_receiver, "setting.update")
    assert record.attributes["http.route"] == "/settings/<name>"
    assert record.attributes["client.address"] == "192.0.2.1"


def test_the_audit_pipeline_is_configured_from_the_environment_when_the_first_app_is_audited(
    otlp_receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_AUDIT_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_AUDIT_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_AUDIT_FLUSH_INTERVAL", "0.05")
    monkeypatch.setenv("OTEL_AUDIT_SPOOL_DIR", str(tmp_path / "spool"))
    otel_audit.shutdown()
    with instrumented():
        assert otel_audit.current_pipeline() is None  # instrument() alone creates no spool and starts no threads
        with serve_asgi(fastapi_app()) as base_url:
            assert httpx.post(f"{base_url}/invoices/i-9/void").status_code == 200
            pipeline = otel_audit.current_pipeline()
            assert pipeline is not None
            assert pipeline.settings.endpoint == otlp_receiver.endpoint
            [record] = wait_for_action(otlp_receiver, "invoice.void")
    assert record.attributes["audit.resource.id"] == "i-9"


def test_unknown_instrument_option_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="actor_resolver"):
        AuditInstrumentor().instrument(actor_resolver=lambda scope: None)
    assert not AuditInstrumentor().is_instrumented_by_opentelemetry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def uvicorn_command(port: int) -> list[str]:
    return ["uvicorn", "zero_code_app:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]


@contextmanager
def zero_code_server(receiver: OTLPReceiver, tmp_path: Path, server: Any = uvicorn_command,
                     **extra_env: str) -> Iterator[str]:
    """`opentelemetry-instrument <server command>` as a subprocess (default: uvicorn zero_code_app:app); yields
    its base URL."""
    port = _free_port()
    env = dict(os.environ)
    for name in [name for name in env if name.startswith("OTEL_")]:
        del env[name]
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(APPS),
        "OTEL_SERVICE_NAME": "zero-code",
        # opentelemetry-distro defaults OTEL_EXPORTER_OTLP_PROTOCOL to grpc; the receiver URL here is OTLP/HTTP.
        "OTEL_AUDIT_PROTOCOL": "http/protobuf",
        "OTEL_AUDIT_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": receiver.endpoint,
        "OTEL_AUDIT_FLUSH_INTERVAL": "0.05",
        "OTEL_AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **extra_env,
    })
    command = [str(BIN / "opentelemetry-instrument"), *server(port)]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_for(receiver: OTLPReceiver, action: str, timeout: float = 20.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [record for record in receiver.records if record.attributes.get("audit.action") == action]
        if found:
            return found
        receiver.wait_for(len(receiver.records) + 1, timeout=0.2)
    return []


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_opentelemetry_instrument_audits_an_unmodified_fastapi_app(
    otlp_receiver: OTLPReceiver, tmp_path: Path, transport: str
) -> None:
    # gRPC: no OTEL_AUDIT_PROTOCOL, so the audit pipeline follows the distro's OTEL_EXPORTER_OTLP_PROTOCOL=grpc.
    env = {"OTEL_AUDIT_PROTOCOL": "", "OTEL_AUDIT_ENDPOINT": otlp_receiver.grpc_endpoint} if transport == "grpc" else {}
    with zero_code_server(otlp_receiver, tmp_path, **env) as base_url:
        assert httpx.post(f"{base_url}/documents/d-7/archive", headers={"X-Request-ID": "zc-1"}).status_code == 200
        assert httpx.get(f"{base_url}/admin").status_code == 403
        assert httpx.get(f"{base_url}/health").status_code == 200
        [archived] = _wait_for(otlp_receiver, "document.archive")
        [denied] = _wait_for(otlp_receiver, "http.get")
    assert archived.attributes["audit.resource.id"] == "d-7"
    assert archived.attributes["audit.request.id"] == "zc-1"
    assert archived.attributes["http.route"] == "/documents/{document_id}/archive"
    assert archived.resource["service.name"] == "zero-code"
    assert archived.scope_name == "otel_audit.instrumentation.asgi"
    # FastAPIInstrumentor (also loaded by opentelemetry-instrument) traces the request: the audit record carries
    # that span's trace context, so audit events and traces correlate.
    assert archived.trace_id.strip("0") and archived.span_id.strip("0")
    assert denied.attributes["audit.outcome"] == "denied"
    assert denied.attributes["http.response.status_code"] == 403
    assert "/health" not in [record.attributes.get("url.path") for record in otlp_receiver.records]


def test_disabled_instrumentations_turns_it_off(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    with zero_code_server(otlp_receiver, tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="otel_audit") as base_url:
        assert httpx.post(f"{base_url}/documents/d-8/archive").status_code == 200
        assert httpx.post(f"{base_url}/probe/first").status_code == 200
        assert httpx.post(f"{base_url}/probe/second").status_code == 200
        probes = _wait_for(otlp_receiver, "probe.ping")
        deadline = time.monotonic() + 20
        while len(probes) < 2 and time.monotonic() < deadline:
            otlp_receiver.wait_for(len(otlp_receiver.records) + 1, timeout=0.2)
            probes = [r for r in otlp_receiver.records if r.attributes.get("audit.action") == "probe.ping"]
    assert len(probes) == 2
    assert [record.attributes["audit.action"] for record in otlp_receiver.records] == ["probe.ping", "probe.ping"]


def test_opentelemetry_instrument_audits_flask_under_prefork_gunicorn(otlp_receiver: OTLPReceiver,
                                                                      tmp_path: Path) -> None:
    # instrument() runs in the gunicorn master; each forked worker configures its audit pipeline on first use.
    def gunicorn(port: int) -> list[str]:
        help_text = subprocess.run([str(BIN / "gunicorn"), "--help"], capture_output=True, text=True, timeout=30,
                                   check=False).stdout
        no_control_socket = ["--no-control-socket"] if "--no-control-socket" in help_text else []
        return ["gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", *no_control_socket, "zero_code_flask:app"]

    with zero_code_server(otlp_receiver, tmp_path, gunicorn) as base_url:
        with httpx.Client(base_url=base_url) as client:
            statuses = [client.post(f"/documents/doc-{index}").status_code for index in range(20)]
        deadline = time.monotonic() + 20
        while len(otlp_receiver.records) < 20 and time.monotonic() < deadline:
            otlp_receiver.wait_for(20, timeout=0.5)
    assert statuses == [200] * 20
    records = otlp_receiver.records
    assert sorted(record.attributes["audit.resource.id"] for record in records) == sorted(f"doc-{i}" for i in range(20))
    assert {record.attributes["http.route"] for record in records} == {"/documents/<document_id>"}
    assert len({record.attributes["audit.request.id"] for record in records}) == 20
