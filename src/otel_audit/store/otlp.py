"""OTLP/HTTP logs ingest: body limits and decoding, audit-record recognition, mapping records to StoredEvents.

Everything here is pure (no I/O): the app hands over bytes and headers, and gets back the rows to store, the
reasons for rejected records, and how many non-audit records were ignored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from .. import semconv
from ..model import ActorType, AuditEventError, Outcome
from .events import (
    DEFAULT_OUTCOME, DERIVED_UID_PREFIX, MAX_TIME_UNIX_NANO, StoredEvent, dumps_stored, stored_attributes,
)

try:  # the compiled decoder and check (optional; see _otlp.c): decoded_request's values, or None; check's yes
    from ._otlp import decode_logs as _native_decode
    from ._otlp import plain_audit_attributes as _native_plain
except ImportError:  # pragma: no cover - without a C compiler at install
    _native_decode = _native_plain = None

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_REJECTION_MESSAGES = 5
_MAX_COLUMN_LENGTH = 1024


class IngestError(ValueError):
    """The request as a whole is unacceptable; `status` is the HTTP status and `code` a stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def media_type(content_type: str | None) -> str:
    """The encoding a Content-Type selects (protobuf or JSON), or IngestError 415."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    if value in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if value == JSON:
        return JSON
    raise IngestError(
        415, "unsupported_media_type",
        f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type[:100] if content_type else 'none'!r}",
    )


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo gzip/deflate with the decompressed size capped at `max_bytes` (a gzip bomb gets a 413)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise IngestError(415, "unsupported_encoding", f"Content-Encoding must be gzip, deflate or identity, got {encoding[:50]!r}")
    try:
        data = inflater.decompress(body, max_bytes + 1)
        if len(data) > max_bytes or inflater.unconsumed_tail:
            raise IngestError(413, "decompressed_too_large", f"decompressed body exceeds {max_bytes} bytes")
        data += inflater.flush()
    except zlib.error as exc:
        raise IngestError(400, "bad_compression", f"body is not valid {encoding}: {exc}") from None
    if len(data) > max_bytes:
        raise IngestError(413, "decompressed_too_large", f"decompressed body exceeds {max_bytes} bytes")
    if not inflater.eof:
        raise IngestError(400, "bad_compression", f"truncated {encoding} body")
    return data


def parse_request(body: bytes, encoding: str) -> ExportLogsServiceRequest:
    """Decode an ExportLogsServiceRequest; malformed input is an IngestError 400 naming the problem."""
    request = ExportLogsServiceRequest()
    if encoding == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise IngestError(400, "malformed_protobuf", f"body is not a valid ExportLogsServiceRequest: {exc}") from None
        return request
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(400, "invalid_utf8", f"JSON body is not valid UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text)
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except IngestError:
        raise
    except (json_format.ParseError, RecursionError, ValueError, TypeError, AttributeError) as exc:
        raise IngestError(400, "malformed_json", f"body is not valid OTLP JSON: {str(exc)[:300]}") from None
    return request


def _dicts(parent: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    for name in names:
        items = parent.get(name)
        if isinstance(items, list):
            return [item for item in items if isinstance(item, dict)]
    return []


def _hex_ids_to_base64(document: Any) -> None:
    """OTLP JSON writes traceId/spanId as hex, protobuf's JSON mapping expects base64: convert them in place."""
    if not isinstance(document, dict):
        return
    for resource_logs in _dicts(document, "resourceLogs", "resource_logs"):
        for scope_logs in _dicts(resource_logs, "scopeLogs", "scope_logs"):
            for record in _dicts(scope_logs, "logRecords", "log_records"):
                for name in ("traceId", "trace_id", "spanId", "span_id"):
                    value = record.get(name)
                    if isinstance(value, str) and value:
                        try:
                            record[name] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                        except ValueError:
                            raise IngestError(
                                400, "malformed_json", f"body is not valid OTLP JSON: {name} must be hex, got {value[:40]!r}"
                            ) from None


