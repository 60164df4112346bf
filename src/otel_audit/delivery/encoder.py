"""A hand-written OTLP protobuf wire encoder for log records: encode once at emit, frame many at export.

The SDK builds Python protobuf objects for every record (~50 us each); writing the wire format directly costs a
few microseconds, and the compiled `_wire` module (built at install when a C compiler is there) writes a plain
record in about one. This module is its reference and encodes whatever `_wire` declines.
Field numbers are those of opentelemetry/proto/logs/v1/logs.proto and common/v1/common.proto; tests decode the
output with opentelemetry-proto, compare it with the SDK's own encoder, and run with and without `_wire`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .. import semconv

try:  # the compiled encoder of plain records (optional; see _wire.c): the same bytes as the code below
    from ._wire import delimited_join
    from ._wire import encode_log_parts as native_parts
    from ._wire import encode_log_record as native_record
    from ._wire import frame_request as native_request
    from ._wire import set_bounded_attributes
except ImportError:
    native_parts = native_record = native_request = None

    def delimited_join(tag: int, items: list[bytes]) -> bytes:
        """Each item as a length-delimited field with `tag`, concatenated (what _wire.delimited_join writes)."""
        prefix = bytes((tag,))
        return b"".join([prefix + _length(len(item)) + item for item in items])

else:
    set_bounded_attributes(BoundedAttributes)  # SDK records: their items and dropped count, as read below

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_FIXED32 = struct.Struct("<I")
_UINT64_MASK = (1 << 64) - 1

# LogRecord field tags: (field_number << 3) | wire_type.
_TAG_TIME = b"\x09"  # 1, fixed64
_TAG_SEVERITY_NUMBER = 0x10  # 2, varint
_TAG_SEVERITY_TEXT = b"\x1a"  # 3, bytes
_TAG_BODY = b"\x2a"  # 5, bytes
_TAG_ATTRIBUTE = b"\x32"  # 6, bytes (KeyValue)
_TAG_DROPPED = 0x38  # 7, varint
_TAG_FLAGS = b"\x45"  # 8, fixed32
_TAG_TRACE_ID = b"\x4a\x10"  # 9, 16 bytes
_TAG_SPAN_ID = b"\x52\x08"  # 10, 8 bytes
_TAG_OBSERVED = b"\x59"  # 11, fixed64
_TAG_EVENT_NAME = b"\x62"  # 12, bytes

_STRING_CACHE_LIMIT = 8192
_VALUE_MAX_CACHED_LEN = 64


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negatives as 64-bit two's complement, as int64 requires)."""
    if value < 0:
        value &= _UINT64_MASK
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _length(len(payload)) + payload


_key_prefixes: dict[str, bytes] = {}


def _key_prefix(key: str) -> bytes:
    """`KeyValue.key` field bytes (tag, length, UTF-8), cached per key."""
    if len(_key_prefixes) >= _STRING_CACHE_LIMIT:
        _key_prefixes.clear()
    # proto3 leaves an empty string field out, so an empty key has no bytes at all
    prefix = _key_prefixes[key] = _delimited(b"\x0a", key.encode("utf-8")) if key else b""
    return prefix


def _length(size: int) -> bytes:
    """The varint length prefix; one and two bytes (every record and most requests' parts) without a loop."""
    if size < 0x80:
        return _SMALL[size]
    if size < 0x4000:
        return bytes(((size & 0x7F) | 0x80, size >> 7))
    return varint(size)


