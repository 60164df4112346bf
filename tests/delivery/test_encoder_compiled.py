"""The compiled encoder (_wire.c) against its reference, encoder.py: the same bytes, or it declines."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LogRecordLimits, ReadWriteLogRecord

from otel_audit.delivery import encoder
from otel_audit.delivery.encoder import encode_any_value, encode_log_record

from .test_encoder import decoded, values

_wire = pytest.importorskip("otel_audit.delivery._wire", reason="the _wire extension is not built here (no C compiler)")


@settings(max_examples=500, deadline=None)
@given(value=values | st.integers() | st.dictionaries(st.integers(), st.text(max_size=3), max_size=2))
def test_compiled_encoding_equals_the_python_one_or_declines(value: Any) -> None:
    """_wire writes exactly encoder.py's bytes, or declines (None) and leaves the record to encoder.py: numbers
    outside int64, non-str keys, types it does not know."""
    compiled = _wire.encode_any_value(value)
    assert compiled is None or compiled == encode_any_value(value)
    record = SimpleNamespace(  # attributes as emit builds them: a plain dict
        log_record=SimpleNamespace(
            timestamp=1, observed_timestamp=2, severity_number=None, severity_text=None, body=None, trace_flags=0,
            trace_id=0, span_id=0, event_name="audit.x.y", attributes={"audit.action": "x.y", "value": value},
        )
    )
    with_compiled = encode_log_record(record)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder, "native_record", None)
        assert encode_log_record(record) == with_compiled


@settings(max_examples=300, deadline=None)
@given(
    timestamp=st.none() | st.integers(-5, 2**64 + 5),
    severity=st.none() | st.sampled_from(list(SeverityNumber)) | st.integers(-3, 300),
    text=st.none() | st.text(max_size=6),
    trace_id=st.integers(-2, 2**128 + 2),
    span_id=st.integers(-2, 2**64 + 2),
    flags=st.integers(0, 2**32 + 2),
    body=st.none() | values,
)
def test_compiled_record_fields_equal_the_python_ones_or_decline(
    timestamp: Any, severity: Any, text: Any, trace_id: int, span_id: int, flags: int, body: Any
) -> None:
    """Every LogRecord field, in and out of range: the same bytes, or the same error from encoder.py."""
    record = SimpleNamespace(
        log_record=SimpleNamespace(
            timestamp=timestamp, observed_timestamp=timestamp, severity_number=severity, severity_text=text,
            body=body, trace_flags=flags, trace_id=trace_id, span_id=span_id, event_name="audit.x.y",
            attributes={"audit.action": "x.y"},
        )
    )

    def outcome() -> Any:
        try:
            return encode_log_record(record)
        except Exception as error:  # noqa: BLE001 - the comparison is the point
            return type(error)

    compiled = outcome()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder, "native_record", None)
        assert outcome() == compiled
    if body is None:  # the direct path's records have no body; given by its fields, a record encodes the same
        parts = _wire.encode_log_parts(
            timestamp, timestamp, severity, text, {"audit.action": "x.y"}, "audit.x.y", trace_id, span_id, flags,
        )
        assert parts is None or parts == compiled
        assert (parts is None) == (_wire.encode_log_record(record.log_record) is None)


def test_the_compiled_encoder_takes_the_records_emit_builds() -> None:
    """Declining is always correct, so check that the records audit loggers build are not declined."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from otel_audit.logger import _api_record

    attributes = {"audit.action": "document.read", "user.roles": ["a"], "audit.metadata": {"n": 1, "ok": True}}
    span = TracerProvider().get_tracer("encoder").start_span("request")
    for log in (
        _api_record(1, 2, SeverityNumber.INFO, "INFO", attributes, "audit.document.read"),
        _api_record(1, 2, SeverityNumber.WARN, "WARN", attributes, "audit.document.read"),
    ):
        assert _wire.encode_log_record(log) is not None
    with trace.use_span(span, end_on_exit=True):
        traced = _api_record(1, 2, SeverityNumber.INFO, "INFO", attributes, "audit.document.read")
    encoded = _wire.encode_log_record(traced)
    assert encoded is not None and decoded(encoded).trace_id == span.get_span_context().trace_id.to_bytes(16, "big")


