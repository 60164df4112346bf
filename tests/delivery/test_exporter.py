"""The exporter against a real OTLP/HTTP receiver: acknowledgement, retries, Retry-After, dead letters, gzip,
memory mode, full spool, fork, and the delivery counters."""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_audit import stats
from otel_audit.delivery import AuditDeliveryError
from otel_audit.delivery.deadletter import read_dead_letters
from otel_audit.delivery.sender import parse_retry_after
from otel_audit.testing.receiver import OTLPReceiver, Reply, decode_request

from .conftest import free_port, wait_until


def seqs(receiver: OTLPReceiver) -> list[int]:
    return [record.attributes["seq"] for record in receiver.records]


def has_bad_record(request: ExportLogsServiceRequest) -> bool:
    return any(record.attributes.get("bad") for record in decode_request(request))


def test_records_are_delivered_in_order_and_released_from_the_spool(receiver, make_pipeline, spool_dir) -> None:
    pipeline = make_pipeline(endpoint=receiver.endpoint)
    for _ in range(300):
        pipeline.emit()
    assert pipeline.processor.force_flush(20_000)
    assert seqs(receiver) == list(range(1, 301))
    record = receiver.records[0]
    assert record.event_name == "audit.test.event"
    assert record.resource["service.name"] == "delivery-test"
    assert (record.scope_name, record.scope_version) == ("delivery-test", "1.0")
    assert pipeline.processor._source.pending_bytes() == 0
    pipeline.shutdown()
    assert [path.name for path in spool_dir.iterdir() if path.name.startswith("w-")] == []


def test_server_errors_are_retried_until_accepted(receiver, make_pipeline, spool_dir) -> None:
    answers = iter([500, 503, 502])
    receiver.responder = lambda request: Reply(status=next(answers, 200))
    before = stats.delivery_stats()["retried"]
    pipeline = make_pipeline(endpoint=receiver.endpoint)
    for _ in range(5):
        pipeline.emit()
    assert pipeline.processor.force_flush(20_000)
    assert receiver.replies[:4] == [500, 503, 502, 200]
    assert seqs(receiver) == [1, 2, 3, 4, 5]
    assert stats.delivery_stats()["retried"] - before >= 3
    assert read_dead_letters(spool_dir / "dead-letter.jsonl") == []


def test_429_waits_for_retry_after(receiver, make_pipeline) -> None:
    arrivals: list[float] = []

    def answer(request: ExportLogsServiceRequest) -> Reply:
        arrivals.append(time.monotonic())
        return Reply(status=429, retry_after=1) if len(arrivals) == 1 else Reply()

    receiver.responder = answer
    pipeline = make_pipeline(endpoint=receiver.endpoint, retry_initial=0.01, retry_max=0.02)
    pipeline.emit()
    assert pipeline.processor.force_flush(20_000)
    assert receiver.replies == [429, 200]
    # Without Retry-After the backoff here is at most 0.02 s; the receiver asked for 1 s.
    assert arrivals[1] - arrivals[0] >= 0.9
    assert seqs(receiver) == [1]


def test_400_dead_letters_only_the_rejected_record(receiver, make_pipeline, spool_dir) -> None:
    receiver.responder = lambda request: Reply(status=400, message="attribute bad is not allowed") if has_bad_record(request) else Reply()
    pipeline = make_pipeline(endpoint=receiver.endpoint, flush_interval=0.5)
    for index in range(10):
        pipeline.emit(bad=index == 6)
    assert pipeline.processor.force_flush(20_000)
    assert sorted(seqs(receiver)) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    letters = read_dead_letters(spool_dir / "dead-letter.jsonl")
    assert [(letter["uid"], letter["status"], letter["reason"]) for letter in letters] == [
        ("uid-7", 400, "attribute bad is not allowed")
    ]
    assert letters[0]["event_name"] == "audit.test.event"


def test_partial_success_dead_letters_with_the_receivers_reason(receiver, make_pipeline, spool_dir, caplog, monkeypatch) -> None:
    monkeypatch.setattr(stats.STATS, "_last_warning", 0.0)  # the loss WARNING is rate-limited process-wide
    answers = iter([Reply(rejected=1, message="log.record.uid uid-2 is a duplicate")])
    receiver.responder = lambda request: next(answers, Reply())
    before = stats.delivery_stats()
    pipeline = make_pipeline(endpoint=receiver.endpoint, flush_interval=0.5)
    with caplog.at_level(logging.WARNING, logger="otel_audit.delivery"):
        pipeline.emit()
        pipeline.emit()
        assert pipeline.processor.force_flush(20_000)
    letters = read_dead_letters(spool_dir / "dead-letter.jsonl")
    assert {letter["uid"] for letter in letters} == {"uid-1", "uid-2"}  # the receiver did not say which one
    assert all(letter["rejected_in_request"] == 1 and "is a duplicate" in letter["reason"] for letter in letters)
    after = stats.delivery_stats()
    assert after["dead_lettered"] - before["dead_lettered"] == 1
    assert pipeline.processor.exported == 1
    assert any("1 audit record(s) dead-lettered: partial_success" in message for message in caplog.messages)