def encode_any_value(value: Any) -> bytes:
    """The AnyValue message for a Python value (None -> empty AnyValue, as the SDK encodes it)."""
    cls = value.__class__
    if cls is str:
        data = value.encode("utf-8")
        size = len(data)
        return b"\x0a" + (_SMALL[size] if size < 0x80 else varint(size)) + data
    if cls is dict:
        cached = _map_entries.hits.get
        parts = []
        for item in value.items():
            item_class = item[1].__class__
            if item_class is str or item_class is int:  # never bool: (k, True) == (k, 1) as a cache key
                parts.append(cached(item) or _map_entry(*item))
            else:
                parts.append(_map_entry(*item))
        body = b"".join(parts)
        size = len(body)
        return b"\x32" + (_SMALL[size] if size < 0x80 else varint(size)) + body
    if value is None:
        return b""
    if cls is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if cls is int:
        return b"\x18" + (_SMALL[value] if 0 <= value < 0x80 else varint(value))
    if cls is list or cls is tuple:
        parts = []
        for item in value:
            if item.__class__ is str:
                data = item.encode("utf-8")
                size = len(data)
                if size < 0x7E:  # AnyValue{string_value} fits in a one-byte length too
                    parts.append(b"\x0a" + _SMALL[size + 2] + b"\x0a" + _SMALL[size] + data)
                    continue
            encoded = encode_any_value(item)
            size = len(encoded)
            parts.append(b"\x0a" + (_SMALL[size] if size < 0x80 else varint(size)) + encoded)
        body = b"".join(parts)
        size = len(body)
        return b"\x2a" + (_SMALL[size] if size < 0x80 else varint(size)) + body
    if cls is float:
        return b"\x21" + _DOUBLE.pack(value)
    return _encode_other(value)


