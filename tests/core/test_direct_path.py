"""The direct path (AuditLogger._emit_record): with the default chain in `disk` or `strict` mode, a record's fields go
through the chain's stages and into the spool without the SDK's record objects. It must deliver exactly what the
SDK's path delivers, and stand aside whenever anything else could see or change the record."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_audit import Actor, Outcome, Resource, audit_context, configure, get_audit_logger, semconv, shutdown
from otel_audit import logger as logger_module
from otel_audit.testing import AuditCapture
from otel_audit.testing.receiver import OTLPReceiver

from .test_emit_paths import _emit_arguments, calls

pytest.importorskip("otel_audit.delivery._wire", reason="no direct path without the _wire extension (no C compiler)")
_compiled_emit = None if logger_module._emit is logger_module.python_emit else logger_module._emit

SECRET = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
_span = TracerProvider().get_tracer("direct-path").start_span("request")


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


@pytest.fixture(autouse=True)
def _shut_down() -> Iterator[None]:
    yield
    shutdown()


def _deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same uids and clock readings in every run, so two runs can be compared record for record."""
    counter = itertools.count(1)
    clock = itertools.count(1_700_000_000_000_000_000, 1_000)
    monkeypatch.setattr(logger_module, "new_uid", lambda: f"uid-{next(counter)}")
    # The compiled emit and fast path keep the id maker and clock they were built with; their references read the
    # module's.
    monkeypatch.setattr(logger_module, "_emit", logger_module.python_emit)
    monkeypatch.setattr(logger_module, "fast_attributes", logger_module.python_fast_attributes)
    monkeypatch.setattr(logger_module, "_time_ns", lambda: next(clock))


def _deliver(
    receiver: OTLPReceiver, spool_dir: Path, emits: list[tuple[dict[str, Any], bool]], *, direct: bool,
    monkeypatch: pytest.MonkeyPatch, delivery: str = "disk", compiled_emit: bool = False,
    context: dict[str, Any] | None = None,
) -> list[Any]:
    """Emit every call through a pipeline in `delivery` mode (inside the request span when flagged, inside an audit
    context of `context` when given), with the direct path on or off, and return the LogRecord messages the
    receiver got, in order. The uids and clock are deterministic unless `compiled_emit`."""
    first = len(receiver.records)
    with monkeypatch.context() as patch:
        _deterministic(patch)
        if compiled_emit:
            patch.setattr(logger_module, "_emit", _compiled_emit)
        if not direct:
            patch.setattr(logger_module.binding, "direct_path", lambda sdk_logger: None)
        pipeline = configure(
            service_name="direct", endpoint=receiver.endpoint, delivery=delivery, spool_dir=str(spool_dir)
        )
        logger = get_audit_logger("direct-path")
        logger._logger()
        assert (logger._direct is not None) is direct
        for call, in_span in emits:
            with audit_context(**(context or {})), trace.use_span(_span) if in_span else audit_context():
                logger.emit(call["action"], **_emit_arguments(call))
        assert pipeline.force_flush(10_000)
        shutdown()
    received = receiver.wait_for(first + len(emits))[first:]
    return [record.raw for record in received]


def _without_clock(message: Any) -> Any:
    """The message with the timestamps the AuditEvent path reads from the real clock cleared."""
    message.time_unix_nano = message.observed_time_unix_nano = 0
    return message


def _without_clock_and_uid(message: Any) -> Any:
    """The message without its timestamps and its `log.record.uid` (which must still be there)."""
    (uid,) = [attribute for attribute in message.attributes if attribute.key == semconv.LOG_RECORD_UID]
    assert uid.value.string_value
    uid.value.string_value = ""
    return _without_clock(message)


_context_text = st.one_of(st.none(), st.sampled_from(["acme", "req-7", "10.0.0.9", "curl/8", "s-1"]))
# Calls emit's fast path takes (plain values that need no redaction), so the compiled emit finishes them itself.
plain_calls = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["document.share", "user.login", "invoice.pay"]),
        "outcome": st.sampled_from([*Outcome, *(member.value for member in Outcome)]),
        "actor": st.none() | st.builds(Actor, id=st.sampled_from(["u1", "u2"]), roles=st.just(("admin",))),
        "resource": st.none() | st.builds(Resource, type=st.just("document"), id=_context_text),
        "resource_as_pair": st.booleans(),
        **{
            name: _context_text
            for name in (
                "tenant", "client_address", "user_agent", "session_id", "request_id", "http_route", "url_path",
                "error_type", "reason",
            )
        },
        "http_method": st.none() | st.sampled_from(["GET", "POST"]),
        "http_status_code": st.none() | st.integers(100, 599),
        "metadata": st.dictionaries(
            st.sampled_from(["plan", "items", "source"]),
            st.none() | st.booleans() | st.integers(0, 99) | _context_text,
            max_size=3,
        ),
    }
)
audit_contexts = st.fixed_dictionaries(
    {},
    optional={
        "actor": st.one_of(st.none(), st.builds(Actor, id=st.sampled_from(["u1", "u2"]))),
        "tenant": _context_text, "request_id": _context_text, "session_id": _context_text,
        "impersonator": _context_text, "client_address": _context_text, "user_agent": _context_text,
    },
)


