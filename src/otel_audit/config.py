"""Settings of the audit pipeline: explicit arguments first, then OTEL_AUDIT_* and the standard OTEL_* variables.

Resolution happens once, in configure(); a bad value fails there with the variable's name, never at emit time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

PROTOCOLS = ("http/protobuf", "grpc")
DELIVERY_MODES = ("disk", "strict", "memory")
FULL_POLICIES = ("block", "raise")


class ConfigurationError(ValueError):
    """A setting is invalid; the message names the argument or environment variable."""


def _env(*names: str) -> tuple[str, str] | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip() != "":
            return name, value.strip()
    return None


def _parse_headers(text: str, source: str) -> dict[str, str]:
    """Parse `k1=v1,k2=v2` (W3C baggage-like, percent-decoded) as the OTLP exporters do."""
    headers: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"{source}: expected key=value pairs separated by commas, got {item!r}")
        headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _number(value: Any, source: str, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{source}: expected a {kind.__name__}, got {value!r}") from None
    if number < minimum:
        raise ConfigurationError(f"{source}: must be >= {minimum}, got {number}")
    return number


def _pick(arg_name: str, value: Any, *env_names: str) -> tuple[str, Any] | None:
    if value is not None:
        return arg_name, value
    return _env(*env_names)


@dataclass(frozen=True)
class AuditSettings:
    """Everything configure() needs, resolved and validated."""

    service_name: str | None = None
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)
    protocol: str = "http/protobuf"
    endpoint: str = "http://localhost:4318/v1/logs"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    compression: str | None = None
    insecure: bool | None = None
    flush_interval: float = 1.0
    max_batch_size: int = 512
    max_queue_size: int = 2048
    delivery: str = "disk"
    spool_dir: str = "audit-spool"
    max_spool_bytes: int = 1 << 30
    full_policy: str = "block"
    full_timeout: float = 5.0
    policy: Any = None
    redaction: Any = True
    pseudonymization: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls,
        *,
        service_name: str | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        compression: str | None = None,
        insecure: bool | None = None,
        flush_interval: float | None = None,
        max_batch_size: int | None = None,
        max_queue_size: int | None = None,
        delivery: str | None = None,
        spool_dir: str | None = None,
        max_spool_bytes: int | None = None,
        full_policy: str | None = None,
        full_timeout: float | None = None,
        policy: Any = None,
        redaction: Any = None,
        pseudonymization: Any = None,
        **extra: Any,
    ) -> AuditSettings:
        """Combine arguments and environment; raise ConfigurationError naming the source of a bad value."""
        service = _pick("service_name", service_name, "OTEL_SERVICE_NAME")

        proto_source = _pick(
            "protocol", protocol, "OTEL_AUDIT_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        resolved_protocol = proto_source[1] if proto_source else "http/protobuf"
        if resolved_protocol not in PROTOCOLS:
            raise ConfigurationError(f"{proto_source[0]}: must be one of {', '.join(PROTOCOLS)}, got {resolved_protocol!r}")  # type: ignore[index]

        resolved_endpoint = cls._endpoint(endpoint, resolved_protocol)

        header_values: dict[str, str] = {}
        env_headers = _env("OTEL_AUDIT_HEADERS", "OTEL_EXPORTER_OTLP_LOGS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
        if env_headers:
            header_values.update(_parse_headers(env_headers[1], env_headers[0]))
        if headers:
            header_values.update({str(k).lower(): str(v) for k, v in headers.items()})

        timeout_source = _pick("timeout", timeout, "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
        resolved_timeout = 10.0
        if timeout_source:
            resolved_timeout = _number(timeout_source[1], timeout_source[0], float, 0.001)
            if timeout_source[0] != "timeout":
                resolved_timeout /= 1000.0  # the OTLP variables are in milliseconds

        compression_source = _pick(
            "compression", compression, "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"
        )
        resolved_compression = compression_source[1] if compression_source else None
        if resolved_compression in ("none", ""):
            resolved_compression = None
        if resolved_compression not in (None, "gzip", "deflate"):
            raise ConfigurationError(f"{compression_source[0]}: must be gzip, deflate or none, got {resolved_compression!r}")  # type: ignore[index]

        def number(arg: str, value: Any, env: str, kind: type, minimum: float, default: Any) -> Any:
            source = _pick(arg, value, env)
            return _number(source[1], source[0], kind, minimum) if source else default

        def choice(arg: str, value: Any, env: str, allowed: tuple[str, ...], default: str) -> str:
            source = _pick(arg, value, env)
            if source is None:
                return default
            if source[1] not in allowed:
                raise ConfigurationError(f"{source[0]}: must be one of {', '.join(allowed)}, got {source[1]!r}")
            return source[1]

        spool = _pick("spool_dir", spool_dir, "OTEL_AUDIT_SPOOL_DIR")
        policy_source = _pick("policy", policy, "OTEL_AUDIT_POLICY_FILE")
        return cls(
            service_name=service[1] if service else None,
            resource_attributes=dict(resource_attributes or {}),
            protocol=resolved_protocol,
            endpoint=resolved_endpoint,
            headers=header_values,
            timeout=resolved_timeout,
            compression=resolved_compression,
            insecure=insecure,
            flush_interval=number("flush_interval", flush_interval, "OTEL_AUDIT_FLUSH_INTERVAL", float, 0.001, 1.0),
            max_batch_size=number("max_batch_size", max_batch_size, "OTEL_AUDIT_MAX_BATCH_SIZE", int, 1, 512),
            max_queue_size=number("max_queue_size", max_queue_size, "OTEL_AUDIT_MAX_QUEUE_SIZE", int, 1, 2048),
            delivery=choice("delivery", delivery, "OTEL_AUDIT_DELIVERY", DELIVERY_MODES, "disk"),
            spool_dir=spool[1] if spool else "audit-spool",
            max_spool_bytes=number("max_spool_bytes", max_spool_bytes, "OTEL_AUDIT_MAX_SPOOL_BYTES", int, 1, 1 << 30),
            full_policy=choice("full_policy", full_policy, "OTEL_AUDIT_FULL_POLICY", FULL_POLICIES, "block"),
            full_timeout=number("full_timeout", full_timeout, "OTEL_AUDIT_FULL_TIMEOUT", float, 0.0, 5.0),
            policy=policy_source[1] if policy_source else None,
            redaction=True if redaction is None else redaction,
            pseudonymization=pseudonymization,
            extra=extra,
        )

    @staticmethod
    def _endpoint(endpoint: str | None, protocol: str) -> str:
        """The logs endpoint: a signal-specific URL is used as is, a base URL gets `/v1/logs` (HTTP only)."""
        if endpoint is not None:
            source, value, is_base = "endpoint", endpoint, not endpoint.rstrip("/").endswith("/v1/logs")
        else:
            specific = _env("OTEL_AUDIT_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
            base = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
            if specific:
                source, value, is_base = specific[0], specific[1], False
            elif base:
                source, value, is_base = base[0], base[1], True
            else:
                default = "http://localhost:4318" if protocol == "http/protobuf" else "http://localhost:4317"
                source, value, is_base = "default", default, True
        if protocol == "grpc":
            return value
        if not value.startswith(("http://", "https://")):
            raise ConfigurationError(f"{source}: an OTLP/HTTP endpoint must start with http:// or https://, got {value!r}")
        return value.rstrip("/") + "/v1/logs" if is_base else value