def _encode_other(value: Any) -> bytes:
    """Subclasses and other containers (BoundedAttributes maps, enums of str/int, bytearray...)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return encode_any_value(int(value))
    if isinstance(value, float):
        return encode_any_value(float(value))
    if isinstance(value, str):
        return encode_any_value(str(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return b"\x3a" + _length(len(data)) + data
    if isinstance(value, Mapping):
        return encode_any_value({str(key): item for key, item in value.items()})
    if isinstance(value, Sequence):
        return encode_any_value(list(value))
    raise TypeError(f"cannot encode a {type(value).__name__} as an OTLP AnyValue")


def encode_key_value(key: str, value: Any) -> bytes:
    """The KeyValue message (without its own tag) for one attribute."""
    prefix = _key_prefixes[key] if key in _key_prefixes else _key_prefix(key)
    encoded = encode_any_value(value)
    return prefix + b"\x12" + _length(len(encoded)) + encoded


def _pair(key: Any, value: Any) -> bytes:
    """A length-prefixed KeyValue, ready to follow a field tag (callers cache what repeats)."""
    if key.__class__ is not str:
        key = str(key)
    if value.__class__ is str:
        return _string_pair(key, value)
    message = encode_key_value(key, value)
    return _length(len(message)) + message


def _string_pair(key: str, value: str) -> bytes:
    """A length-prefixed KeyValue with a string value, written out in one place: the path of every value seen for
    the first time (request ids, uids, timestamps)."""
    data = value.encode("utf-8")
    size = len(data)
    inner = b"\x0a" + (_SMALL[size] if size < 0x80 else varint(size)) + data
    size = len(inner)
    message = (
        (_key_prefixes[key] if key in _key_prefixes else _key_prefix(key))
        + b"\x12"
        + (_SMALL[size] if size < 0x80 else varint(size))
        + inner
    )
    size = len(message)
    return (_SMALL[size] if size < 0x80 else varint(size)) + message


def _map_entry(key: Any, value: Any) -> bytes:
    """One `KeyValueList.values` entry (tag + length-prefixed KeyValue); string and int entries (plans, counts,
    flags) repeat across events and are cached whole once seen twice."""
    encoded = b"\x0a" + _pair(key, value)
    value_class = value.__class__
    if (value_class is str and len(value) <= _VALUE_MAX_CACHED_LEN) or value_class is int:
        _map_entries.admit((key, value), encoded)
    return encoded


class _SecondSightCache:
    """Encoded bytes by (key, value), admitted the second time a pair is seen. Values unique to one record (request
    ids, timestamps) then never enter `hits`, so they cannot evict the values that do repeat (users, resources,
    tenants). Readers call `hits.get` directly: that is the hot path."""

    __slots__ = ("hits", "seen")

    def __init__(self) -> None:
        self.hits: dict[tuple[Any, ...], bytes] = {}
        self.seen: set[tuple[Any, ...]] = set()

    def admit(self, key: tuple[Any, ...], encoded: bytes) -> None:
        if key not in self.seen:
            if len(self.seen) >= _STRING_CACHE_LIMIT:
                self.seen.clear()
            self.seen.add(key)
            return
        if len(self.hits) >= _STRING_CACHE_LIMIT:
            self.hits.clear()
        self.hits[key] = encoded


_map_entries = _SecondSightCache()
_attribute_fields = _SecondSightCache()


_severity_fields: dict[Any, tuple[Any, bytes]] = {}


def _severity(number: Any, text: str | None) -> bytes:
    """Severity number and text fields, cached by text (the number is checked by identity: hashing an enum member
    costs more than the encoding)."""
    encoded = b""
    value = getattr(number, "value", number)
    if value:
        encoded += bytes((_TAG_SEVERITY_NUMBER,)) + varint(value)
    if text:
        encoded += _delimited(_TAG_SEVERITY_TEXT, text.encode("utf-8"))
    if text.__class__ is str and len(_severity_fields) < 256:
        _severity_fields[text] = (number, encoded)
    return encoded


def _attribute_field(key: str, value: str) -> bytes:
    """One string `LogRecord.attributes` field (tag + length-prefixed KeyValue); short ones are cached whole once
    seen twice, except those unique to each record by construction."""
    encoded = _TAG_ATTRIBUTE + _string_pair(key, value)
    if key not in _UNIQUE_PER_RECORD and len(value) <= _VALUE_MAX_CACHED_LEN:
        _attribute_fields.admit((key, value), encoded)
    return encoded


_UNIQUE_PER_RECORD = frozenset(
    {semconv.LOG_RECORD_UID, semconv.AUDIT_CHAIN_HASH, semconv.AUDIT_CHAIN_PREV, semconv.AUDIT_CHAIN_SEQ}
)
_event_name_fields: dict[str, bytes] = {}
_pack_fixed64 = _FIXED64.pack


def encode_log_record(record: ReadWriteLogRecord | ReadableLogRecord) -> bytes:
    """The OTLP `LogRecord` message of an SDK record, fields in field-number order, defaults left out."""
    log = record.log_record
    if native_record is not None:
        encoded = native_record(log)
        if encoded is not None:
            return encoded
    parts: list[bytes] = []
    append = parts.append
    timestamp = log.timestamp
    if timestamp:
        append(_TAG_TIME + _pack_fixed64(timestamp))
    severity_number, severity_text = log.severity_number, log.severity_text
    if severity_number is not None or severity_text:
        severity = _severity_fields.get(severity_text) if severity_text.__class__ is str else None
        append(severity[1] if severity is not None and severity[0] is severity_number else _severity(severity_number, severity_text))
    body = log.body
    if body is not None:
        append(_delimited(_TAG_BODY, encode_any_value(body)))
    attributes = log.attributes
    if attributes:
        cached = _attribute_fields.hits.get
        for item in attributes.items():
            value = item[1]
            if value.__class__ is str:
                append(cached(item) or _attribute_field(item[0], value))  # type: ignore[arg-type]
            else:
                append(_TAG_ATTRIBUTE + _pair(item[0], value))
        dropped = getattr(attributes, "dropped", 0)
        if dropped:
            append(bytes((_TAG_DROPPED,)) + varint(dropped))
    flags = log.trace_flags
    if flags:
        append(_TAG_FLAGS + _FIXED32.pack(int(flags)))
    trace_id = log.trace_id
    if trace_id:
        append(_TAG_TRACE_ID + trace_id.to_bytes(16, "big"))
    span_id = log.span_id
    if span_id:
        append(_TAG_SPAN_ID + span_id.to_bytes(8, "big"))
    observed = log.observed_timestamp
    if observed:
        append(_TAG_OBSERVED + _pack_fixed64(observed))
    event_name = log.event_name
    if event_name:
        encoded = _event_name_fields.get(event_name)
        if encoded is None:
            encoded = _delimited(_TAG_EVENT_NAME, event_name.encode("utf-8"))
            if len(_event_name_fields) < _STRING_CACHE_LIMIT:
                _event_name_fields[event_name] = encoded
        append(encoded)
    return b"".join(parts)


def _attributes_fields(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    return b"".join(_delimited(tag, encode_key_value(key, value)) for key, value in (attributes or {}).items())


def encode_resource(resource: Resource | None) -> bytes:
    """The OTLP `Resource` message (attributes only; the SDK keeps no dropped count)."""
    return _attributes_fields(b"\x0a", resource.attributes if resource is not None else None)


def encode_scope(scope: InstrumentationScope | None) -> bytes:
    """The OTLP `InstrumentationScope` message."""
    if scope is None:
        return b""
    parts = []
    if scope.name:
        parts.append(_delimited(b"\x0a", scope.name.encode("utf-8")))
    if scope.version:
        parts.append(_delimited(b"\x12", scope.version.encode("utf-8")))
    parts.append(_attributes_fields(b"\x1a", scope.attributes))
    return b"".join(parts)


class ScopeDef:
    """Resource and instrumentation scope of a group of records, pre-encoded; records of one ScopeDef share a
    ScopeLogs entry in the request."""

    __slots__ = ("key", "resource", "resource_schema_url", "scope", "scope_schema_url")

    def __init__(self, resource: bytes, scope: bytes, resource_schema_url: str = "", scope_schema_url: str = "") -> None:
        self.resource = resource
        self.scope = scope
        self.resource_schema_url = resource_schema_url
        self.scope_schema_url = scope_schema_url
        self.key = (resource, scope, resource_schema_url, scope_schema_url)

    @classmethod
    def of(cls, record: ReadWriteLogRecord | ReadableLogRecord) -> ScopeDef:
        return cls.for_scope(record.resource, record.instrumentation_scope)

    @classmethod
    def for_scope(cls, resource: Resource | None, scope: InstrumentationScope | None) -> ScopeDef:
        """The ScopeDef of records from this resource and instrumentation scope."""
        return cls(
            encode_resource(resource),
            encode_scope(scope),
            (resource.schema_url if resource is not None else "") or "",
            (scope.schema_url if scope is not None else "") or "",
        )

    def to_bytes(self) -> bytes:
        """A self-describing form for the spool (length-prefixed fields)."""
        fields = (self.resource, self.scope, self.resource_schema_url.encode(), self.scope_schema_url.encode())
        return b"".join(_FIXED32.pack(len(field)) + field for field in fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> ScopeDef:
        fields = []
        offset = 0
        for _ in range(4):
            (size,) = _FIXED32.unpack_from(data, offset)
            offset += 4
            fields.append(bytes(data[offset : offset + size]))
            offset += size
        if offset != len(data):
            raise ValueError("trailing bytes after a scope definition")
        return cls(fields[0], fields[1], fields[2].decode(), fields[3].decode())


def frame_request(records: Iterable[tuple[ScopeDef, bytes]]) -> bytes:
    """An `ExportLogsServiceRequest` from encoded records, without re-encoding them.

    Adjacent records of the same resource and scope share one ResourceLogs/ScopeLogs entry, so the order of
    records in the request is exactly the order given. The compiled `_wire.frame_request` writes the same bytes
    into one buffer (the code below copies a request's records once per nesting level).
    """
    if native_request is not None and records.__class__ is list:
        body = native_request(records)
        if body is not None:
            return body
    out = []
    current: ScopeDef | None = None
    run: list[bytes] = []

    def close_run() -> None:
        if current is None:
            return
        scope_logs = [_delimited(b"\x0a", current.scope), delimited_join(0x12, run)]
        if current.scope_schema_url:
            scope_logs.append(_delimited(b"\x1a", current.scope_schema_url.encode("utf-8")))
        resource_logs = [_delimited(b"\x0a", current.resource), _delimited(b"\x12", b"".join(scope_logs))]
        if current.resource_schema_url:
            resource_logs.append(_delimited(b"\x1a", current.resource_schema_url.encode("utf-8")))
        out.append(_delimited(b"\x0a", b"".join(resource_logs)))

    for scope, record in records:
        if current is None or (scope is not current and scope.key != current.key):
            close_run()
            current, run = scope, []
        run.append(record)
    close_run()
    return b"".join(out)
