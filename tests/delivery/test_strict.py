"""`strict` mode: durable on disk before emit returns, and emit raises when the event cannot be persisted."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap

from .conftest import start_emitter

WRITE_LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    import otel_audit

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceeding the limit makes write() fail with EFBIG instead
    otel_audit.configure(service_name="strict", endpoint=sys.argv[1], spool_dir=sys.argv[2], delivery="strict",
                         redaction=False, timeout=0.2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
    audit = otel_audit.get_audit_logger("strict")
    accepted = 0
    try:
        for seq in range(1, 10001):
            audit.emit("document.read", metadata={"seq": seq})
            accepted = seq
    except otel_audit.AuditDeliveryError as exc:
        print("refused", accepted, exc, flush=True)
    """
)


def test_strict_mode_writes_synchronously(make_pipeline) -> None:
    pipeline = make_pipeline(endpoint="http://127.0.0.1:9/v1/logs", delivery="strict")
    pipeline.emit()
    flags = fcntl.fcntl(pipeline.processor._source._segment_fd, fcntl.F_GETFL)
    assert flags & os.O_DSYNC


def test_strict_emit_raises_when_the_event_cannot_be_persisted(receiver, spool_dir) -> None:
    # Nothing listens on port 9, so every accepted event is still in the spool when the disk "fills up".
    run = subprocess.run(
        [sys.executable, "-c", WRITE_LIMITED, "http://127.0.0.1:9/v1/logs", str(spool_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    words = run.stdout.split()
    assert words[:1] == ["refused"], run.stderr
    accepted = int(words[1])
    assert 0 < accepted < 10000
    assert "could not write the audit event" in run.stdout

    drain = start_emitter(receiver.endpoint, str(spool_dir), "0", "--drain", "30")
    out, err = drain.communicate(timeout=60)
    assert "drained True" in out, err
    assert [record.attributes["audit.metadata"]["seq"] for record in receiver.records] == list(range(1, accepted + 1))
