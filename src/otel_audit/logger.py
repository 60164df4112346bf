"""AuditLogger: turn "who did what to which resource, with what outcome" into OpenTelemetry log records.

Four ways in, one path out: `emit(...)`, the seed SDK's `log(dict)`, the `action(...)` block and the `audited(...)`
decorator all fill what is missing from the audit context, validate the event and emit one LogRecord through the
audit LoggerProvider bound by `configure()`. Plainly valid `emit` calls become attributes directly; everything
else is validated by building an AuditEvent, which names the failing field.
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
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context as OtelContext
from opentelemetry.context import get_current
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk._logs import Logger as SdkLogger
from opentelemetry.sdk._logs import ReadWriteLogRecord, SynchronousMultiLogRecordProcessor
from opentelemetry.trace import INVALID_SPAN, Span, get_current_span
from opentelemetry.trace.propagation import _SPAN_KEY

from . import semconv
from .context import AuditContext
from .context import _current as _audit_context_var
from .model import (
    MAX_DEPTH,
    MAX_ID_LEN,
    MAX_REASON_LEN,
    MAX_TYPE_LEN,
    Actor,
    AnyValue,
    AuditEvent,
    AuditEventError,
    Change,
    Outcome,
    Resource,
    is_plain_any_value,
    plain_change,
    to_any_value,
    validated_actions,
)
from .semconv import (
    AUDIT_ACTION,
    AUDIT_ACTOR_IMPERSONATOR_ID,
    AUDIT_ACTOR_TYPE,
    AUDIT_CHANGES,
    AUDIT_METADATA,
    AUDIT_OUTCOME,
    AUDIT_REASON,
    AUDIT_REQUEST_ID,
    AUDIT_RESOURCE_ID,
    AUDIT_RESOURCE_NAME,
    AUDIT_RESOURCE_TYPE,
    AUDIT_TENANT_ID,
    CLIENT_ADDRESS,
    ERROR_TYPE,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
    LOG_RECORD_UID,
    SESSION_ID,
    URL_PATH,
    USER_AGENT_ORIGINAL,
    USER_EMAIL,
    USER_ID,
    USER_NAME,
    USER_ROLES,
    add_actor_attributes,
)

try:  # the SDK's stand-in when its internal metrics are off (private; without it every count is called)
    from opentelemetry.sdk._logs._internal._logger_metrics import NoOpLoggerMetrics as _NoOpLoggerMetrics
except ImportError:  # pragma: no cover - another SDK version
    _NoOpLoggerMetrics = None  # type: ignore[assignment,misc]

_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])

SCOPE_VERSION = "0.1.0"
_REASON_MAX = 512
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_getrandbits = random.getrandbits
_time_ns = time.time_ns
_get_context = _audit_context_var.get  # context.current_audit_context without its Python frame
# (value, default severity, its name) by Outcome member and by value; a str enum member hashes by name, so both
# keys are needed, and reading `.value`/`.name` of an enum costs more than this lookup.
_OUTCOMES: dict[Any, tuple[str, SeverityNumber, str]] = {
    key: (member.value, semconv.default_severity(member), semconv.default_severity(member).name)
    for member in Outcome
    for key in (member, member.value)
}
_EVENT_NAMES_CACHE = 4096
_event_names: dict[str, str] = {}
_NO_SPAN_CONTEXT = INVALID_SPAN.get_span_context()


def _runtime_context_var() -> Any:
    """The ContextVar holding the current OTel Context when the default runtime context is in use, else None."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    return runtime._current_context if isinstance(runtime, ContextVarsRuntimeContext) else None


_otel_context_var = _runtime_context_var()
# What reads the current OTel Context: the ContextVar's get (a C call), else the API's get_current (which calls
# the same through two Python frames).
_current_context = get_current if _otel_context_var is None else _otel_context_var.get


