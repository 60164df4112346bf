"""The idna codec socket.getaddrinfo needs is loaded before any exporter thread runs, so a fork cannot catch it
half-imported."""

from __future__ import annotations

import subprocess
import sys


def test_sender_loads_the_idna_codec_at_import() -> None:
    script = (
        "import sys; import otel_audit.delivery.sender; "
        "assert 'encodings.idna' in sys.modules, 'idna codec not loaded'; "
        "'127.0.0.1'.encode('idna')"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