def test_gzip_compression(receiver, make_pipeline) -> None:
    pipeline = make_pipeline(endpoint=receiver.endpoint, compression="gzip")
    pipeline.emit(text="x" * 1000)
    assert pipeline.processor.force_flush(20_000)
    assert receiver.headers[0]["content-encoding"] == "gzip"
    assert receiver.records[0].attributes["text"] == "x" * 1000


def test_memory_mode_never_blocks_and_counts_every_drop(make_pipeline, caplog, monkeypatch) -> None:
    monkeypatch.setattr(stats.STATS, "_last_warning", 0.0)
    port = free_port()
    before = stats.delivery_stats()["dropped"]
    pipeline = make_pipeline(endpoint=f"http://127.0.0.1:{port}/v1/logs", delivery="memory", max_queue_size=5)
    with caplog.at_level(logging.WARNING, logger="otel_audit.delivery"):
        for _ in range(20):
            pipeline.emit()
    dropped = pipeline.processor._source.dropped
    assert stats.delivery_stats()["dropped"] - before >= dropped
    # The exporter may have taken a batch out of the queue (it stays in flight, unacknowledged) before it filled.
    assert 15 - pipeline.settings.max_batch_size <= dropped <= 15
    assert dropped >= 10
    warnings = [message for message in caplog.messages if "dropped: memory delivery queue full" in message]
    assert len(warnings) == 1 and "totals: dropped=" in warnings[0]  # one WARNING, then rate-limited
    with OTLPReceiver(port=port) as receiver:
        assert pipeline.processor.force_flush(20_000)
        assert len(receiver.records) == 20 - dropped


def test_full_spool_raise_policy_rejects_at_once(make_pipeline, spool_dir) -> None:
    port = free_port()
    pipeline = make_pipeline(endpoint=f"http://127.0.0.1:{port}/v1/logs", max_spool_bytes=8192, full_policy="raise")
    accepted = 0
    with pytest.raises(AuditDeliveryError, match="spool full"):
        for _ in range(1000):
            pipeline.emit(text="y" * 100)
            accepted += 1
    assert 0 < accepted < 1000
    with OTLPReceiver(port=port) as receiver:
        assert pipeline.processor.force_flush(20_000)
        assert seqs(receiver) == list(range(1, accepted + 1))
        pipeline.emit()  # room again
        assert pipeline.processor.force_flush(20_000)


def test_full_spool_block_policy_waits_then_raises(make_pipeline) -> None:
    port = free_port()
    pipeline = make_pipeline(
        endpoint=f"http://127.0.0.1:{port}/v1/logs", max_spool_bytes=8192, full_policy="block", full_timeout=0.3
    )
    accepted = 0
    with pytest.raises(AuditDeliveryError, match="policy 'block'"):
        for _ in range(1000):
            pipeline.emit(text="y" * 100)
            accepted += 1
    # While blocked, the receiver coming up frees room and the blocked emit completes instead of failing.
    pipeline.processor._source.full_timeout = 30.0
    receiver = OTLPReceiver(port=port)
    starter = threading.Timer(0.5, receiver.start)
    starter.start()
    try:
        pipeline.emit(text="late")
        assert pipeline.processor.force_flush(20_000)
        received = seqs(receiver)
        assert received[: accepted] == list(range(1, accepted + 1))
        assert received[-1] == accepted + 2  # the failed emit got a sequence number but was never recorded
    finally:
        starter.join()
        receiver.stop()


def test_forked_child_gets_its_own_lane_and_never_resends_parent_records(receiver, make_pipeline, spool_dir) -> None:
    pipeline = make_pipeline(endpoint=receiver.endpoint)
    for _ in range(5):
        pipeline.emit(who="parent")
    assert pipeline.processor.force_flush(20_000)
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            for _ in range(5):
                pipeline.emit(who="child")
            ok = pipeline.processor.force_flush(20_000)
            pipeline.shutdown()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for _ in range(5):
        pipeline.emit(who="parent")
    assert pipeline.processor.force_flush(20_000)
    assert wait_until(lambda: len(receiver.records) >= 15, 10)
    records = receiver.records
    assert len(records) == 15
    assert sorted(record.attributes["who"] for record in records) == ["child"] * 5 + ["parent"] * 10
    lanes = {path.name for path in spool_dir.iterdir() if path.name.startswith("w-")}
    assert f"w-{os.getpid()}" in {name.rsplit("-", 1)[0] for name in lanes}
    assert all(not name.startswith(f"w-{pid}-") for name in lanes)  # drained, so removed at the child's shutdown