def encode_response(rejected: int, message: str, encoding: str) -> bytes:
    """ExportLogsServiceResponse (with partial_success when something was rejected or ignored), same encoding."""
    response = ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message))
    if encoding == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue: maps -> dict, arrays -> list, bytes stay bytes, empty -> None."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "kvlist_value":
        return key_values(value.kvlist_value.values)
    if kind == "array_value":
        return [item.string_value or any_value(item) for item in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def key_values(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP key/value pairs as a dict. A non-empty `string_value` can only be a string (the value is a oneof), so
    the common case skips WhichOneof: decoding attributes is most of the Python time of ingest (measured)."""
    decoded = {}
    for pair in pairs:
        value = pair.value
        text = value.string_value
        decoded[pair.key] = text if text else any_value(value)
    return decoded


@dataclass
class IngestBatch:
    """The outcome of mapping one request: rows to store, rejection reasons, ignored non-audit records."""

    events: list[StoredEvent] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    ignored: int = 0

    def reject(self, index: int, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REJECTION_MESSAGES:
            self.reasons.append(f"record {index}: {reason}")

    def message(self) -> str:
        parts = []
        if self.rejected:
            more = self.rejected - len(self.reasons)
            parts.append("; ".join(self.reasons) + (f"; and {more} more" if more > 0 else ""))
        if self.ignored:
            parts.append(f"{self.ignored} non-audit log records ignored")
        return "; ".join(parts)


def _column(value: Any, name: str) -> str | None:
    """An indexed column's value: None, or a string of at most 1,024 characters without NUL."""
    if value is None or (value.__class__ is str and len(value) <= _MAX_COLUMN_LENGTH and "\x00" not in value):
        return value
    if not isinstance(value, str):
        raise AuditEventError(name, f"must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise AuditEventError(name, "must not contain NUL characters")
    if len(value) > _MAX_COLUMN_LENGTH:
        raise AuditEventError(name, f"must be at most {_MAX_COLUMN_LENGTH} characters")
    return value


# One log record as decoded_request and decode_logs give it: (time_unix_nano, observed_time_unix_nano,
# severity_number, severity_text, event_name, attributes, body, trace id hex, span id hex, a, b); `a`
# and `b` locate the record for the uid fallback (the LogRecord and 0, or its start and end in the request bytes).
DecodedRecord = tuple[int, int, int, str, str, dict[str, Any], Any, str, str, Any, int]
DecodedRequest = list[tuple[dict[str, Any], list[tuple[str, str, list[DecodedRecord]]]]]


def decoded_request(request: ExportLogsServiceRequest) -> DecodedRequest:
    """The values of a parsed request that mapping reads: per ResourceLogs its resource attributes and per
    ScopeLogs the scope's name, version and decoded records (the reference of the compiled decode_logs)."""
    decoded: DecodedRequest = []
    for resource_logs in request.resource_logs:
        scopes = []
        for scope_logs in resource_logs.scope_logs:
            records: list[DecodedRecord] = []
            for record in scope_logs.log_records:
                records.append((
                    record.time_unix_nano, record.observed_time_unix_nano, record.severity_number,
                    record.severity_text, record.event_name, key_values(record.attributes),
                    any_value(record.body) if record.HasField("body") else None, record.trace_id.hex(),
                    record.span_id.hex(), record, 0,
                ))
            scopes.append((scope_logs.scope.name, scope_logs.scope.version, records))
        decoded.append((key_values(resource_logs.resource.attributes), scopes))
    return decoded


def ingest_request(data: bytes, encoding: str, tenant_id: str) -> IngestBatch:
    """Decode a request body (protobuf or JSON) and map its audit records for `tenant_id`; IngestError 400 when
    the body is malformed. Protobuf goes through the compiled decoder when it is built and takes the request."""
    if encoding == PROTOBUF and _native_decode is not None:
        decoded = _native_decode(data)
        if decoded is not None:
            def serialized(start: int, end: int) -> bytes:
                return LogRecord.FromString(data[start:end]).SerializeToString(deterministic=True)

            return map_decoded(decoded, tenant_id, serialized)
    return map_request(parse_request(data, encoding), tenant_id)


def map_request(request: ExportLogsServiceRequest, tenant_id: str) -> IngestBatch:
    """Turn the audit records of a parsed request into StoredEvents for `tenant_id` (see map_decoded)."""
    return map_decoded(decoded_request(request), tenant_id, _serialized)


def _serialized(record: LogRecord, _: int) -> bytes:
    return record.SerializeToString(deterministic=True)


def map_decoded(decoded: DecodedRequest, tenant_id: str, serialized: Callable[[Any, int], bytes]) -> IngestBatch:
    """Turn decoded audit records into StoredEvents for `tenant_id` (the API key's tenant).

    A record is rejected (not stored, counted in partial_success) when it is not a valid audit event, names
    another tenant in `audit.tenant.id`, or carries values a store cannot keep (NUL, unpaired surrogates).
    Records that are not audit records are ignored and counted. A record without `log.record.uid` gets a
    uid derived from its content (`serialized(a, b)`: its deterministic protobuf bytes), so a retried export
    still deduplicates.
    """
    batch = IngestBatch()
    events = batch.events
    received = time.time_ns()
    index = -1
    for resource, scopes in decoded:
        for scope_name, scope_version, records in scopes:
            try:
                origin = _Origin(resource, scope_name, scope_version)
                origin_error = ""
            except (AuditEventError, UnicodeEncodeError) as exc:
                origin_error = f"resource or scope cannot be stored: {exc}"
            for record in records:
                index += 1
                attributes = record[5]
                event_name = record[4]
                if not semconv.is_audit_record(event_name, attributes):
                    batch.ignored += 1
                    continue
                if origin_error:
                    batch.reject(index, origin_error)
                    continue
                try:
                    events.append(_to_stored(record, origin, tenant_id, received, serialized))
                except AuditEventError as exc:
                    batch.reject(index, str(exc))
                except UnicodeEncodeError:
                    batch.reject(index, "contains an unpaired UTF-16 surrogate (not valid UTF-8)")
    return batch


class _Origin:
    """The resource and scope shared by a run of records, encoded once."""

    __slots__ = ("resource", "resource_json", "scope_name", "scope_version")

    def __init__(self, resource: dict[str, Any], scope_name: str, scope_version: str) -> None:
        self.resource = resource
        self.resource_json = dumps_stored(resource)
        self.scope_name = _text(scope_name, "scope.name")
        self.scope_version = _text(scope_version, "scope.version")
        for text in (scope_name, scope_version):
            text.encode("utf-8")


def _text(value: str, name: str) -> str:
    if "\x00" in value:
        raise AuditEventError(name, "must not contain NUL characters")
    return value


_ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
_OUTCOMES = frozenset(member.value for member in Outcome)
_ACTOR_TYPES = frozenset(member.value for member in ActorType)
_EVENT_STRING_FIELDS = (
    semconv.AUDIT_TENANT_ID, semconv.CLIENT_ADDRESS, semconv.USER_AGENT_ORIGINAL, semconv.SESSION_ID,
    semconv.AUDIT_REQUEST_ID, semconv.HTTP_REQUEST_METHOD, semconv.HTTP_ROUTE, semconv.URL_PATH, semconv.ERROR_TYPE,
)
_ACTOR_STRING_FIELDS = (semconv.USER_ID, semconv.USER_EMAIL, semconv.USER_NAME, semconv.AUDIT_ACTOR_IMPERSONATOR_ID)
_RESOURCE_STRING_FIELDS = (semconv.AUDIT_RESOURCE_ID, semconv.AUDIT_RESOURCE_NAME)
_MAX_DEPTH = 16
_MAX_NAME_LENGTH = 128  # an action or a resource type
_MAX_REASON_LENGTH = 4096


def _check_any_value(value: Any, path: str, depth: int = 0) -> None:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AuditEventError(path, "NaN and infinity are not allowed")
    elif isinstance(value, (dict, list)):
        if depth >= _MAX_DEPTH:
            raise AuditEventError(path, f"nesting deeper than {_MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _check_any_value(item, f"{path}.{key}", depth + 1)


def _nested_ok(container: dict[str, Any] | list[Any], depth: int) -> bool:
    """True when a decoded map or list (at `depth`) holds no NaN or infinity and nothing nested too deep: the
    fast path of _check_any_value, which builds no paths and only runs to name what this refuses."""
    for item in container.values() if container.__class__ is dict else container:
        kind = item.__class__
        if kind is str or kind is int or kind is bool or item is None or kind is bytes:
            continue
        if kind is float:
            if item - item != 0.0:  # NaN or infinity
                return False
        elif kind is dict or kind is list:
            if depth + 1 >= _MAX_DEPTH or not _nested_ok(item, depth + 1):
                return False
        else:
            return False
    return True


def _check_value(value: Any, path: str) -> None:
    kind = value.__class__
    if (kind is dict or kind is list) and _nested_ok(value, 0):
        return
    _check_any_value(value, path)


def _check_string(attributes: dict[str, Any], name: str, max_len: int = _MAX_COLUMN_LENGTH) -> None:
    value = attributes.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > max_len):
        raise AuditEventError(name, f"must be a string of at most {max_len} characters")


def check_audit_attributes(attributes: dict[str, Any]) -> None:
    """Raise AuditEventError unless semconv.attributes_to_event would accept these decoded OTLP attributes.

    The same rules as the model's validation, applied directly to the decoded values: building the AuditEvent
    per record would be a third of ingest time (measured), and tests/store/test_validation.py checks that both
    accept exactly the same attribute maps. Loops are inlined: this runs once per stored record.
    """
    get = attributes.get
    action = get(semconv.AUDIT_ACTION)
    if not isinstance(action, str) or len(action) > _MAX_NAME_LENGTH or not _ACTION_RE.match(action):
        raise AuditEventError("action", f"must be lower-case dotted words like 'document.share', got {str(action)[:64]!r}")
    outcome = get(semconv.AUDIT_OUTCOME, DEFAULT_OUTCOME)
    if not isinstance(outcome, str) or outcome not in _OUTCOMES:
        raise AuditEventError("outcome", f"must be one of {'/'.join(sorted(_OUTCOMES))}")
    for name in _EVENT_STRING_FIELDS:
        value = get(name)
        if value is not None and (value.__class__ is not str or len(value) > _MAX_COLUMN_LENGTH):
            _check_string(attributes, name)
    _check_string(attributes, semconv.AUDIT_REASON, _MAX_REASON_LENGTH)
    if semconv.AUDIT_ACTOR_TYPE in attributes or semconv.USER_ID in attributes:
        actor_type = get(semconv.AUDIT_ACTOR_TYPE, "user")
        if not isinstance(actor_type, str) or actor_type not in _ACTOR_TYPES:
            raise AuditEventError("actor.type", f"must be one of {'/'.join(sorted(_ACTOR_TYPES))}")
        for name in _ACTOR_STRING_FIELDS:
            value = get(name)
            if value is not None and (value.__class__ is not str or len(value) > _MAX_COLUMN_LENGTH):
                _check_string(attributes, name)
        roles = get(semconv.USER_ROLES)
        if roles is not None:
            if not isinstance(roles, list):
                raise AuditEventError(semconv.USER_ROLES, "must be a list of strings")
            for role in roles:
                if not isinstance(role, str) or not role or len(role) > _MAX_COLUMN_LENGTH:
                    raise AuditEventError(semconv.USER_ROLES, "must be a list of non-empty strings")
    if semconv.AUDIT_RESOURCE_TYPE in attributes:
        resource_type = attributes[semconv.AUDIT_RESOURCE_TYPE]
        if not isinstance(resource_type, str) or not resource_type or len(resource_type) > _MAX_NAME_LENGTH:
            raise AuditEventError("resource.type", f"must be a non-empty string of at most {_MAX_NAME_LENGTH} characters")
        for name in _RESOURCE_STRING_FIELDS:
            value = get(name)
            if value is not None and (value.__class__ is not str or len(value) > _MAX_COLUMN_LENGTH):
                _check_string(attributes, name)
    status = get(semconv.HTTP_RESPONSE_STATUS_CODE)
    if status is not None and (status.__class__ is not int or not 100 <= status <= 599):
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise AuditEventError("http_status_code", "must be an integer 100-599")
    changes = get(semconv.AUDIT_CHANGES)
    if changes:
        if not isinstance(changes, dict):
            raise AuditEventError(semconv.AUDIT_CHANGES, "must be a map: field -> {old, new}")
        for name, change in changes.items():
            if not isinstance(change, dict) or not name:
                raise AuditEventError(f"{semconv.AUDIT_CHANGES}.{name}", "must be a map with 'old' and 'new'")
            _check_value(change.get("old"), f"{semconv.AUDIT_CHANGES}.{name}.old")
            _check_value(change.get("new"), f"{semconv.AUDIT_CHANGES}.{name}.new")
    metadata = get(semconv.AUDIT_METADATA)
    if metadata:
        if not isinstance(metadata, dict):
            raise AuditEventError(semconv.AUDIT_METADATA, "must be a map")
        _check_value(metadata, semconv.AUDIT_METADATA)


# What the compiled plain_audit_attributes checks, in its order (_otlp.c, enum SPEC_*).
_CHECK_SPEC = (
    semconv.AUDIT_ACTION, semconv.AUDIT_OUTCOME, _OUTCOMES, _EVENT_STRING_FIELDS, semconv.AUDIT_REASON,
    semconv.AUDIT_ACTOR_TYPE, semconv.USER_ID, _ACTOR_TYPES, _ACTOR_STRING_FIELDS, semconv.USER_ROLES,
    semconv.AUDIT_RESOURCE_TYPE, _RESOURCE_STRING_FIELDS, semconv.HTTP_RESPONSE_STATUS_CODE, semconv.AUDIT_CHANGES,
    semconv.AUDIT_METADATA, _MAX_COLUMN_LENGTH, _MAX_REASON_LENGTH, _MAX_NAME_LENGTH, _MAX_DEPTH,
)


def validate_audit_attributes(attributes: dict[str, Any]) -> None:
    """check_audit_attributes, answered by the compiled check when it can say yes (a tenth of the time for a
    typical record); whatever it does not accept, check_audit_attributes decides and names the field."""
    if _native_plain is None or not _native_plain(attributes, _CHECK_SPEC):
        check_audit_attributes(attributes)


def _to_stored(
    record: DecodedRecord, origin: _Origin, tenant_id: str, received: int, serialized: Callable[[Any, int], bytes]
) -> StoredEvent:
    (time_unix_nano, observed, severity_number, severity_text, event_name, attributes, body, trace_id, span_id,
     source, end) = record
    validate_audit_attributes(attributes)
    get = attributes.get
    claimed = get(semconv.AUDIT_TENANT_ID)
    if claimed is not None and claimed != tenant_id:
        raise AuditEventError(semconv.AUDIT_TENANT_ID, f"names tenant {claimed[:64]!r}, not the API key's tenant")
    uid = _column(get(semconv.LOG_RECORD_UID), semconv.LOG_RECORD_UID)
    if uid is None:
        uid = DERIVED_UID_PREFIX + hashlib.sha256(serialized(source, end)).hexdigest()[:32]
    if time_unix_nano > MAX_TIME_UNIX_NANO or observed > MAX_TIME_UNIX_NANO:
        raise AuditEventError("time_unix_nano", "is beyond the year 2262 (must fit in a signed 64-bit integer)")
    for name, text in (("event_name", event_name), ("severity_text", severity_text)):
        if not text.isascii():
            text.encode("utf-8")  # raises UnicodeEncodeError for unpaired surrogates, which no database accepts
        _text(text, name)
    metadata = get(semconv.AUDIT_METADATA)
    outcome = get(semconv.AUDIT_OUTCOME, DEFAULT_OUTCOME)
    return StoredEvent(
        tenant_id,
        uid,
        time_unix_nano or observed or received,
        observed,
        received,
        event_name,
        attributes[semconv.AUDIT_ACTION],
        outcome,
        severity_number,
        severity_text,
        _column(get(semconv.USER_ID), semconv.USER_ID),
        _column(get(semconv.AUDIT_ACTOR_TYPE), semconv.AUDIT_ACTOR_TYPE),
        _column(get(semconv.AUDIT_RESOURCE_TYPE), semconv.AUDIT_RESOURCE_TYPE),
        _column(get(semconv.AUDIT_RESOURCE_ID), semconv.AUDIT_RESOURCE_ID),
        trace_id,
        span_id,
        attributes,
        origin.resource,
        origin.scope_name,
        origin.scope_version,
        body,
        0,
        dumps_stored(stored_attributes(attributes, uid, outcome)),
        origin.resource_json,
        "null" if body is None else dumps_stored(body),
        dumps_stored(metadata) if metadata else "",
    )
