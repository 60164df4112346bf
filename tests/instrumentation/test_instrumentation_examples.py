"""examples/fastapi_app.py and examples/flask_app.py do what their docstrings say, under real servers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import httpx
from instr_helpers import serve_asgi, serve_wsgi, wait_for_action

import otel_audit
from otel_audit.testing import OTLPReceiver

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fastapi_example(audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    with serve_asgi(load("fastapi_app").app) as base_url:
        shared = httpx.post(f"{base_url}/documents/d-1/share", headers={"Authorization": "Bearer alice", "X-Tenant": "acme"})
        denied = httpx.get(f"{base_url}/documents/d-1")
        [share] = wait_for_action(otlp_receiver, "document.share")
        [notification] = wait_for_action(otlp_receiver, "notification.send")
        [read] = wait_for_action(otlp_receiver, "document.read")
    assert (shared.status_code, denied.status_code) == (200, 401)
    for record in (share, notification):
        assert record.attributes["user.id"] == "alice"
        assert record.attributes["audit.tenant.id"] == "acme"
    assert notification.attributes["audit.request.id"] == share.attributes["audit.request.id"]
    assert read.attributes["audit.outcome"] == "denied"


def test_flask_example(audit_pipeline: otel_audit.AuditPipeline, otlp_receiver: OTLPReceiver) -> None:
    with serve_wsgi(load("flask_app").app) as base_url:
        deleted = httpx.delete(f"{base_url}/documents/7", headers={"Authorization": "Bearer alice",
                                                                   "X-Forwarded-For": "198.51.100.23"})
        denied = httpx.delete(f"{base_url}/documents/8")
        records = wait_for_action(otlp_receiver, "document.delete", 2)
        [unindex] = wait_for_action(otlp_receiver, "search.unindex")
    assert (deleted.status_code, denied.status_code) == (200, 401)
    by_id = {record.attributes["audit.resource.id"]: record.attributes for record in records}
    assert by_id["7"]["audit.outcome"] == "success"
    assert by_id["7"]["user.id"] == "alice"
    assert by_id["7"]["client.address"] == "198.51.100.23"
    assert by_id["8"]["audit.outcome"] == "denied"
    assert unindex.attributes["user.id"] == "alice"
    assert unindex.attributes["audit.request.id"] == by_id["7"]["audit.request.id"]