def test_counters_are_published_as_otel_metrics(receiver, make_pipeline) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    stats.register_metrics(provider)
    pipeline = make_pipeline(endpoint=receiver.endpoint)
    pipeline.emit()
    assert pipeline.processor.force_flush(20_000)
    points = {
        metric.name: metric.data.data_points[0].value
        for resource_metrics in reader.get_metrics_data().resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    snapshot = stats.delivery_stats()
    assert points["otel_audit.delivery.exported"] == snapshot["exported"] >= 1
    assert points["otel_audit.delivery.spool_bytes"] == 0
    assert "otel_audit.delivery.oldest_unexported_age" in points
    provider.shutdown()


def test_backlog_is_visible_in_the_gauges_while_the_receiver_is_down(make_pipeline) -> None:
    port = free_port()
    pipeline = make_pipeline(endpoint=f"http://127.0.0.1:{port}/v1/logs")
    pipeline.emit()
    assert wait_until(lambda: stats.delivery_stats()["oldest_unexported_age"] > 0.2, 10)
    assert stats.delivery_stats()["spool_bytes"] > 0
    with OTLPReceiver(port=port) as receiver:
        assert pipeline.processor.force_flush(20_000)
        assert seqs(receiver) == [1]
    assert pipeline.processor._source.pending_bytes() == 0  # this pipeline's share of the process-wide gauges
    assert pipeline.processor._counters()["oldest_unexported_age"] == 0


def test_deflate_compression(receiver, make_pipeline) -> None:
    pipeline = make_pipeline(endpoint=receiver.endpoint, compression="deflate")
    pipeline.emit()
    assert pipeline.processor.force_flush(20_000)
    assert receiver.headers[0]["content-encoding"] == "deflate"
    assert seqs(receiver) == [1]


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 <= parse_retry_after(in_a_minute) <= 60
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_grpc_protocol_uses_the_sdk_batch_processor(tmp_path) -> None:
    import otel_audit

    with OTLPReceiver(grpc=True) as receiver:
        pipeline = otel_audit.configure(
            service_name="grpc", protocol="grpc", endpoint=receiver.grpc_endpoint, spool_dir=str(tmp_path), flush_interval=0.05
        )
        try:
            uid = otel_audit.get_audit_logger("grpc").emit("document.read", actor="u-1")
            assert pipeline.force_flush(20_000)
            assert [record.attributes["log.record.uid"] for record in receiver.wait_for(1)] == [uid]
        finally:
            otel_audit.shutdown()


def test_exporter_survives_a_failing_dead_letter_file_and_keeps_the_record(receiver, make_pipeline, spool_dir) -> None:
    receiver.responder = lambda request: Reply(status=400, message="refused")
    blocker = spool_dir / "dead-letter.jsonl"
    blocker.mkdir(parents=True)  # a directory where the file should be: every write fails
    pipeline = make_pipeline(endpoint=receiver.endpoint, retry_max=0.1)
    pipeline.emit()
    assert wait_until(lambda: len(receiver.replies) >= 2, 10)  # tried, failed to dead-letter, tried again
    assert pipeline.processor._worker.is_alive()
    assert pipeline.processor._source.has_pending()
    blocker.rmdir()
    assert pipeline.processor.force_flush(20_000)
    assert [letter["uid"] for letter in read_dead_letters(blocker)] == ["uid-1"]


def test_trace_context_and_resource_survive_the_spool(receiver, tmp_path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    import otel_audit

    tracer = TracerProvider().get_tracer("test")
    otel_audit.configure(service_name="traced", endpoint=receiver.endpoint, spool_dir=str(tmp_path), flush_interval=0.05)
    try:
        with tracer.start_as_current_span("request") as span:
            uid = otel_audit.get_audit_logger("traced").emit("document.read", actor="u-1", resource=("document", "d-1"))
        assert otel_audit.current_pipeline().force_flush(20_000)
    finally:
        otel_audit.shutdown()
    (record,) = receiver.records
    context = span.get_span_context()
    assert (record.trace_id, record.span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert record.raw.flags == int(context.trace_flags)  # sampled (and W3C "random" where the SDK sets it)
    assert record.attributes["log.record.uid"] == uid
    assert record.event_name == "audit.document.read"
    assert record.resource["service.name"] == "traced"
    assert record.severity_text == "INFO" and record.timestamp > 0


class OneRequestPerConnection:
    """An HTTP server on 127.0.0.1 that answers each connection's first request with 200 and then closes it
    without saying so (as a receiver whose idle keep-alive timeout has passed does); it counts connections."""

    def __init__(self, connections: int) -> None:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1/logs"
        self.bodies: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    def _serve(self, connections: int) -> None:
        for _ in range(connections):
            connection, _ = self.listener.accept()
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += connection.recv(65536)
                self.bodies.append(body)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def test_a_kept_alive_connection_the_receiver_closed_is_dialled_again() -> None:
    """The sender keeps its connection between requests; when the receiver has closed it meanwhile, the next
    request goes out on a new connection instead of failing (which would cost a retry pause)."""
    from otel_audit.config import AuditSettings
    from otel_audit.delivery.sender import HttpSender

    server = OneRequestPerConnection(connections=3)
    sender = HttpSender(AuditSettings.resolve(endpoint=server.endpoint, spool_dir="unused"))
    try:
        results = [sender.send(b"request %d" % number) for number in range(3)]
    finally:
        sender.close()
        server.close()
    assert [result.status for result in results] == [200, 200, 200]
    assert server.bodies == [b"request 0", b"request 1", b"request 2"]
