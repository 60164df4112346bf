"""Settings come from arguments first, then OTEL_AUDIT_* and the standard OTEL_* variables; bad values fail early."""

from __future__ import annotations

import pytest

from otel_audit.config import AuditSettings, ConfigurationError


def test_defaults(monkeypatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_AUDIT_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    settings = AuditSettings.resolve()
    assert settings.endpoint == "http://localhost:4318/v1/logs"
    assert (settings.protocol, settings.delivery, settings.full_policy) == ("http/protobuf", "disk", "block")


def test_base_endpoint_gets_signal_path_and_specific_endpoint_is_kept(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert AuditSettings.resolve().endpoint == "http://collector:4318/v1/logs"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:9000/custom")
    assert AuditSettings.resolve().endpoint == "http://logs:9000/custom"
    monkeypatch.setenv("OTEL_AUDIT_ENDPOINT", "http://audit:4318/v1/logs")
    assert AuditSettings.resolve().endpoint == "http://audit:4318/v1/logs"
    assert AuditSettings.resolve(endpoint="http://arg:1").endpoint == "http://arg:1/v1/logs"


def test_grpc_endpoint_is_used_as_given(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_AUDIT_ENDPOINT", raising=False)
    settings = AuditSettings.resolve()
    assert (settings.protocol, settings.endpoint) == ("grpc", "http://localhost:4317")


def test_timeout_env_is_milliseconds_argument_is_seconds(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    assert AuditSettings.resolve().timeout == 2.5
    assert AuditSettings.resolve(timeout=3).timeout == 3.0


def test_audit_variables(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_AUDIT_DELIVERY", "strict")
    monkeypatch.setenv("OTEL_AUDIT_SPOOL_DIR", "/var/spool/audit")
    monkeypatch.setenv("OTEL_AUDIT_FLUSH_INTERVAL", "0.25")
    monkeypatch.setenv("OTEL_AUDIT_MAX_BATCH_SIZE", "100")
    settings = AuditSettings.resolve()
    assert (settings.delivery, settings.spool_dir, settings.flush_interval, settings.max_batch_size) == (
        "strict", "/var/spool/audit", 0.25, 100)
    assert AuditSettings.resolve(delivery="memory").delivery == "memory"


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("OTEL_AUDIT_DELIVERY", "cloud", "OTEL_AUDIT_DELIVERY: must be one of disk, strict, memory"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL: must be one of"),
        ("OTEL_AUDIT_MAX_BATCH_SIZE", "many", "OTEL_AUDIT_MAX_BATCH_SIZE: expected a int"),
        ("OTEL_AUDIT_FLUSH_INTERVAL", "-1", "OTEL_AUDIT_FLUSH_INTERVAL: must be >="),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "OTEL_EXPORTER_OTLP_HEADERS: expected key=value"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "collector:4318", "must start with http://"),
    ],
)
def test_bad_values_name_their_source(monkeypatch, env: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        AuditSettings.resolve()