@settings(max_examples=300, deadline=None)
@given(
    attributes=st.dictionaries(st.text(max_size=6), values, max_size=6),
    max_attributes=st.none() | st.integers(0, 4),
    max_length=st.none() | st.integers(0, 5),
)
def test_sdk_records_are_encoded_from_their_bounded_attributes_as_the_python_encoder_reads_them(
    attributes: dict[str, Any], max_attributes: int | None, max_length: int | None
) -> None:
    """A record through the SDK carries BoundedAttributes (values made immutable, some dropped or truncated by the
    limits): the compiled encoder writes its items and dropped count exactly as encoder.py does, instead of
    declining every SDK record."""
    limits = LogRecordLimits(max_attributes=max_attributes, max_attribute_length=max_length)
    record = ReadWriteLogRecord(LogRecord(timestamp=1, attributes=attributes, event_name="audit.x.y"), limits=limits)
    compiled = _wire.encode_log_record(record.log_record)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder, "native_record", None)
        reference = encode_log_record(record)
    assert compiled == reference
    bounded = record.log_record.attributes
    assert decoded(compiled).dropped_attributes_count == (bounded.dropped if bounded else 0)  # none without items


@settings(max_examples=300, deadline=None)
@given(
    scope_number=st.integers(0, 2**32 - 1),
    emit_ns=st.integers(0, 2**64 - 1),
    record=st.binary(max_size=2000),
    kind=st.integers(0, 255),
)
def test_the_compiled_spool_frame_equals_the_python_one(scope_number: int, emit_ns: int, record: bytes, kind: int) -> None:
    from otel_audit.delivery.spool import MAGIC, python_record_frame

    assert _wire.record_frame(MAGIC, kind, scope_number, emit_ns, record) == python_record_frame(
        MAGIC, kind, scope_number, emit_ns, record
    )


def test_the_compiled_frame_checksum_at_every_size_its_loops_meet() -> None:
    """The checksum is folded 64 bytes at a time, then 16, then byte by byte: every payload size up to 300 bytes
    and a few large ones, each against zlib's CRC-32 (through the Python frame)."""
    from otel_audit.delivery.spool import MAGIC, python_record_frame

    rng = random.Random(5)
    for size in [*range(301), 4096, 4097, 4111, 4159, 65_536 + 7]:
        record = rng.randbytes(size)
        kind = rng.randrange(256)
        assert _wire.record_frame(MAGIC, kind, 7, 9, record) == python_record_frame(MAGIC, kind, 7, 9, record), size


def test_the_spool_uses_the_compiled_frame() -> None:
    from otel_audit.delivery import spool

    assert spool.record_frame is _wire.record_frame


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.binary(max_size=300), max_size=20), tag=st.integers(1, 0x7F))
def test_the_compiled_delimited_join_equals_the_python_one(items: list[bytes], tag: int) -> None:
    from otel_audit.delivery.encoder import _length

    assert _wire.delimited_join(tag, items) == b"".join(bytes((tag,)) + _length(len(item)) + item for item in items)


_scope_defs = st.builds(
    encoder.ScopeDef,
    st.binary(max_size=12),
    st.binary(max_size=12),
    st.sampled_from(["", "https://example.com/r", "schéma"]),
    st.sampled_from(["", "https://example.com/s"]),
)


