"""End to end over real OTLP: configure() -> filter -> redaction/pseudonyms -> delivery -> OTLPReceiver on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import otel_audit
from otel_audit import semconv
from otel_audit.processors import PseudonymVault, SubjectForgotten
from otel_audit.processors.pseudonym import pseudonym_for
from otel_audit.testing import OTLPReceiver, Reply

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1LTEiLCJyb2xlIjoiYWRtaW4ifQ.bG9uZy1zaWduYXR1cmUtYnl0ZXMtaGVyZQ"
SECRETS = {
    "password": "correct horse battery staple",
    "stripe": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "card": "5500 0055 5555 5559",
    "db": "s3cr3t-db-pass",
    "jwt": JWT,
}
KEY = "e2e-pseudonym-key-0123456789abcdef"


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_exported_record_has_no_secret_left(otlp_receiver: OTLPReceiver, tmp_path: Path, protocol: str) -> None:
    endpoint = otlp_receiver.endpoint if protocol == "http/protobuf" else otlp_receiver.grpc_endpoint
    pipeline = otel_audit.configure(
        service_name="e2e", endpoint=endpoint, protocol=protocol, flush_interval=0.05, spool_dir=str(tmp_path / "spool"),
        policy=[{"level": "none", "actions": ["health.*"]}],
    )
    logger = otel_audit.get_audit_logger("e2e")
    logger.emit("health.check", actor="probe")
    logger.emit(
        "user.password_change",
        actor={"id": "u-1", "name": f"Ann (card {SECRETS['card']})"},
        metadata={
            "password": SECRETS["password"],
            "headers": {"Authorization": f"Bearer {SECRETS['jwt']}", "X-Request": "r-1"},
            "config": [f"stripe_key={SECRETS['stripe']}", {"aws": SECRETS["aws"]}],
        },
        changes={"password": ("old-pass-1", SECRETS["password"])},
    )
    with pytest.raises(RuntimeError), logger.action("db.migrate", resource="database"):
        raise RuntimeError(f"connect failed: postgresql://admin:{SECRETS['db']}@10.0.0.5/prod")
    assert pipeline.force_flush(10_000)

    records = otlp_receiver.wait_for(2, timeout=10)
    assert sorted(record.event_name for record in records) == ["audit.db.migrate", "audit.user.password_change"]
    wire = b"".join(request.SerializeToString() for request in otlp_receiver.requests)
    for name, secret in SECRETS.items():
        assert secret.encode() not in wire, name
    assert b"old-pass-1" not in wire

    change = next(record for record in records if record.event_name == "audit.user.password_change")
    assert change.attributes[semconv.AUDIT_METADATA]["headers"] == {"Authorization": "[REDACTED]", "X-Request": "r-1"}
    assert change.attributes[semconv.AUDIT_CHANGES]["password"] == {"old": "[REDACTED]", "new": "[REDACTED]"}
    assert set(change.attributes[semconv.AUDIT_REDACTED]) == {
        semconv.USER_NAME,
        "audit.metadata.password",
        "audit.metadata.headers.Authorization",
        "audit.metadata.config[0]",
        "audit.metadata.config[1].aws",
        "audit.changes.password",
    }
    failure = next(record for record in records if record.event_name == "audit.db.migrate")
    assert failure.attributes[semconv.AUDIT_REASON] == "connect failed: postgresql://admin:[REDACTED]@10.0.0.5/prod"


def test_forget_leaves_exported_events_byte_identical(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    vault_path = tmp_path / "vault.sqlite"
    pipeline = otel_audit.configure(
        service_name="e2e", endpoint=otlp_receiver.endpoint, flush_interval=0.05, spool_dir=str(tmp_path / "spool"),
        pseudonymization={"key": KEY, "vault": str(vault_path)},
    )
    logger = otel_audit.get_audit_logger("e2e")
    logger.emit("user.login", actor={"id": "u-9", "email": "dora@example.com", "name": "Dora"})
    logger.emit("document.read", actor={"id": "u-9", "email": "dora@example.com"}, resource=("document", "d-1"))
    assert pipeline.force_flush(10_000)
    records = otlp_receiver.wait_for(2, timeout=10)
    stored = tmp_path / "stored-events.bin"  # what a backend keeps: the records exactly as received
    stored.write_bytes(b"".join(record.raw.SerializeToString() for record in records))
    before = stored.read_bytes()
    wire = b"".join(request.SerializeToString() for request in otlp_receiver.requests)
    assert b"dora@example.com" not in wire and b"Dora" not in wire
    pseudonym = pseudonym_for(KEY.encode(), "dora@example.com")
    assert {record.attributes[semconv.USER_EMAIL] for record in records} == {pseudonym}

    vault = PseudonymVault(vault_path, KEY)
    assert vault.reveal(pseudonym) == "dora@example.com"
    assert vault.forget("u-9")
    with pytest.raises(SubjectForgotten):
        vault.reveal(pseudonym)
    vault.close()
    assert stored.read_bytes() == before  # erasure touched the vault only: stored events (and hash chains) intact


def test_spooled_records_on_disk_are_redacted(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    """While the collector is down, records wait in the durable spool: it must hold no secret either."""
    accepting = threading.Event()
    otlp_receiver.responder = lambda request: Reply() if accepting.is_set() else Reply(status=503, retry_after=0)
    spool = tmp_path / "spool"
    pipeline = otel_audit.configure(service_name="e2e", endpoint=otlp_receiver.endpoint, flush_interval=0.05, spool_dir=str(spool))
    otel_audit.get_audit_logger("e2e").emit(
        "user.password_change", actor="u-1", metadata={"password": SECRETS["password"], "note": f"key {SECRETS['aws']}"}
    )
    on_disk = b"".join(path.read_bytes() for path in spool.rglob("*") if path.is_file())
    assert b"user.password_change" in on_disk  # the record is really there, waiting
    assert SECRETS["password"].encode() not in on_disk and SECRETS["aws"].encode() not in on_disk
    accepting.set()
    assert pipeline.force_flush(10_000)
    (record,) = otlp_receiver.wait_for(1, timeout=10)
    assert record.attributes[semconv.AUDIT_METADATA] == {"password": "[REDACTED]", "note": "key [REDACTED]"}
