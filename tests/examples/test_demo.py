"""The README's main command (`make demo` runs examples/demo.py) works: events found, alert fired, webhook verified."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parents[2] / "examples" / "demo.py"


def test_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "search found 10 events" in out
    assert "search outcome=denied: [('document.share', 'bob')]" in out
    assert "alert fired: Excessive Failed Logins (high) for {'user.id': 'mallory'}: 5 events within 300 s" in out
    assert "webhook delivery received, signature verified" in out
    assert "delivery log: delivered after 1 attempt(s), HTTP 204" in out
    assert not list(tmp_path.iterdir()), "the demo leaves nothing behind in the working directory"
