"""The hand-written wire encoder against opentelemetry-proto and the SDK's own OTLP encoder."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import set_value
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as ProtoLogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

from otel_audit.delivery import encoder
from otel_audit.delivery.encoder import (
    ScopeDef,
    encode_any_value,
    encode_log_record,
    frame_request,
    varint,
)
from otel_audit.testing.receiver import any_value_to_python

RESOURCE = Resource.create({"service.name": "encoder-test", "deployment.environment.name": "test"})
SCOPE = InstrumentationScope("otel_audit", "0.1.0", "https://example.com/schema", {"scope.attr": "x"})

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=64)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20
)


@pytest.fixture(autouse=True, params=["compiled", "python"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the compiled encoder (records and requests) and with the pure-Python one it must equal."""
    if request.param == "compiled" and encoder.native_record is None:
        pytest.skip("the _wire extension is not built here (no C compiler at install)")
    if request.param == "python":
        monkeypatch.setattr(encoder, "native_record", None)
        monkeypatch.setattr(encoder, "native_request", None)
    return request.param


def readable(**fields: Any) -> ReadableLogRecord:
    return ReadableLogRecord(LogRecord(**fields), resource=RESOURCE, instrumentation_scope=SCOPE)


def sdk_message(record: ReadableLogRecord) -> ProtoLogRecord:
    message = encode_logs([record]).resource_logs[0].scope_logs[0].log_records[0]
    if record.log_record.body is None:
        message.ClearField("body")  # the SDK writes an empty AnyValue for "no body"; leaving it out means the same
    return message


def decoded(data: bytes) -> ProtoLogRecord:
    message = ProtoLogRecord()
    message.ParseFromString(data)
    return message


def assert_compatible(record: ReadableLogRecord) -> None:
    ours = encode_log_record(record)
    message = decoded(ours)
    assert message == sdk_message(record)
    assert message.SerializeToString() == ours  # same bytes protobuf itself would write


def test_typical_audit_record_matches_the_sdk_encoder() -> None:
    span = NonRecordingSpan(SpanContext(0x0123456789ABCDEF0123456789ABCDEF, 0x0123456789ABCDEF, False, TraceFlags(1)))
    record = readable(
        timestamp=1_700_000_000_123_456_789,
        observed_timestamp=1_700_000_000_223_456_789,
        context=set_span_in_context(span),
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        event_name="audit.document.share",
        body="a body",
        attributes={
            "audit.action": "document.share",
            "audit.outcome": "denied",
            "log.record.uid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "user.roles": ["admin", "editor"],
            "http.response.status_code": 403,
            "audit.metadata": {"shared_with": {"id": "u-2", "perm": "read"}, "n": -1, "ratio": 0.5, "ok": False},
            "audit.changes": {"title": {"old": None, "new": "x" * 300}},
            "raw": b"\x00\xff",
        },
    )
    assert_compatible(record)
    message = decoded(encode_log_record(record))
    assert message.trace_id.hex() == "0123456789abcdef0123456789abcdef"
    assert message.span_id.hex() == "0123456789abcdef"
    assert message.flags == 1


def test_record_without_trace_or_severity_leaves_fields_out() -> None:
    record = readable(timestamp=1, observed_timestamp=2, context=set_value("k", "v"), attributes={"a": "b"})
    assert_compatible(record)
    assert decoded(encode_log_record(record)).trace_id == b""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attributes=st.dictionaries(st.text(max_size=20), values, max_size=8), body=values)
def test_generated_attribute_values_match_the_sdk_encoder(attributes: dict[str, Any], body: Any) -> None:
    record = readable(timestamp=5, observed_timestamp=6, severity_number=SeverityNumber.INFO, attributes=attributes, body=body)
    assert_compatible(record)
    message = decoded(encode_log_record(record))
    assert {kv.key: any_value_to_python(kv.value) for kv in message.attributes} == _python(attributes)


def _python(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _python(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_python(item) for item in value]
    return value


@given(number=st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_matches_protobuf(number: int) -> None:
    message = ProtoLogRecord(dropped_attributes_count=number & 0xFFFFFFFF)
    assert message.SerializeToString() == (b"\x38" + varint(number & 0xFFFFFFFF) if number & 0xFFFFFFFF else b"")


def test_unsupported_value_names_its_type() -> None:
    try:
        encode_any_value(object())
    except TypeError as exc:
        assert "object" in str(exc)
    else:
        raise AssertionError("encoding an object() must fail")


def test_framing_keeps_order_and_groups_adjacent_records_by_resource_and_scope() -> None:
    other_scope = InstrumentationScope("other", "2")
    records = [
        readable(timestamp=i, observed_timestamp=i, attributes={"seq": i}) for i in range(3)
    ] + [ReadableLogRecord(LogRecord(timestamp=3, observed_timestamp=3, attributes={"seq": 3}), RESOURCE, other_scope)]
    records.append(readable(timestamp=4, observed_timestamp=4, attributes={"seq": 4}))
    body = frame_request([(ScopeDef.of(record), encode_log_record(record)) for record in records])
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    groups = [
        (scope_logs.scope.name, [kv.value.int_value for log in scope_logs.log_records for kv in log.attributes])
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
    ]
    assert groups == [("otel_audit", [0, 1, 2]), ("other", [3]), ("otel_audit", [4])]
    sdk = encode_logs(records[:3])
    assert request.resource_logs[0].resource == sdk.resource_logs[0].resource
    assert request.resource_logs[0].scope_logs[0].scope == sdk.resource_logs[0].scope_logs[0].scope
    assert request.resource_logs[0].scope_logs[0].schema_url == "https://example.com/schema"


def test_scope_definition_round_trips() -> None:
    scope = ScopeDef.of(readable(timestamp=1, observed_timestamp=1))
    again = ScopeDef.from_bytes(scope.to_bytes())
    assert again.key == scope.key


def test_cached_encodings_never_mix_values_that_compare_equal() -> None:
    """True == 1 == 1.0 as cache keys; repeated records (past the caches' second sighting) must keep each type."""
    shapes = [{"flag": True}, {"flag": 1}, {"flag": 1.0}, {"flag": "1"}, {"flag": False}, {"flag": 0}]
    for _ in range(3):
        for shape in shapes:
            record = readable(
                timestamp=7, observed_timestamp=8, attributes={"audit.metadata": shape, "audit.tenant.id": "acme", **shape}
            )
            assert_compatible(record)
            message = decoded(encode_log_record(record))
            attributes = {kv.key: any_value_to_python(kv.value) for kv in message.attributes}
            assert type(attributes["flag"]) is type(shape["flag"])
            assert type(attributes["audit.metadata"]["flag"]) is type(shape["flag"])


