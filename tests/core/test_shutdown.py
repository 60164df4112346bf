"""Events emitted right before interpreter exit reach the receiver: configure() flushes at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from otel_audit.testing import OTLPReceiver

SCRIPT = textwrap.dedent(
    """
    import sys
    import otel_audit

    otel_audit.configure(service_name="exiting", endpoint=sys.argv[1], flush_interval=60, spool_dir=sys.argv[2])
    logger = otel_audit.get_audit_logger("exit-test")
    for index in range(25):
        logger.emit("job.finish", metadata={"index": index})
    """
)


def test_events_emitted_just_before_exit_arrive(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, otlp_receiver.endpoint, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    records = otlp_receiver.wait_for(25, timeout=10)
    assert sorted(r.attributes["audit.metadata"]["index"] for r in records) == list(range(25))
    assert {r.resource["service.name"] for r in records} == {"exiting"}


def test_unconfigured_process_configures_from_environment(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    script = "import otel_audit; otel_audit.get_audit_logger().emit('user.login', actor='env-user')"
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_SERVICE_NAME": "zero-config",
        "OTEL_AUDIT_SPOOL_DIR": str(tmp_path / "spool"),
    }
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert completed.returncode == 0, completed.stderr
    assert "configure() was not called" in completed.stderr
    [record] = otlp_receiver.wait_for(1, timeout=10)
    assert record.attributes["user.id"] == "env-user"
    assert record.resource["service.name"] == "zero-config"
