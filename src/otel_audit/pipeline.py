"""configure(): build the dedicated audit LoggerProvider and its processor chain, and bind audit loggers to it.

The chain is fixed by design: filter -> redact/pseudonymize -> integrity -> delivery. Audit records get a provider
of their own so they are never mixed with (or sampled, batched and dropped like) application logs; a provider the
user already has can be passed instead.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from . import delivery, processors
from .config import AuditSettings
from .logger import binding

_log = logging.getLogger(__name__)


class AuditPipeline:
    """A configured audit pipeline: the provider audit loggers emit through and the processor chain behind it."""

    def __init__(
        self, provider: LoggerProvider, chain: LogRecordProcessor, settings: AuditSettings, owns_provider: bool
    ) -> None:
        self.provider = provider
        self.chain = chain
        self.settings = settings
        self.owns_provider = owns_provider
        self._shut_down = False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything emitted so far; False if the timeout passed first."""
        return self.chain.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop the chain (and the provider, when configure() created it). Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        if self.owns_provider:
            self.provider.shutdown()
        else:
            self.chain.shutdown()


_lock = threading.Lock()
_current: AuditPipeline | None = None


def current_pipeline() -> AuditPipeline | None:
    """The pipeline audit loggers emit through, or None before configure()."""
    return _current


def configure(
    *,
    logger_provider: LoggerProvider | None = None,
    exporter: LogRecordExporter | None = None,
    delivery_processor: LogRecordProcessor | None = None,
    **settings: Any,
) -> AuditPipeline:
    """Build the audit pipeline from arguments and OTEL_* / OTEL_AUDIT_* variables and make it current.

    Settings are the keyword arguments of AuditSettings.resolve (service_name, endpoint, protocol, headers,
    flush_interval, max_batch_size, delivery, spool_dir, policy, redaction, ...). `exporter` replaces the OTLP
    exporter; `delivery_processor` replaces the whole delivery stage (tests use an in-memory capture). A pipeline
    configured earlier is flushed and shut down.
    """
    global _current
    resolved = AuditSettings.resolve(**settings)
    if delivery_processor is None:
        delivery_processor = delivery.create_delivery_processor(resolved, exporter)
    chain = processors.build_chain(resolved, delivery_processor)
    owns_provider = logger_provider is None
    if logger_provider is None:
        attributes = dict(resolved.resource_attributes)
        if resolved.service_name:
            attributes[SERVICE_NAME] = resolved.service_name
        logger_provider = LoggerProvider(resource=Resource.create(attributes), shutdown_on_exit=True)
    logger_provider.add_log_record_processor(chain)
    pipeline = AuditPipeline(logger_provider, chain, resolved, owns_provider)
    with _lock:
        previous, _current = _current, pipeline
        binding.bind(logger_provider, chain)
    if previous is not None:
        previous.shutdown()
    return pipeline


def shutdown() -> None:
    """Flush and shut down the current pipeline; later emits configure a new one from the environment."""
    global _current
    with _lock:
        previous, _current = _current, None
        binding.bind(None)
    if previous is not None:
        previous.shutdown()


binding.configure_default = configure
