"""How the exporter cuts a steady stream into requests: full batches, not a full one followed by its remainder."""

from __future__ import annotations

import time

import pytest

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)

from otel_audit.testing.receiver import Reply, decode_request

FLUSH_INTERVAL = 1.0


def test_records_arriving_while_a_full_batch_is_out_wait_for_the_next_batch(receiver, make_pipeline) -> None:
    arrivals: list[tuple[float, int]] = []

    def reply(request: ExportLogsServiceRequest) -> Reply:
        arrivals.append((time.monotonic(), len(decode_request(request))))
        return Reply()

    receiver.responder = reply
    pipeline = make_pipeline(endpoint=receiver.endpoint, max_batch_size=4, flush_interval=FLUSH_INTERVAL)
    for _ in range(4):
        pipeline.emit()
    receiver.wait_for(4)  # however the exporter split these, it now waits: nothing is pending
    del arrivals[:]
    for _ in range(6):  # the 4th wakes the exporter; the last 2 arrive while those 4 are being sent
        pipeline.emit()
    receiver.wait_for(10)
    assert [count for _, count in arrivals] == [4, 2]
    # The remainder was held for the flush interval (no 4 more came), not sent as a request of its own at once.
    assert arrivals[1][0] - arrivals[0][0] >= FLUSH_INTERVAL / 2


def _counters() -> list[type]:
    from otel_audit.delivery import processor

    return [processor.PythonWakeCounter, processor.WakeCounter]


@pytest.mark.parametrize("counter_type", _counters(), ids=lambda counter: counter.__module__)
def test_the_wake_counter_wakes_every_n_records_and_follows_a_new_wake(counter_type: type) -> None:
    """The exporter is woken by every `every`-th queued record; a forked child points the same counter at its own
    exporter's event."""
    woken: list[str] = []
    counter = counter_type(3, lambda: woken.append("first"))
    for _ in range(7):
        counter()
    assert woken == ["first", "first"] and counter.count == 1
    counter.wake = lambda: woken.append("second")
    counter()
    counter()
    assert woken == ["first", "first", "second"] and counter.count == 0


@pytest.mark.parametrize("delivery", ["disk", "memory"])
def test_a_full_batch_on_the_direct_path_wakes_the_exporter(receiver, tmp_path, delivery: str) -> None:
    """max_batch_size records emitted through the audit logger are sent at once, not at the next flush interval."""
    import otel_audit

    pytest.importorskip("otel_audit.delivery._wire", reason="no direct path without the _wire extension")
    otel_audit.configure(
        service_name="wake", endpoint=receiver.endpoint, delivery=delivery, spool_dir=str(tmp_path),
        max_batch_size=5, flush_interval=60,
    )
    try:
        logger = otel_audit.get_audit_logger("wake")
        logger._logger()
        assert logger._direct is not None
        for number in range(5):
            logger.emit("document.read", resource=("document", f"d{number}"))
        assert len(receiver.wait_for(5, timeout=20)) == 5  # the interval is 60 s
    finally:
        otel_audit.shutdown()
