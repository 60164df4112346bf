"""AuditLogger: turn "who did what to which resource, with what outcome" into OpenTelemetry log records.

Four ways in, one path out: `emit(...)`, the seed SDK's `log(dict)`, the `action(...)` block and the `audited(...)`
decorator all build a validated AuditEvent, fill what is missing from the audit context, and emit one LogRecord
through the audit LoggerProvider bound by `configure()`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import get_current
from opentelemetry.sdk._logs import Logger as SdkLogger
from opentelemetry.sdk._logs import ReadWriteLogRecord

from . import semconv
from .context import current_audit_context
from .model import Actor, AnyValue, AuditEvent, AuditEventError, Outcome, Resource

_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])

SCOPE_VERSION = "0.1.0"
_REASON_MAX = 512
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_getrandbits = random.getrandbits
_time_ns = time.time_ns


class _Binding:
    """The LoggerProvider audit loggers emit through; set by configure(), or from the environment on first use."""

    def __init__(self) -> None:
        self.provider: Any = None
        self.generation = 0
        self.configure_default: Callable[[], Any] | None = None
        self._lock = threading.Lock()

    def bind(self, provider: Any) -> None:
        with self._lock:
            self.provider = provider
            self.generation += 1

    def ensure(self) -> None:
        if self.provider is None and self.configure_default is not None:
            with self._lock:
                configure_default = self.configure_default if self.provider is None else None
            if configure_default is not None:
                _log.warning("otel-audit: configure() was not called; configuring the audit pipeline from environment")
                configure_default()


binding = _Binding()


_new_writable = ReadWriteLogRecord.__new__


def _validated_record(logger: SdkLogger, record: LogRecord) -> LogRecord | ReadWriteLogRecord:
    """The SDK record for an audit LogRecord whose attributes AuditEvent already validated.

    The SDK re-validates every attribute when it builds a ReadWriteLogRecord (more than half of its emit cost);
    audit attributes are validated once, in AuditEvent, so the record is built without that step (attributes stay
    a plain mutable dict). When attribute limits are configured the SDK's own path applies them as usual.
    """
    limits = logger._log_record_limits
    attributes = record.attributes
    max_count = limits.max_log_record_attributes
    if limits.max_log_record_attribute_length is not None or (max_count is not None and len(attributes or ()) > max_count):
        return record
    writable = _new_writable(ReadWriteLogRecord)
    writable.log_record = record
    writable.resource = logger._resource
    writable.instrumentation_scope = logger._instrumentation_scope
    writable.limits = limits
    return writable


def new_uid() -> str:
    """A time-ordered unique id (UUIDv7 layout): 48-bit Unix milliseconds, version/variant bits, 74 random bits.

    The random bits only need to make collisions improbable (they are not secrets), so they come from the
    process's `random` generator, which Python reseeds in every forked child.
    """
    rand = _getrandbits(74)
    value = (
        (_time_ns() // 1_000_000) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0x2 << 62 | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def error_type_of(exc: BaseException) -> str:
    """OTel `error.type` for an exception: the class name for builtins, module-qualified otherwise."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def reason_of(exc: BaseException) -> str:
    """A short reason from an exception message (the redaction processor masks any secret in it)."""
    message = str(exc) or type(exc).__name__
    return message if len(message) <= _REASON_MAX else message[: _REASON_MAX - 1] + "…"


def _as_actor(actor: Actor | str | Mapping[str, Any] | None) -> Actor | None:
    if actor is None or isinstance(actor, Actor):
        return actor
    if isinstance(actor, str):
        return Actor(id=actor)
    if isinstance(actor, Mapping):
        return Actor(**actor)
    raise AuditEventError("actor", f"must be an Actor, a string id or a mapping, got {type(actor).__name__}")


def _as_resource(resource: Resource | tuple[str, Any] | Mapping[str, Any] | None) -> Resource | None:
    if resource is None or isinstance(resource, Resource):
        return resource
    if isinstance(resource, tuple) and len(resource) == 2:
        return Resource(type=resource[0], id=resource[1])
    if isinstance(resource, Mapping):
        return Resource(**resource)
    raise AuditEventError("resource", f"must be a Resource, a (type, id) pair or a mapping, got {resource!r}")