class PythonDirectPath:
    """How an SDK logger's records skip the SDK's record objects: the first stage of the audit chain's direct path
    (see AuditLogger._emit_record), valid while the provider's processors are still just that chain. The compiled
    `_attributes.DirectPath` holds the same, for the compiled emit to read."""

    __slots__ = ("count_emitted", "multi_processor", "processors", "resource", "stage")

    def __init__(
        self, stage: Callable[..., bool], count_emitted: Callable[[], Any] | None, multi_processor: Any,
        processors: Any, resource: Any,
    ) -> None:
        self.stage = stage
        self.count_emitted = count_emitted
        self.multi_processor = multi_processor
        self.processors = processors
        self.resource = resource


try:
    from ._attributes import DirectPath as _DirectPath
except ImportError:  # built without a C compiler
    _DirectPath = PythonDirectPath  # type: ignore[assignment,misc]


def _direct_path(stage: Callable[..., bool], sdk_logger: SdkLogger) -> Any:
    """The direct path of `sdk_logger`'s records through `stage`, as the provider's processors are now."""
    # The SDK's own count of emitted log records (otel.sdk.log.created), kept true for records it never sees; None
    # when the SDK's internal metrics are off (its count is then a no-op).
    metrics = sdk_logger._logger_metrics
    count_emitted = None if metrics.__class__ is _NoOpLoggerMetrics else metrics.emit_log
    multi_processor = sdk_logger._multi_log_record_processor
    resource = sdk_logger._resource  # the stages encode this one
    return _DirectPath(stage, count_emitted, multi_processor, multi_processor._log_record_processors, resource)


class _Binding:
    """The LoggerProvider audit loggers emit through; set by configure(), or from the environment on first use."""

    def __init__(self) -> None:
        self.provider: Any = None
        self.chain: Any = None
        self.generation = 0
        self.configure_default: Callable[[], Any] | None = None
        self._lock = threading.Lock()

    def bind(self, provider: Any, chain: Any = None) -> None:
        """Bind audit loggers to `provider`; `chain`, when given, is the audit processor chain registered on it."""
        with self._lock:
            self.provider = provider
            self.chain = chain
            self.generation += 1

    def direct_path(self, sdk_logger: Any) -> Any:
        """The direct path of `sdk_logger`'s records, when the bound chain offers one and nothing else would see
        the records: an SDK logger whose provider holds only the chain."""
        chain = self.chain
        if chain is None or sdk_logger.__class__ is not SdkLogger:
            return None
        multi_processor = sdk_logger._multi_log_record_processor
        if (
            multi_processor.__class__ is not SynchronousMultiLogRecordProcessor
            or tuple(multi_processor._log_record_processors) != (chain,)
        ):
            return None
        direct_stage = getattr(chain, "direct_stage", None)
        stage = None if direct_stage is None else direct_stage(sdk_logger)
        return None if stage is None else _direct_path(stage, sdk_logger)

    def ensure(self) -> None:
        if self.provider is None and self.configure_default is not None:
            with self._lock:
                configure_default = self.configure_default if self.provider is None else None
            if configure_default is not None:
                _log.warning("otel-audit: configure() was not called; configuring the audit pipeline from environment")
                configure_default()


binding = _Binding()


_new_writable = ReadWriteLogRecord.__new__
_new_api_record = LogRecord.__new__


def _api_record(
    timestamp_ns: int, observed_ns: int, severity_number: SeverityNumber, severity_text: str,
    attributes: dict[str, Any], event_name: str,
) -> LogRecord:
    """The API LogRecord that `LogRecord(timestamp=..., context=get_current(), ...)` builds, field for field,
    without its keyword-argument and deprecation handling (a test compares both with the pinned SDK)."""
    context = get_current()
    span_context = get_current_span(context).get_span_context()
    record = _new_api_record(LogRecord)
    record.timestamp = timestamp_ns
    record.observed_timestamp = observed_ns
    record.context = context
    record.trace_id = span_context.trace_id
    record.span_id = span_context.span_id
    record.trace_flags = span_context.trace_flags
    record.severity_text = severity_text
    record.severity_number = severity_number
    record.body = None
    record.attributes = attributes
    record.event_name = event_name
    record.exception = None
    return record