@settings(max_examples=300, deadline=None)
@given(
    scopes=st.lists(_scope_defs, min_size=1, max_size=3),
    picks=st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=200)), max_size=40),
    copy_keys=st.booleans(),
)
def test_the_compiled_request_equals_the_python_one(scopes: list[Any], picks: list[Any], copy_keys: bool) -> None:
    """The same ExportLogsServiceRequest bytes for any run of records over a few scopes, including distinct
    ScopeDef objects with equal keys (they share an entry, as the reference groups them), empty scopes and
    schema URLs, and record sizes across varint length boundaries."""
    if copy_keys:  # a second object with the same key for each scope
        scopes = scopes + [encoder.ScopeDef(*scope.key) for scope in scopes]
    records = [(scopes[index % len(scopes)], record) for index, record in picks]
    compiled = _wire.frame_request(records)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder, "native_request", None)
        assert compiled == encoder.frame_request(records)


def test_the_compiled_request_declines_what_it_does_not_take() -> None:
    scope = encoder.ScopeDef(b"r", b"s")
    assert _wire.frame_request(((scope, b"x"),)) is None  # not a list
    assert _wire.frame_request([(scope, "text")]) is None
    assert _wire.frame_request([(scope, b"x", 1)]) is None
    assert _wire.frame_request([(SimpleNamespace(key=1, resource="r", scope=b"s", resource_schema_url="",
                                                 scope_schema_url=""), b"x")]) is None
    assert _wire.frame_request([]) == b""


@pytest.mark.parametrize("offset", [0, 3, 10])
@pytest.mark.parametrize("position", [0, 4])
def test_the_held_write_writes_like_os_pwrite(tmp_path: Any, offset: int, position: int) -> None:
    """write_held(fd, data, offset, position) is os.pwrite(fd, data[offset:], position) without handing the GIL
    over: the bytes land at `position`, whatever the file's own offset."""
    import os

    from otel_audit.delivery.spool import released_write

    data = b"0123456789"
    for name, write in (("held", _wire.write_held), ("released", released_write)):
        (tmp_path / name).write_bytes(b"abcdefgh")
        fd = os.open(tmp_path / name, os.O_WRONLY)
        try:
            os.lseek(fd, 2, os.SEEK_SET)
            assert write(fd, data, offset, position) == len(data) - offset
        finally:
            os.close(fd)
    expected = (b"abcdefgh"[:position] + data[offset:] + b"abcdefgh"[position + len(data) - offset :])
    assert (tmp_path / "held").read_bytes() == (tmp_path / "released").read_bytes() == expected


def test_the_held_write_reports_errors() -> None:
    import os

    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        with pytest.raises(OSError):
            _wire.write_held(read_end, b"x", 0, 0)  # the read end of a pipe is not writable: EBADF
    finally:
        os.close(read_end)
    with pytest.raises(ValueError):
        _wire.write_held(1, b"x", 2, 0)
    with pytest.raises(ValueError):
        _wire.write_held(1, b"x", 0, -1)
    with pytest.raises(TypeError):
        _wire.write_held(1, "text", 0, 0)


@pytest.mark.parametrize(("fsync", "held"), [("interval", True), ("always", False)])
def test_the_spool_holds_the_gil_only_for_page_cache_writes(tmp_path: Any, make_spool: Any, fsync: str, held: bool) -> None:
    from otel_audit.delivery.spool import released_write

    spool = make_spool(tmp_path, max_bytes=1 << 20, fsync=fsync)
    assert spool._write is (_wire.write_held if held else released_write)