def _as_severity(severity: SeverityNumber | str | int | None, outcome: Outcome) -> SeverityNumber:
    if severity is None:
        return semconv.default_severity(outcome)
    if isinstance(severity, SeverityNumber):
        return severity
    if isinstance(severity, str):
        try:
            return SeverityNumber[severity.upper()]
        except KeyError:
            raise AuditEventError("severity", f"unknown severity name {severity!r}") from None
    if isinstance(severity, int) and not isinstance(severity, bool):
        try:
            return SeverityNumber(severity)
        except ValueError:
            raise AuditEventError("severity", f"must be 1-24, got {severity}") from None
    raise AuditEventError("severity", f"must be a SeverityNumber or its name, got {type(severity).__name__}")


def _as_timestamp_ns(timestamp: _dt.datetime | int | None) -> int:
    if timestamp is None:
        return time.time_ns()
    if isinstance(timestamp, _dt.datetime):
        if timestamp.tzinfo is None:
            raise AuditEventError("timestamp", "naive datetime (attach a timezone)")
        delta = timestamp - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(timestamp, int) and not isinstance(timestamp, bool) and timestamp > 0:
        return timestamp
    raise AuditEventError("timestamp", "must be an aware datetime or Unix nanoseconds")


class AuditLogger:
    """Emits audit events as OpenTelemetry log records through the audit pipeline (see configure())."""

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        self._otel_logger: Any = None
        self._generation = -1

    def _logger(self) -> Any:
        if self._generation != binding.generation or self._otel_logger is None:
            binding.ensure()
            self._otel_logger = binding.provider.get_logger(self.name, self.version or SCOPE_VERSION)
            self._generation = binding.generation
        return self._otel_logger

    def emit(
        self,
        action: str,
        *,
        actor: Actor | str | Mapping[str, Any] | None = None,
        resource: Resource | tuple[str, Any] | Mapping[str, Any] | None = None,
        outcome: Outcome | str = Outcome.SUCCESS,
        metadata: Mapping[str, Any] | None = None,
        changes: Mapping[str, Any] | None = None,
        reason: str | None = None,
        error_type: str | None = None,
        severity: SeverityNumber | str | int | None = None,
        tenant: str | None = None,
        client_address: str | None = None,
        user_agent: str | None = None,
        session_id: str | None = None,
        request_id: str | None = None,
        http_method: str | None = None,
        http_route: str | None = None,
        url_path: str | None = None,
        http_status_code: int | None = None,
        timestamp: _dt.datetime | int | None = None,
    ) -> str:
        """Record one audit event; values not given come from audit_context(). Returns its `log.record.uid`.

        Raises AuditEventError (naming the field) for invalid input. A valid event raises only AuditDeliveryError,
        when it cannot be persisted: in `strict` mode on any write failure, in `disk` mode when the spool is full
        past its policy or the disk refuses the write.
        """
        ctx = current_audit_context()
        resolved_actor = _as_actor(actor) or ctx.actor
        if ctx.impersonator_id and resolved_actor is not None and resolved_actor.impersonator_id is None:
            resolved_actor = Actor(
                id=resolved_actor.id,
                type=resolved_actor.type,
                email=resolved_actor.email,
                name=resolved_actor.name,
                roles=resolved_actor.roles,
                impersonator_id=ctx.impersonator_id,
            )
        event = AuditEvent(
            action=action,
            outcome=cast(Outcome, outcome),  # AuditEvent validates and converts names
            actor=resolved_actor,
            resource=_as_resource(resource),
            tenant_id=tenant if tenant is not None else ctx.tenant_id,
            client_address=client_address if client_address is not None else ctx.client_address,
            user_agent=user_agent if user_agent is not None else ctx.user_agent,
            session_id=session_id if session_id is not None else ctx.session_id,
            request_id=request_id if request_id is not None else ctx.request_id,
            http_method=http_method,
            http_route=http_route,
            url_path=url_path,
            http_status_code=http_status_code,
            error_type=error_type,
            reason=reason,
            changes=changes or {},
            metadata=metadata or {},
        )
        return self.emit_event(event, severity=severity, timestamp=timestamp)

    def emit_event(
        self,
        event: AuditEvent,
        *,
        severity: SeverityNumber | str | int | None = None,
        timestamp: _dt.datetime | int | None = None,
    ) -> str:
        """Emit an already-built AuditEvent as it is (no context filling). Returns its `log.record.uid`."""
        severity_number = _as_severity(severity, event.outcome)
        timestamp_ns = _as_timestamp_ns(timestamp)
        uid = new_uid()
        record = LogRecord(
            timestamp=timestamp_ns,
            observed_timestamp=time.time_ns(),
            context=get_current(),
            severity_number=severity_number,
            severity_text=severity_number.name,
            attributes=semconv.event_to_attributes(event, uid),
            event_name=semconv.event_name(event.action),
        )
        logger = self._logger()
        if logger.__class__ is SdkLogger:
            logger.emit(_validated_record(logger, record))  # type: ignore[arg-type]  # the SDK accepts both
        else:
            logger.emit(record)
        return uid

    _SEED_KEYS = frozenset(
        {"action", "actor", "resource", "outcome", "metadata", "changes", "reason", "tenant", "tenant_id",
         "severity", "timestamp", "session_id", "request_id"}
    )

    def log(self, event: Mapping[str, Any]) -> str:
        """Accept the seed SDK's dict shape, e.g. {"action", "actor": {"id", "email", "ip", "user_agent"},
        "resource": {"type", "id"}, "outcome", "metadata"}, and emit the same record as the equivalent emit()."""
        if not isinstance(event, Mapping):
            raise AuditEventError("event", f"must be a mapping, got {type(event).__name__}")
        unknown = sorted(set(event) - self._SEED_KEYS)
        if unknown:
            raise AuditEventError(unknown[0], f"unknown key (allowed: {', '.join(sorted(self._SEED_KEYS))})")
        actor_fields = dict(event.get("actor") or {})
        client_address = actor_fields.pop("ip", None)
        user_agent = actor_fields.pop("user_agent", None)
        return self.emit(
            event.get("action"),  # type: ignore[arg-type]
            actor=Actor(**actor_fields) if actor_fields else None,
            resource=event.get("resource"),
            outcome=event.get("outcome", Outcome.SUCCESS),
            metadata=event.get("metadata"),
            changes=event.get("changes"),
            reason=event.get("reason"),
            severity=event.get("severity"),
            tenant=event.get("tenant", event.get("tenant_id")),
            client_address=client_address,
            user_agent=user_agent,
            session_id=event.get("session_id"),
            request_id=event.get("request_id"),
            timestamp=event.get("timestamp"),
        )

    def action(
        self,
        name: str,
        *,
        resource: Resource | tuple[str, Any] | Mapping[str, Any] | str | None = None,
        actor: Actor | str | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ActionBlock:
        """A service-layer block: success on normal exit, failure (error.type, reason) when an exception escapes.

        `resource` may be just a type ("document") whose id is set inside the block once known. Works with
        `with` and `async with`; the exception is always re-raised unchanged.
        """
        return ActionBlock(self, name, resource=resource, actor=actor, metadata=metadata)

    def audited(
        self,
        action: str,
        *,
        resource_type: str | None = None,
        resource_id: str | Callable[..., Any] | None = None,
        resource_id_from_result: str | Callable[[Any], Any] | None = None,
    ) -> Callable[[_F], _F]:
        """Decorate a sync or async function so each call is audited like an action() block.

        The resource id comes from the parameter named by `resource_id`, from `resource_id(**arguments)` when it
        is callable, or from the result (`resource_id_from_result`: an attribute/key name or a callable).
        """

        def decorate(func: _F) -> _F:
            signature = inspect.signature(func)

            def open_block(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ActionBlock:
                block = self.action(action, resource=resource_type)
                if resource_id is not None:
                    bound = signature.bind_partial(*args, **kwargs)
                    bound.apply_defaults()
                    if callable(resource_id):
                        block.set_resource_id(resource_id(**bound.arguments))
                    elif resource_id in bound.arguments:
                        block.set_resource_id(bound.arguments[resource_id])
                    else:
                        raise AuditEventError("resource_id", f"{func.__qualname__} has no parameter {resource_id!r}")
                return block

            def finish(block: ActionBlock, result: Any) -> None:
                if resource_id_from_result is not None:
                    if callable(resource_id_from_result):
                        block.set_resource_id(resource_id_from_result(result))
                    elif isinstance(result, Mapping):
                        block.set_resource_id(result.get(resource_id_from_result))
                    else:
                        block.set_resource_id(getattr(result, resource_id_from_result, None))

            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    with open_block(args, kwargs) as block:
                        result = await func(*args, **kwargs)
                        finish(block, result)
                        return result

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with open_block(args, kwargs) as block:
                    result = func(*args, **kwargs)
                    finish(block, result)
                    return result

            return wrapper  # type: ignore[return-value]

        return decorate


class ActionBlock:
    """The handle of an action() block: add metadata, set the resource id or the outcome before it ends."""

    def __init__(
        self,
        logger: AuditLogger,
        name: str,
        *,
        resource: Resource | tuple[str, Any] | Mapping[str, Any] | str | None,
        actor: Actor | str | Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self._logger = logger
        self.name = name
        if isinstance(resource, str):
            self._resource_type: str | None = resource
            self._resource: Resource | None = None
        else:
            self._resource = _as_resource(resource)
            self._resource_type = self._resource.type if self._resource else None
        self._resource_id: str | None = self._resource.id if self._resource else None
        self.actor = actor
        self.metadata: dict[str, AnyValue] = dict(metadata or {})
        self.changes: dict[str, Any] = {}
        self.outcome: Outcome | None = None
        self.reason: str | None = None
        self.uid: str | None = None

    def set_resource_id(self, resource_id: Any) -> None:
        """Set the target's id once known (ints are converted with str(); None leaves it unset)."""
        if resource_id is None:
            return
        if isinstance(resource_id, int) and not isinstance(resource_id, bool):
            resource_id = str(resource_id)
        self._resource_id = resource_id

    def add_metadata(self, **values: Any) -> None:
        """Add free context to the event."""
        self.metadata.update(values)

    def set_outcome(self, outcome: Outcome | str, reason: str | None = None) -> None:
        """Override the outcome a normal exit records (e.g. `denied` when a check refused the action)."""
        self.outcome = Outcome(outcome)
        self.reason = reason

    def _resource_value(self) -> Resource | None:
        if self._resource_type is None:
            return None
        name = self._resource.name if self._resource else None
        return Resource(type=self._resource_type, id=self._resource_id, name=name)

    def _finish(self, exc: BaseException | None) -> None:
        if exc is None:
            outcome, error_type, reason = self.outcome or Outcome.SUCCESS, None, self.reason
        else:
            # An outcome set before raising (a denial, say) stands; otherwise cancellation and interpreter exit
            # are `unknown`, not the operation failing.
            outcome = self.outcome or (Outcome.FAILURE if isinstance(exc, Exception) else Outcome.UNKNOWN)
            error_type, reason = error_type_of(exc), self.reason or reason_of(exc)
        try:
            self.uid = self._logger.emit(
                self.name,
                actor=self.actor,
                resource=self._resource_value(),
                outcome=outcome,
                metadata=self.metadata,
                changes=self.changes,
                error_type=error_type,
                reason=reason,
            )
        except AuditEventError:
            if exc is None:
                raise
            _log.exception("otel-audit: could not record the failure of %r", self.name)

    def __enter__(self) -> ActionBlock:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._finish(exc)

    async def __aenter__(self) -> ActionBlock:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._finish(exc)


_loggers: dict[tuple[str, str | None], AuditLogger] = {}
_loggers_lock = threading.Lock()


def get_audit_logger(name: str = "otel_audit", version: str | None = None) -> AuditLogger:
    """The AuditLogger for an instrumentation scope name (one instance per name and version)."""
    key = (name, version)
    with _loggers_lock:
        logger = _loggers.get(key)
        if logger is None:
            logger = _loggers[key] = AuditLogger(name, version)
        return logger