def _validated_record(logger: SdkLogger, record: LogRecord) -> ReadWriteLogRecord:
    """The SDK record for an audit LogRecord whose attributes emit already validated.

    The SDK re-validates every attribute when it builds a ReadWriteLogRecord (more than half of its emit cost);
    audit attributes are validated once, by emit or AuditEvent, so the record is built without that step (attributes stay
    a plain mutable dict). The provider's attribute limits (OTEL_ATTRIBUTE_COUNT_LIMIT and the like) do not
    apply: meant for application telemetry, they would evict `audit.action` first (the record would then not be an
    audit event) and cut ids and the `log.record.uid`. emit validates audit values itself.
    """
    writable = _new_writable(ReadWriteLogRecord)
    writable.log_record = record
    writable.resource = logger._resource
    writable.instrumentation_scope = logger._instrumentation_scope
    writable.limits = logger._log_record_limits
    return writable


def _plain_strings(*values: Any) -> bool:
    """Whether every value is None or a string short enough for an id field (what AuditEvent would accept)."""
    for value in values:
        if value is not None and (value.__class__ is not str or len(value) > MAX_ID_LEN):
            return False
    return True


def python_new_uid() -> str:
    """A time-ordered unique id (UUIDv7 layout): 48-bit Unix milliseconds, version/variant bits, 74 random bits.

    The random bits only need to make collisions improbable (they are not secrets), so they come from the
    process's `random` generator, which Python reseeds in every forked child. The compiled `_uid.new_uid` does
    the same in a tenth of the time and is used when it was built.
    """
    rand = _getrandbits(74)
    value = (
        (_time_ns() // 1_000_000) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0x2 << 62 | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


try:
    from ._uid import new_uid
except ImportError:  # built without a C compiler
    new_uid = python_new_uid


# The attribute keys of emit's fast path, in event_to_attributes' order (the compiled builder gets them from here).
_FAST_KEYS = (
    AUDIT_ACTION, AUDIT_OUTCOME, LOG_RECORD_UID, AUDIT_RESOURCE_TYPE, AUDIT_RESOURCE_ID, AUDIT_RESOURCE_NAME,
    AUDIT_TENANT_ID, CLIENT_ADDRESS, USER_AGENT_ORIGINAL, SESSION_ID, AUDIT_REQUEST_ID, HTTP_REQUEST_METHOD,
    HTTP_ROUTE, URL_PATH, ERROR_TYPE, AUDIT_REASON, HTTP_RESPONSE_STATUS_CODE, AUDIT_CHANGES, AUDIT_METADATA,
    AUDIT_ACTOR_TYPE, USER_ID, USER_EMAIL, USER_NAME, USER_ROLES, AUDIT_ACTOR_IMPERSONATOR_ID,
)


def plain_changes(changes: Any) -> dict[str, dict[str, AnyValue]] | None:
    """audit.changes of changes emit's fast path takes (an exact dict of non-empty string names to the forms
    model.plain_change takes), as event_to_attributes writes it; None for anything else."""
    if changes.__class__ is not dict:
        return None
    attribute: dict[str, dict[str, AnyValue]] = {}
    for name, change in changes.items():
        pair = plain_change(change) if name.__class__ is str and name else None
        if pair is None:
            return None
        attribute[name] = {"old": to_any_value(pair[0]), "new": to_any_value(pair[1])}
    return attribute


def python_fast_attributes(
    action: Any, actor: Any, resource: Any, outcome: Any, metadata: Any, changes: Any, reason: Any,
    error_type: Any, severity: Any, tenant: Any, client_address: Any, user_agent: Any, session_id: Any,
    request_id: Any, http_method: Any, http_route: Any, url_path: Any, http_status_code: Any, timestamp: Any,
    impersonator_id: str | None,
) -> tuple[str, dict[str, Any], SeverityNumber, str] | None:
    """emit's fast path: (uid, attributes, severity number, severity text) of a plainly valid call, the attributes
    in event_to_attributes' order (tests compare both paths); None for anything else, which takes the AuditEvent
    path, where it is validated and the failing field named. `_attributes.fast_attributes` is the same, compiled."""
    outcome_fields = _OUTCOMES.get(outcome) if outcome.__class__ is Outcome or outcome.__class__ is str else None
    changes_attribute = None  # audit.changes, made by the checks below when changes are given
    resource_type = resource_id = resource_name = None
    if resource is not None:
        if resource.__class__ is tuple and len(resource) == 2:
            resource_type, resource_id = resource
        elif resource.__class__ is Resource:
            resource_type, resource_id, resource_name = resource.type, resource.id, resource.name
        else:
            return None
    if (
        outcome_fields is None
        or action.__class__ is not str
        or action not in validated_actions
        or not (actor is None or actor.__class__ is Actor or (actor.__class__ is str and len(actor) <= MAX_ID_LEN))
        or severity is not None
        or timestamp is not None
        or (changes and (changes_attribute := plain_changes(changes)) is None)
        or not (metadata is None or (metadata.__class__ is dict and is_plain_any_value(metadata)))
        or not (resource is None or (resource_type.__class__ is str and 0 < len(resource_type) <= MAX_TYPE_LEN))
        or not (resource_id is None or (resource_id.__class__ is str and len(resource_id) <= MAX_ID_LEN))
        or not (http_status_code is None or (http_status_code.__class__ is int and 100 <= http_status_code <= 599))
        or not (reason is None or (reason.__class__ is str and len(reason) <= MAX_REASON_LEN))
        or not _plain_strings(
            tenant, client_address, user_agent, session_id, request_id, http_method, http_route, url_path,
            error_type, resource_name,
        )
    ):
        return None
    uid = new_uid()
    outcome_value, severity_number, severity_text = outcome_fields
    attributes: dict[str, Any] = {AUDIT_ACTION: action, AUDIT_OUTCOME: outcome_value, LOG_RECORD_UID: uid}
    if actor is not None:
        # a string is an actor's id: the attributes of the Actor _as_actor makes of it
        add_actor_attributes(attributes, Actor(id=actor) if actor.__class__ is str else actor, impersonator_id)
    if resource_type is not None:
        attributes[AUDIT_RESOURCE_TYPE] = resource_type
        if resource_id is not None:
            attributes[AUDIT_RESOURCE_ID] = resource_id
        if resource_name is not None:
            attributes[AUDIT_RESOURCE_NAME] = resource_name
    if tenant is not None:
        attributes[AUDIT_TENANT_ID] = tenant
    if client_address is not None:
        attributes[CLIENT_ADDRESS] = client_address
    if user_agent is not None:
        attributes[USER_AGENT_ORIGINAL] = user_agent
    if session_id is not None:
        attributes[SESSION_ID] = session_id
    if request_id is not None:
        attributes[AUDIT_REQUEST_ID] = request_id
    if http_method is not None:
        attributes[HTTP_REQUEST_METHOD] = http_method
    if http_route is not None:
        attributes[HTTP_ROUTE] = http_route
    if url_path is not None:
        attributes[URL_PATH] = url_path
    if error_type is not None:
        attributes[ERROR_TYPE] = error_type
    if reason is not None:
        attributes[AUDIT_REASON] = reason
    if http_status_code is not None:
        attributes[HTTP_RESPONSE_STATUS_CODE] = http_status_code
    if changes_attribute is not None:
        attributes[AUDIT_CHANGES] = changes_attribute
    if metadata:
        attributes[AUDIT_METADATA] = to_any_value(metadata)
    return uid, attributes, severity_number, severity_text


try:  # compiled (optional, see _attributes.c): the same checks and dict in a fifth of the time
    from ._attributes import configure_fast_attributes, fast_attributes
except ImportError:  # built without a C compiler
    fast_attributes = python_fast_attributes
else:
    configure_fast_attributes(
        _FAST_KEYS, _OUTCOMES, Outcome, validated_actions, Actor, Resource, Change, Actor(id="").type.value,
        (MAX_ID_LEN, MAX_TYPE_LEN, MAX_REASON_LEN, MAX_DEPTH), new_uid,
    )


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


def _sdk_emit(
    logger: Any, timestamp_ns: int, observed_ns: int, severity_number: SeverityNumber, severity_text: str,
    attributes: dict[str, Any], event_name: str,
) -> None:
    """The SDK's path for an audit record: an API LogRecord to the SDK logger (see _validated_record)."""
    record = _api_record(timestamp_ns, observed_ns, severity_number, severity_text, attributes, event_name)
    if logger.__class__ is SdkLogger:
        logger.emit(_validated_record(logger, record))
    else:
        logger.emit(record)


def python_emit(
    audit_logger: AuditLogger, action: Any, actor: Any, resource: Any, outcome: Any, metadata: Any, changes: Any,
    reason: Any, error_type: Any, severity: Any, tenant: Any, client_address: Any, user_agent: Any, session_id: Any,
    request_id: Any, http_method: Any, http_route: Any, url_path: Any, http_status_code: Any, timestamp: Any,
) -> str:
    """AuditLogger.emit's body, for its arguments in their order: values not given come from the audit context; a
    plainly valid call takes the fast path, anything else the AuditEvent path. `_attributes.emit` is the same,
    compiled, with AuditLogger._emit_record's direct path written out (each case it does not finish comes back to
    the Python methods)."""
    ctx = _get_context()
    if actor is None:
        actor = ctx.actor
    if tenant is None:
        tenant = ctx.tenant_id
    if client_address is None:
        client_address = ctx.client_address
    if user_agent is None:
        user_agent = ctx.user_agent
    if session_id is None:
        session_id = ctx.session_id
    if request_id is None:
        request_id = ctx.request_id
    fast = fast_attributes(
        action, actor, resource, outcome, metadata, changes, reason, error_type, severity, tenant, client_address,
        user_agent, session_id, request_id, http_method, http_route, url_path, http_status_code, timestamp,
        ctx.impersonator_id,
    )
    if fast is None:
        return audit_logger._emit_validated(
            action, actor, resource, outcome, metadata, changes, reason, error_type, severity, tenant, client_address,
            user_agent, session_id, request_id, http_method, http_route, url_path, http_status_code, timestamp,
            ctx.impersonator_id,
        )
    uid, attributes, severity_number, severity_text = fast
    now = _time_ns()
    audit_logger._emit_record(now, now, severity_number, severity_text, attributes, action)
    return uid


try:  # compiled (optional, see _attributes.c)
    from ._attributes import configure_emit
    from ._attributes import emit as _emit
except ImportError:  # built without a C compiler
    _emit = python_emit
else:
    configure_emit(
        _audit_context_var,
        tuple(
            AuditContext._fields.index(name)
            for name in (
                "actor", "tenant_id", "client_address", "user_agent", "session_id", "request_id", "impersonator_id",
            )
        ) + (len(AuditContext._fields),),
        _otel_context_var,
        get_current,
        OtelContext if OtelContext.get is dict.get else dict,
        _SPAN_KEY,
        Span,
        (_NO_SPAN_CONTEXT.trace_id, _NO_SPAN_CONTEXT.span_id, _NO_SPAN_CONTEXT.trace_flags),
        binding,
        _event_names,
        semconv.event_name,
        _EVENT_NAMES_CACHE,
        _sdk_emit,
    )

# AuditLogger.emit with every argument positional, in its order after the audit logger: for the middlewares, whose
# one event per request would otherwise pay for passing sixteen keywords.
emit_positional = _emit


class AuditLogger:
    """Emits audit events as OpenTelemetry log records through the audit pipeline (see configure())."""

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        self._otel_logger: Any = None
        self._direct: Any = None  # a DirectPath (or PythonDirectPath), see _Binding.direct_path
        self._generation = -1

    def _logger(self) -> Any:
        if self._generation != binding.generation or self._otel_logger is None:
            binding.ensure()
            generation = binding.generation
            self._otel_logger = binding.provider.get_logger(self.name, self.version or SCOPE_VERSION)
            self._direct = binding.direct_path(self._otel_logger)
            self._generation = generation
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
        return _emit(
            self, action, actor, resource, outcome, metadata, changes, reason, error_type, severity, tenant,
            client_address, user_agent, session_id, request_id, http_method, http_route, url_path, http_status_code,
            timestamp,
        )

    def _emit_validated(
        self, action: Any, actor: Any, resource: Any, outcome: Any, metadata: Any, changes: Any, reason: Any,
        error_type: Any, severity: Any, tenant: Any, client_address: Any, user_agent: Any, session_id: Any,
        request_id: Any, http_method: Any, http_route: Any, url_path: Any, http_status_code: Any, timestamp: Any,
        impersonator_id: str | None,
    ) -> str:
        """emit() for inputs the fast path does not take: build (and so validate) an AuditEvent."""
        resolved_actor = _as_actor(actor)
        if impersonator_id and resolved_actor is not None and resolved_actor.impersonator_id is None:
            resolved_actor = Actor(
                id=resolved_actor.id,
                type=resolved_actor.type,
                email=resolved_actor.email,
                name=resolved_actor.name,
                roles=resolved_actor.roles,
                impersonator_id=impersonator_id,
            )
        event = AuditEvent(
            action=action,
            outcome=outcome,
            actor=resolved_actor,
            resource=_as_resource(resource),
            tenant_id=tenant,
            client_address=client_address,
            user_agent=user_agent,
            session_id=session_id,
            request_id=request_id,
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
        attributes = semconv.event_to_attributes(event, uid)
        self._emit_record(timestamp_ns, _time_ns(), severity_number, severity_number.name, attributes, event.action)
        return uid

    def _emit_record(
        self, timestamp_ns: int, observed_ns: int, severity_number: SeverityNumber, severity_text: str,
        attributes: dict[str, Any], action: str,
    ) -> None:
        """Hand one audit record to the bound provider's processors.

        The direct path, when the chain offers one (see _Binding.direct_path): the record's fields go through the
        chain's stages as they are, each stage doing what its on_emit would do to a log record holding them, and
        the last one spools the record; the SDK's record objects are never built. A stage that cannot finish the
        record that way (something to redact, say) answers False before changing anything, and the record takes
        the SDK's path (see _sdk_emit). The compiled emit (`_attributes.emit`) takes the same steps for emit's
        records, and calls this method for a logger this one would bind anew or a path that is not open.
        """
        event_name = _event_names.get(action)
        if event_name is None:
            event_name = semconv.event_name(action)
            if len(_event_names) < _EVENT_NAMES_CACHE:
                _event_names[action] = event_name
        logger = self._otel_logger
        if logger is None or self._generation != binding.generation:
            logger = self._logger()
        direct = self._direct
        if direct is not None:
            # Open while no processor was added to the provider since, the logger is enabled, and its resource is
            # still the one the stages encode (the SDK replaces it in a forked child). Written out here, and the
            # current span read as get_current_span() reads it: on this path each call is a measurable share.
            if (
                direct.multi_processor._log_record_processors is direct.processors
                and logger._logger_config.is_enabled
                and logger._resource is direct.resource
            ):
                span = _current_context().get(_SPAN_KEY)
                span_context = span.get_span_context() if isinstance(span, Span) else _NO_SPAN_CONTEXT
                if direct.stage(
                    timestamp_ns, observed_ns, severity_number, severity_text, attributes, event_name,
                    span_context.trace_id, span_context.span_id, span_context.trace_flags,
                ):
                    if direct.count_emitted is not None:
                        direct.count_emitted()
                    return
            elif direct.resource is not logger._resource:
                self._direct = binding.direct_path(logger)  # for the records after this one, which the SDK takes
        _sdk_emit(logger, timestamp_ns, observed_ns, severity_number, severity_text, attributes, event_name)

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