@pytest.mark.parametrize("method", ["append_log", "append_parts"])
@pytest.mark.parametrize("fsync", ["interval", "always"])
def test_the_compiled_append_writes_what_append_writes(tmp_path: Any, make_spool: Any, fsync: str, method: str) -> None:
    """append_log (encode, frame and write in one call) leaves the spool exactly as encode_log_record + append do:
    the same segment bytes, the same remembered tail and counters, the same refusals. The records change scope,
    fill segments, overflow the remembered tail, include one the compiled encoder declines, and run into a full
    spool and a closed one, so both of append_log's answers (written, and "take the reference path") occur.
    append_parts, given the same record's fields, must do exactly the same (it is emitted at its observed time)."""
    from pathlib import Path

    from opentelemetry.attributes import BoundedAttributes

    from otel_audit.delivery.encoder import ScopeDef
    from otel_audit.delivery.errors import AuditDeliveryError
    from otel_audit.delivery.spool import Spool

    scopes = [ScopeDef(b"\x0a\x01r", b"\x0a\x01a"), ScopeDef(b"\x0a\x01r", b"\x0a\x01b")]
    records = []
    for index in range(120):
        attributes: Any = {"audit.action": "x.y", "seq": index, "text": "t" * (index % 7 * 40)}
        if index == 5:
            attributes = BoundedAttributes(attributes=attributes)  # not a plain dict: the compiled encoder declines
        emit_ns = 3_000 + index
        log = SimpleNamespace(
            timestamp=1_000 + index, observed_timestamp=emit_ns if method == "append_parts" else 2_000 + index,
            severity_number=SeverityNumber.INFO, severity_text="INFO", body=None, trace_flags=index % 2,
            trace_id=index * 2**70, span_id=index * 3, event_name="audit.x.y", attributes=attributes,
        )
        records.append((1 + index // 10 % 2, log, emit_ns))

    def compiled_append(spool: Spool, scope_number: int, scope: ScopeDef, log: Any, emit_ns: int) -> Any:
        if method == "append_log":
            return spool.append_log(scope_number, scope, log, emit_ns)
        return spool.append_parts(
            scope_number, scope, log.timestamp, log.observed_timestamp, log.severity_number, log.severity_text,
            log.attributes, log.event_name, log.trace_id, log.span_id, log.trace_flags,
        )

    def encoded(log: Any) -> bytes:
        return encode_log_record(SimpleNamespace(log_record=log))

    probe = make_spool(tmp_path / "probe", max_bytes=1 << 20)
    for scope_number, log, emit_ns in records[:8]:
        probe.append(scope_number, scopes[scope_number - 1], encoded(log), emit_ns)
    segment_bytes = probe._segment_size  # a segment is full exactly at a record's end, so rotation is exact too
    probe.close()

    def run(directory: Path, compiled: bool) -> tuple[list[Any], Spool]:
        spool = make_spool(directory, max_bytes=24_000, fsync=fsync, full_policy="raise", segment_bytes=segment_bytes)
        spool._tail_max = 3_000
        spool._orphan_bytes = 4_000  # adopted lanes' bytes count against max_bytes too
        outcomes: list[Any] = []
        for position, (scope_number, log, emit_ns) in enumerate(records):
            if position == 110:
                spool.close()
            scope = scopes[scope_number - 1]
            spool._dirty = False
            pending = compiled_append(spool, scope_number, scope, log, emit_ns) if compiled else None
            if pending is True:
                outcomes.append(("compiled", spool._dirty))
                continue
            try:
                spool.append(scope_number, scope, pending if pending is not None else encoded(log), emit_ns)
                outcomes.append(("reference", spool._dirty))
            except AuditDeliveryError as error:
                outcomes.append((str(error).split(" (")[0].split(";")[0], spool._dirty))
        return outcomes, spool

    compiled_outcomes, compiled = run(tmp_path / "compiled", True)
    reference_outcomes, reference = run(tmp_path / "reference", False)
    answers = {answer for answer, _ in compiled_outcomes}
    assert {"compiled", "reference", "audit spool full", "the audit spool is shut down"} <= answers
    assert [("reference" if answer == "compiled" else answer, dirty) for answer, dirty in compiled_outcomes] == (
        reference_outcomes
    )

    def segments(spool: Spool) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted(spool._lane.path.glob("seg-*.log"))}

    assert len(segments(compiled)) > 3 and segments(compiled) == segments(reference)
    for name in ("_segment", "_segment_size", "_unacked", "emitted", "_tail_bytes"):
        assert getattr(compiled, name) == getattr(reference, name), name
    assert [entry[:3] + entry[4:] for entry in compiled._tail] == [entry[:3] + entry[4:] for entry in reference._tail]
    assert [entry[3] for entry in compiled._tail] == [entry[3] for entry in reference._tail]

