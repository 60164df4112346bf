"""Delivery: the last stage of the chain, which gets audit records out of the process over OTLP.

`disk` (default) and `strict` spool every record durably before emit returns and export it over OTLP/HTTP until
acknowledged; `memory` keeps a bounded queue that never blocks and counts drops. gRPC, and any exporter object
passed in, go through the SDK's BatchLogRecordProcessor instead (see docs/delivery.md for the trade-off).
"""

from __future__ import annotations

from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter

from ..config import AuditSettings
from .errors import AuditDeliveryError
from .processor import DurableLogRecordProcessor

__all__ = ["AuditDeliveryError", "DurableLogRecordProcessor", "create_delivery_processor", "create_exporter"]


def create_exporter(settings: AuditSettings) -> LogRecordExporter:
    """The SDK's OTLP log exporter for the configured protocol (gRPC needs the `grpc` extra)."""
    if settings.protocol == "grpc":
        from grpc import Compression  # type: ignore[import-untyped]
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcExporter,
        )

        compression = {"gzip": Compression.Gzip, "deflate": Compression.Deflate}.get(settings.compression or "")
        insecure = settings.insecure if settings.insecure is not None else settings.endpoint.startswith("http://")
        return GrpcExporter(
            endpoint=settings.endpoint,
            insecure=insecure,
            headers=dict(settings.headers),
            timeout=settings.timeout,
            compression=compression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=settings.endpoint,
        headers=dict(settings.headers),
        timeout=settings.timeout,
        compression=HttpCompression(settings.compression) if settings.compression else HttpCompression.NoCompression,
    )


def create_delivery_processor(settings: AuditSettings, exporter: LogRecordExporter | None = None) -> LogRecordProcessor:
    """The delivery stage for the configured mode: durable OTLP/HTTP, or the SDK batch processor for gRPC and for
    an explicitly given exporter."""
    if exporter is None and settings.protocol != "grpc":
        return DurableLogRecordProcessor(settings)
    return BatchLogRecordProcessor(
        exporter or create_exporter(settings),
        schedule_delay_millis=settings.flush_interval * 1000,
        max_export_batch_size=min(settings.max_batch_size, settings.max_queue_size),
        max_queue_size=settings.max_queue_size,
        export_timeout_millis=settings.timeout * 1000,
    )
