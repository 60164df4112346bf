"""How the exporter cuts a steady stream into requests: full batches, not a full one followed by its remainder."""

from __future__ import annotations

import time

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
