"""An unexpected error while draining at shutdown ends the drain (records stay spooled) instead of spinning."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import otel_audit
from otel_audit.testing import OTLPReceiver, Reply


def test_spool_removed_under_a_live_pipeline_does_not_spin_at_shutdown(tmp_path: Path, caplog) -> None:
    with OTLPReceiver() as receiver:
        receiver.responder = lambda request: Reply(status=503)  # nothing is acknowledged: records stay pending
        spool = tmp_path / "spool"
        # Small segments: the exporter's cursor stays in the first one (nothing is acknowledged) while the
        # process appends to a later one, so reading the next batch lists the lane's directory, which is gone.
        otel_audit.configure(
            endpoint=receiver.endpoint, spool_dir=str(spool), flush_interval=0.05, max_spool_bytes=32_768
        )
        logger = otel_audit.get_audit_logger("shutdown-test")
        for index in range(20):
            logger.emit("job.run", metadata={"index": index, "note": "n" * 300})
        shutil.rmtree(spool)
        with caplog.at_level(logging.ERROR, logger="otel_audit"):
            otel_audit.shutdown()
    errors = [record for record in caplog.records if "delivery error" in record.getMessage()]
    assert 1 <= len(errors) <= 2, f"{len(errors)} error reports while shutting down"
