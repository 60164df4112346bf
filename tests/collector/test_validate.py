"""Every pipeline config in collector-config/ is accepted by the real otelcol-audit binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import CONFIG_DIR, TEST_TIMEOUT_S, validate_config

pytestmark = [pytest.mark.collector, pytest.mark.timeout(TEST_TIMEOUT_S)]

#: What the configs need from the environment to validate (values are never contacted).
VALIDATE_ENV = {
    "OTEL_AUDIT_STORE_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_AUDIT_INGEST_KEY": "validate-only",
    "OTEL_AUDIT_ELASTIC_OTLP_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_AUDIT_ELASTIC_API_KEY": "validate-only",
}

PIPELINE_CONFIGS = sorted(
    p for p in CONFIG_DIR.rglob("*.yaml") if p.name != "builder-config.yaml"
)


def test_all_expected_configs_exist() -> None:
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in PIPELINE_CONFIGS}
    assert {
        "agent.yaml",
        "gateway.yaml",
        "variants/gateway-clickhouse.yaml",
        "variants/gateway-elasticsearch.yaml",
        "variants/gateway-kafka.yaml",
        "variants/gateway-s3.yaml",
    } <= names


@pytest.mark.parametrize(
    "config", PIPELINE_CONFIGS, ids=[p.relative_to(CONFIG_DIR).as_posix() for p in PIPELINE_CONFIGS]
)
def test_config_validates(collector_binary: Path, config: Path) -> None:
    result = validate_config(collector_binary, config, VALIDATE_ENV)
    assert result.returncode == 0, f"{config} does not validate:\n{result.stdout}"


def _broken_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (CONFIG_DIR / name).read_text()
    assert old in text, f"test setup: {old!r} not in {name}"
    broken = tmp_path / f"broken-{name}"
    broken.write_text(text.replace(old, new, 1))
    return broken


def test_pipeline_referencing_unknown_exporter_is_rejected(collector_binary: Path, tmp_path: Path) -> None:
    broken = _broken_copy(
        tmp_path,
        "gateway.yaml",
        "exporters: [otlp_http/store, file/archive]",
        "exporters: [otlp_http/store, file/archive, file/nowhere]",
    )
    result = validate_config(collector_binary, broken, VALIDATE_ENV)
    assert result.returncode != 0
    assert 'references exporter "file/nowhere" which is not configured' in result.stdout


def test_unknown_component_type_is_rejected(collector_binary: Path, tmp_path: Path) -> None:
    # the pre-rename spelling works only as a deprecated alias; a made-up type must fail
    broken = _broken_copy(tmp_path, "agent.yaml", "otlp_grpc/gateway:", "otlp_carrier_pigeon/gateway:")
    result = validate_config(collector_binary, broken, VALIDATE_ENV)
    assert result.returncode != 0
    assert "unknown type" in result.stdout
    assert "otlp_carrier_pigeon" in result.stdout


def test_gateway_without_store_endpoint_is_rejected(collector_binary: Path) -> None:
    env = {k: v for k, v in VALIDATE_ENV.items() if k != "OTEL_AUDIT_STORE_ENDPOINT"}
    env["OTEL_AUDIT_STORE_ENDPOINT"] = ""
    result = validate_config(collector_binary, CONFIG_DIR / "gateway.yaml", env)
    assert result.returncode != 0
    assert "otlp_http/store" in result.stdout


def test_build_script_reuses_the_cached_binary(collector_binary: Path) -> None:
    import hashlib

    from .conftest import REPO_ROOT, build_collector

    again = build_collector(timeout=120)  # unchanged manifest: a cache hit, never a rebuild
    assert again == collector_binary
    digest = hashlib.sha256((CONFIG_DIR / "builder-config.yaml").read_bytes()).hexdigest()
    assert again.parent.name == f"otelcol-audit-{digest}"
    assert REPO_ROOT not in again.parents, "the binary is cached outside the repository"
