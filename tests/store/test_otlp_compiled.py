"""The compiled OTLP decoder (store/_otlp.c) against the protobuf reference (otlp.decoded_request): the same values
for every request it takes, None for every request protobuf refuses, and the same rows and rejections through
ingest. Skipped as a whole when the extension is not built."""

from __future__ import annotations

import math
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_audit import semconv
from otel_audit.store import otlp
from otel_audit.store.storage import event_row

from .helpers import audit_attributes, build_request

native = pytest.importorskip("otel_audit.store._otlp")
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def reference(data: bytes) -> otlp.DecodedRequest | None:
    """decoded_request of the bytes as protobuf parses them, or None when protobuf refuses them."""
    try:
        return otlp.decoded_request(ExportLogsServiceRequest.FromString(data))
    except DecodeError:
        return None


def comparable(decoded: otlp.DecodedRequest | None) -> Any:
    """The decoded values without each record's locator (a LogRecord in one, byte offsets in the other)."""
    if decoded is None:
        return None
    return [(resource, [(name, version, [record[:9] for record in records]) for name, version, records in scopes])
            for resource, scopes in decoded]


def assert_same_decoding(data: bytes) -> None:
    """What the compiled decoder takes, it decodes as protobuf does; what protobuf refuses, it declines."""
    expected = reference(data)
    got = native.decode_logs(data)
    if expected is None:
        assert got is None
    elif got is not None:
        assert comparable(got) == comparable(expected)