@pytest.mark.skipif(_compiled_emit is None, reason="the compiled emit was not built")
@pytest.mark.parametrize("delivery", ["disk", "memory"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    emits=st.lists(st.tuples(plain_calls | calls, st.booleans()), min_size=1, max_size=25),
    secrets=st.sets(st.integers(0, 24)), context=audit_contexts,
)
def test_the_compiled_emit_delivers_what_its_reference_delivers(
    receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emits: list[Any], secrets: set[int],
    context: dict[str, Any], delivery: str,
) -> None:
    """emit's compiled core (_attributes.emit) against logger.python_emit, both on the direct path, inside any audit
    context and span, with or without a secret: the same messages but for the uid and the clock, which the
    compiled emit takes from its own id maker and the real clock."""
    for index in secrets & set(range(len(emits))):
        call, in_span = emits[index]
        emits[index] = ({**call, "metadata": {**call["metadata"], "note": SECRET}}, in_span)
    spool_dir = tmp_path / f"spool-{len(receiver.records)}"
    # The reference first: the actions it validates take the fast path in the compiled run.
    reference = _deliver(
        receiver, spool_dir, emits, direct=True, monkeypatch=monkeypatch, delivery=delivery, context=context
    )
    compiled = _deliver(
        receiver, spool_dir, emits, direct=True, monkeypatch=monkeypatch, delivery=delivery, compiled_emit=True,
        context=context,
    )
    assert [_without_clock_and_uid(message) for message in compiled] == [
        _without_clock_and_uid(message) for message in reference
    ]


@pytest.mark.parametrize("delivery", ["disk", "memory"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(emits=st.lists(st.tuples(calls, st.booleans()), min_size=1, max_size=25), secrets=st.sets(st.integers(0, 24)))
def test_the_direct_path_delivers_what_the_sdk_path_delivers(
    receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emits: list[Any], secrets: set[int],
    delivery: str,
) -> None:
    """Any emit call, plain or not, inside a span or not, with or without a secret to redact: the receiver gets the
    same LogRecord message either way (the direct path hands what it cannot finish to the SDK's path)."""
    for index in secrets & set(range(len(emits))):
        call, in_span = emits[index]
        emits[index] = ({**call, "metadata": {**call["metadata"], "note": SECRET}}, in_span)
    spool_dir = tmp_path / f"spool-{len(receiver.records)}"
    direct = _deliver(receiver, spool_dir, emits, direct=True, monkeypatch=monkeypatch, delivery=delivery)
    reference = _deliver(receiver, spool_dir, emits, direct=False, monkeypatch=monkeypatch, delivery=delivery)
    assert [_without_clock(message) for message in direct] == [_without_clock(message) for message in reference]


@pytest.mark.parametrize("delivery", ["disk", "memory"])
def test_records_take_the_direct_path_and_carry_the_span(receiver: OTLPReceiver, tmp_path: Path, delivery: str) -> None:
    """With the default chain no SDK record is built (building one fails here), and the record still carries the
    active span's ids."""
    configure(service_name="direct", endpoint=receiver.endpoint, delivery=delivery, spool_dir=str(tmp_path))
    logger = get_audit_logger("direct-path")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logger_module, "_api_record", None)
        with trace.use_span(_span):
            logger.emit("document.share", actor=Actor(id="u1"), resource=("document", "d1"))
    (record,) = receiver.wait_for(1)
    context = _span.get_span_context()
    assert (record.trace_id, record.span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert record.attributes[semconv.AUDIT_RESOURCE_ID] == "d1"


def test_a_secret_is_redacted_on_the_way(receiver: OTLPReceiver, tmp_path: Path) -> None:
    configure(service_name="direct", endpoint=receiver.endpoint, delivery="disk", spool_dir=str(tmp_path))
    get_audit_logger("direct-path").emit("document.share", metadata={"note": SECRET})
    (record,) = receiver.wait_for(1)
    note = record.attributes[semconv.AUDIT_METADATA]["note"]
    assert "[REDACTED]" in note and "eyJ" not in note
    assert record.attributes[semconv.AUDIT_REDACTED] == ["audit.metadata.note"]


@pytest.mark.parametrize(
    "settings_",
    [
        pytest.param({"policy": {"rules": [{"level": "none", "actions": ["health.*"]}]}}, id="a policy with rules"),
        pytest.param({"pseudonymization": {"fields": ["user.id"], "key": "k" * 32}}, id="pseudonyms"),
    ],
)
def test_no_direct_path_where_a_stage_has_work_of_its_own(tmp_path: Path, settings_: dict[str, Any]) -> None:
    configure(service_name="direct", endpoint="http://127.0.0.1:9/v1/logs", spool_dir=str(tmp_path), **settings_)
    logger = get_audit_logger("direct-path")
    logger._logger()
    assert logger._direct is None


@pytest.mark.parametrize("delivery", ["disk", "strict", "memory"])
def test_a_direct_path_in_every_delivery_mode(tmp_path: Path, delivery: str) -> None:
    configure(service_name="direct", endpoint="http://127.0.0.1:9/v1/logs", spool_dir=str(tmp_path), delivery=delivery)
    logger = get_audit_logger("direct-path")
    logger._logger()
    assert logger._direct is not None


def test_no_direct_path_when_the_provider_has_other_processors(tmp_path: Path) -> None:
    """A provider given to configure() may carry processors of its own: the SDK's path applies."""
    shared = LoggerProvider(shutdown_on_exit=False)
    shared.add_log_record_processor(AuditCapture())
    configure(
        logger_provider=shared, service_name="direct", endpoint="http://127.0.0.1:9/v1/logs", spool_dir=str(tmp_path)
    )
    logger = get_audit_logger("direct-path")
    logger._logger()
    assert logger._direct is None
    shutdown()
    shared.shutdown()


def test_a_processor_added_later_sees_every_later_record(receiver: OTLPReceiver, tmp_path: Path) -> None:
    pipeline = configure(service_name="direct", endpoint=receiver.endpoint, delivery="disk", spool_dir=str(tmp_path))
    logger = get_audit_logger("direct-path")
    logger.emit("document.read")
    late = AuditCapture()
    pipeline.provider.add_log_record_processor(late)
    logger.emit("document.share")
    assert [attributes[semconv.AUDIT_ACTION] for attributes in late.attributes] == ["document.share"]
    assert [record.attributes[semconv.AUDIT_ACTION] for record in receiver.wait_for(2)] == [
        "document.read", "document.share",
    ]


def test_the_sdk_still_counts_the_records_it_did_not_build(tmp_path: Path) -> None:
    """With the SDK's internal metrics on, otel.sdk.log.created counts direct-path records too."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
        provider = LoggerProvider(shutdown_on_exit=False, meter_provider=meters)
    configure(
        logger_provider=provider, service_name="direct", endpoint="http://127.0.0.1:9/v1/logs", spool_dir=str(tmp_path)
    )
    logger = get_audit_logger("direct-path")
    logger._logger()
    assert logger._direct is not None
    for _ in range(3):
        logger.emit("document.read")
    counted = [
        point.value
        for resource_metrics in reader.get_metrics_data().resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == "otel.sdk.log.created"
        for point in metric.data.data_points
    ]
    assert counted == [3]
    meters.shutdown()


def test_a_resource_the_sdk_replaces_reaches_the_records(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """The SDK gives its loggers a new resource in a forked child (process-dependent detectors, merged in): records
    emitted after that carry the new resource on the direct path too, as they would on the SDK's path."""
    from opentelemetry.sdk.resources import Resource

    pipeline = configure(service_name="direct", endpoint=receiver.endpoint, delivery="disk", spool_dir=str(tmp_path))
    logger = get_audit_logger("direct-path")
    logger.emit("document.share", actor=Actor(id="u1"))
    pipeline.provider._update_resource(Resource({"process.pid": 4242}))  # what the SDK's fork handler does
    logger.emit("document.share", actor=Actor(id="u1"))
    logger.emit("document.share", actor=Actor(id="u1"))
    records = receiver.wait_for(3)
    pids = [record.resource.get("process.pid") for record in records]
    assert pids[1:] == [4242, 4242] and pids[0] != 4242
    assert {record.resource["service.name"] for record in records} == {"direct"}
    assert logger._direct is not None and logger._direct.resource is logger._otel_logger._resource  # made anew


def test_a_redactor_replaced_at_run_time_applies_to_direct_records(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """The redaction stage reads its redactor per record, as on_emit does: a stricter one set later redacts what
    the first one let through."""
    from otel_audit.processors import iter_chain
    from otel_audit.processors.redact import RedactionConfig, RedactionProcessor, Redactor

    pipeline = configure(service_name="direct", endpoint=receiver.endpoint, delivery="disk", spool_dir=str(tmp_path))
    logger = get_audit_logger("direct-path")
    logger.emit("document.share", metadata={"plan": "pro"})
    (redaction,) = [stage for stage in iter_chain(pipeline.chain) if isinstance(stage, RedactionProcessor)]
    redaction.redactor = Redactor(RedactionConfig(keys=["plan"]))
    logger.emit("document.share", metadata={"plan": "pro"})
    first, second = receiver.wait_for(2)
    assert first.attributes[semconv.AUDIT_METADATA]["plan"] == "pro"
    assert second.attributes[semconv.AUDIT_METADATA]["plan"] == "[REDACTED]"


class _CountingRedactor:
    """Wraps a Redactor (as a subclass or an instance attribute would replace its is_clean) and counts is_clean."""

    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, redactor: Any) -> Any:
        original = redactor.is_clean

        def is_clean(attributes: Any) -> bool:
            self.calls += 1
            return bool(original(attributes))

        redactor.is_clean = is_clean
        return redactor


@pytest.fixture(params=["compiled", "python"])
def redaction_stage_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Redaction's direct stage compiled (_screen.RedactionStage) or its Python reference (installs without a C
    compiler)."""
    from otel_audit.processors import redact

    if request.param == "compiled" and redact._CompiledRedactionStage is None:
        pytest.skip("the _screen extension is not built here (no C compiler at install)")
    if request.param == "python":
        monkeypatch.setattr(redact, "_CompiledRedactionStage", None)
    return str(request.param)


def _counted_redaction(tmp_path: Path) -> tuple[Any, _CountingRedactor, Any]:
    """A default pipeline's RedactionProcessor, a count of its redactor's is_clean calls, and an audit logger."""
    from otel_audit.processors import iter_chain
    from otel_audit.processors.redact import RedactionProcessor

    pipeline = configure(service_name="direct", endpoint="http://127.0.0.1:9/v1/logs", spool_dir=str(tmp_path))
    (redaction,) = [stage for stage in iter_chain(pipeline.chain) if isinstance(stage, RedactionProcessor)]
    counter = _CountingRedactor()
    counter.wrap(redaction.redactor)
    return redaction, counter, get_audit_logger("direct-path")


def test_the_redaction_stage_asks_a_replaced_is_clean(tmp_path: Path, redaction_stage_kind: str) -> None:
    """A redactor whose is_clean was replaced is asked on the direct path too (not just the compiled screen)."""
    _, counter, logger = _counted_redaction(tmp_path)
    for _ in range(3):
        logger.emit("document.share", metadata={"plan": "pro"})
    assert logger._direct is not None
    assert counter.calls == 3


def test_the_redaction_stage_keeps_on_emits_count_of_records_that_needed_redaction(
    tmp_path: Path, redaction_stage_kind: str
) -> None:
    """Records that need redaction take on_emit's path, which counts them; a clean record on the direct path ends the
    count, and after _FAST_PATH_TRIES of them in a row the direct stage pauses with on_emit (no is_clean asked)."""
    from otel_audit.processors.redact import _FAST_PATH_TRIES

    redaction, counter, logger = _counted_redaction(tmp_path)
    for _ in range(3):
        logger.emit("document.share", metadata={"password": "hunter2-hunter2"})
    assert redaction._misses == 3
    logger.emit("document.share", metadata={"plan": "pro"})
    assert redaction._misses == 0
    for _ in range(_FAST_PATH_TRIES):
        logger.emit("document.share", metadata={"password": "hunter2-hunter2"})
    asked = counter.calls
    logger.emit("document.share", metadata={"plan": "pro"})
    assert counter.calls == asked  # paused: neither stage asked
    assert redaction._misses == _FAST_PATH_TRIES + 1


def test_records_the_compiled_append_leaves_to_the_spool_are_delivered(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """With 8 KiB segments most records fill one up or open the next (a scope new to the segment): the compiled
    append hands those to Spool.append, which must write them; every record arrives, in order."""
    pipeline = configure(
        service_name="direct", endpoint=receiver.endpoint, delivery="disk", spool_dir=str(tmp_path),
        max_spool_bytes=64 * 1024,
    )
    logger = get_audit_logger("direct-path")
    uids = [logger.emit("document.share", resource=("document", f"d-{index}")) for index in range(120)]
    assert logger._direct is not None
    assert pipeline.force_flush(10_000)
    received = receiver.wait_for(len(uids))
    assert [record.attributes[semconv.LOG_RECORD_UID] for record in received] == uids