def ingest_both(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """(rows, rejections, ignored) of ingest_request with and without the compiled decoder (fixed receive time)."""
    monkeypatch.setattr(otlp, "time", SimpleNamespace(time_ns=lambda: 1_700_000_000_000_000_000))
    outcomes = []
    for decoder in (native.decode_logs, None):
        monkeypatch.setattr(otlp, "_native_decode", decoder)
        batch = otlp.ingest_request(data, otlp.PROTOBUF, "acme")
        outcomes.append(([event_row(event) for event in batch.events], batch.rejected, batch.reasons, batch.ignored))
    return outcomes[0], outcomes[1]


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@EXAMPLES
@given(metadata=st.dictionaries(st.text(max_size=10), values, max_size=5), extra=values, body=values,
       with_uid=st.booleans())
def test_values_decode_and_map_alike(metadata, extra, body, with_uid, monkeypatch) -> None:
    record = audit_attributes(**{semconv.AUDIT_METADATA: metadata, "custom.value": extra})
    if not with_uid:
        del record[semconv.LOG_RECORD_UID]
    request = build_request([record, audit_attributes("user.login")], resource={"service.name": "svc", "x": extra})
    request.resource_logs[0].scope_logs[0].log_records[0].body.CopyFrom(
        build_request([{"v": body}]).resource_logs[0].scope_logs[0].log_records[0].attributes[0].value)
    data = request.SerializeToString()
    assert native.decode_logs(data) is not None
    assert_same_decoding(data)
    with_native, without = ingest_both(data, monkeypatch)
    assert with_native == without


def test_floats_that_are_not_numbers_map_alike(monkeypatch) -> None:
    record = audit_attributes(**{semconv.AUDIT_METADATA: {"nan": math.nan, "inf": math.inf, "neg": -0.0}})
    data = build_request([record]).SerializeToString()
    decoded = native.decode_logs(data)
    metadata = decoded[0][1][0][2][0][5][semconv.AUDIT_METADATA]
    assert math.isnan(metadata["nan"]) and metadata["inf"] == math.inf and math.copysign(1, metadata["neg"]) < 0
    with_native, without = ingest_both(data, monkeypatch)
    assert with_native == without
    assert with_native[1] == 1  # NaN is refused either way


def test_several_resources_scopes_and_non_audit_records(monkeypatch) -> None:
    request = build_request([audit_attributes(), {"plain": "log"}, audit_attributes(**{"audit.outcome": "nope"})],
                            event_names=[None, "app.log", None])
    second = request.resource_logs.add()
    second.CopyFrom(request.resource_logs[0])
    second.resource.attributes[0].value.string_value = "other"
    second.scope_logs[0].scope.attributes.add(key="scope.attr").value.int_value = 3
    second.scope_logs.add().scope.name = "empty scope"
    second.schema_url = "https://opentelemetry.io/schemas/1.30.0"
    for record in second.scope_logs[0].log_records:
        for item in record.attributes:
            if item.key == semconv.LOG_RECORD_UID:
                item.value.string_value += "-2"
        record.trace_id = bytes(range(16))
        record.span_id = bytes(range(8))
        record.severity_number = 13
        record.severity_text = "WARN"
        record.flags = 1
        record.dropped_attributes_count = 2
    data = request.SerializeToString()
    assert native.decode_logs(data) is not None
    assert_same_decoding(data)
    with_native, without = ingest_both(data, monkeypatch)
    assert with_native == without
    assert (len(with_native[0]), with_native[1], with_native[3]) == (2, 2, 2)


# Hand-written wire bytes for what generated messages never hold.

def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def text_value(text: bytes) -> bytes:
    return field(1, text)


def request_of(*record_fields: bytes) -> bytes:
    attributes = b"".join(field(6, field(1, key) + field(2, text_value(value))) for key, value in (
        (b"audit.action", b"user.login"), (b"log.record.uid", b"u-1")))
    record = attributes + field(12, b"audit.user.login") + b"".join(record_fields)
    return field(1, field(2, field(2, record)))


ODD_RECORD_FIELDS = {
    "unknown varint field": tag(99, 0) + varint(5),
    "unknown fixed32 field": tag(98, 5) + b"\x01\x02\x03\x04",
    "unknown length field": field(97, b"whatever"),
    "time as varint (kept as unknown)": tag(1, 0) + varint(12345),
    "time given twice (last wins)": tag(1, 1) + struct.pack("<Q", 1) + tag(1, 1) + struct.pack("<Q", 2),
    "severity text given twice": field(3, b"INFO") + field(3, b"WARN"),
    "body given twice (merged)": field(5, text_value(b"a")) + field(5, tag(3, 0) + varint(7)),
    "oneof given twice": field(5, text_value(b"a") + tag(3, 0) + varint(7)),
    "string table index": field(5, tag(8, 0) + varint(1)),
    "key table index": field(6, field(1, b"k") + tag(3, 0) + varint(1)),
    "value given twice": field(6, field(1, b"k") + field(2, text_value(b"a")) + field(2, text_value(b"b"))),
    "key given twice": field(6, field(1, b"k") + field(1, b"j") + field(2, text_value(b"a"))),
    "pair without value": field(6, field(1, b"empty")),
    "pair without key": field(6, field(2, text_value(b"a"))),
    "severity beyond int32": tag(2, 0) + varint(2**40),
    "negative severity": tag(2, 0) + varint(2**64 - 1),
    "invalid UTF-8": field(3, b"\xff\xfe"),
    "UTF-8 of a surrogate": field(3, b"\xed\xa0\x80"),
    "group wire type": tag(50, 3) + tag(50, 4),
    "truncated length": tag(3, 2) + varint(50) + b"abc",
    "overlong varint": tag(99, 0) + b"\xff" * 11,
    "field number 0": tag(0, 0) + varint(1),
    "bool of any varint": field(5, tag(2, 0) + varint(2)),
    "int64 negative": field(5, tag(3, 0) + varint(2**64 - 5)),
    "known field with another wire type": field(7, b"abc"),
}


@pytest.mark.parametrize("name", sorted(ODD_RECORD_FIELDS))
def test_odd_wire_input_is_decoded_alike_or_declined(name) -> None:
    data = request_of(ODD_RECORD_FIELDS[name])
    assert_same_decoding(data)
    if name in ("body given twice (merged)", "oneof given twice", "string table index", "key table index",
                "value given twice", "invalid UTF-8", "UTF-8 of a surrogate", "group wire type", "truncated length"):
        assert native.decode_logs(data) is None


def test_nesting_deeper_than_the_limit_is_declined() -> None:
    value = text_value(b"leaf")
    for _ in range(40):
        value = field(5, field(1, value))  # an array holding the value
    data = request_of(field(5, value))
    assert native.decode_logs(data) is None
    assert reference(data) is not None  # protobuf takes it; the store then refuses it by its own depth rule


def test_entity_references_and_scope_attributes_in_invalid_utf8_are_declined() -> None:
    resource = field(3, field(2, b"service"))
    assert native.decode_logs(field(1, field(1, resource))) is None
    bad_scope = field(1, field(2, field(1, field(3, field(1, b"\xff")))))
    assert reference(bad_scope) is None and native.decode_logs(bad_scope) is None


VALID = build_request([audit_attributes(**{semconv.AUDIT_METADATA: {"a": [1, 2.5, True, "x", {"b": None}]}}),
                       audit_attributes("user.login")]).SerializeToString()


@EXAMPLES
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.integers(0, len(VALID)))
def test_mutated_requests_decode_alike_or_are_declined(edits, cut) -> None:
    data = bytearray(VALID)
    for position, byte in edits:
        data[position] = byte
    assert_same_decoding(bytes(data))
    assert_same_decoding(bytes(data[:cut]))


@EXAMPLES
@given(data=st.binary(max_size=300))
def test_random_bytes_decode_alike_or_are_declined(data) -> None:
    assert_same_decoding(data)


def test_keys_sharing_a_cache_slot_decode_as_themselves() -> None:
    """The decoder keeps recently decoded attribute keys: far more distinct keys than it has slots, of equal
    length and differing in one character, then again in reverse, two bytes that are not UTF-8, and keys too long
    to be kept, each decode as protobuf decodes them."""
    keys = [f"k.{index:04d}" for index in range(2_000)]
    for order in (keys, keys[::-1]):
        record = audit_attributes(**{semconv.AUDIT_METADATA: {key: key[::-1] for key in order}})
        assert_same_decoding(build_request([record]).SerializeToString())
    data = build_request([audit_attributes(**{"k.\u00e9": 1, "x" * 65: 2, "x" * 64: 3})]).SerializeToString()
    assert_same_decoding(data)
    assert native.decode_logs(data) is not None
    assert native.decode_logs(data.replace("k.\u00e9".encode(), b"k.\xff\xfe")) is None
