"""Real processes: kill -9 mid-stream, a receiver outage, forking and multi-process servers, a 200,000-event burst."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from otel_audit.delivery.spool import SpoolStage
from otel_audit.testing.receiver import OTLPReceiver

from .conftest import HERE, free_port, start_emitter, wait_until

pytestmark = pytest.mark.slow


def read_uids(process: subprocess.Popen[str], want: int, timeout: float) -> dict[str, int]:
    """`uid -> seq` for the first `want` emits the process reported as returned."""
    assert process.stdout is not None
    uids: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(uids) < want and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("uid "):
            _, uid, seq = line.split()
            uids[uid] = int(seq)
    return uids


def received_uids(receiver: OTLPReceiver) -> list[tuple[str, int]]:
    return [(record.attributes["log.record.uid"], record.attributes["audit.metadata"]["seq"]) for record in receiver.records]


def test_kill_9_mid_stream_then_restart_delivers_every_returned_emit(receiver, spool_dir) -> None:
    emitter = start_emitter(receiver.endpoint, str(spool_dir), "100000", "--delay", "0.001")
    returned = read_uids(emitter, 400, timeout=60)
    emitter.kill()  # SIGKILL: no atexit, no flush
    emitter.wait(10)
    returned.update(read_uids(emitter, 10**9, timeout=5))  # emits that returned just before the kill
    assert len(returned) >= 400
    if SpoolStage is not None:  # the compiled writer maps its segment
        (lane,) = [path for path in spool_dir.iterdir() if path.name.startswith("w-")]
        newest = sorted(lane.glob("seg-*.log"))[-1].read_bytes()
        assert newest.endswith(bytes(4096))  # the mapped writer's allocated room, never cut back: it was killed

    restarted = start_emitter(receiver.endpoint, str(spool_dir), "0", "--drain", "60")
    out, err = restarted.communicate(timeout=90)
    assert "drained True" in out, err
    arrived = received_uids(receiver)
    assert set(returned) <= {uid for uid, _ in arrived}
    assert all(returned.get(uid, seq) == seq for uid, seq in arrived)  # a duplicate is the same event (same uid)
    assert not [path for path in spool_dir.iterdir() if path.name.startswith("w-")]
    # The zero room is not corruption; at most a frame the kill tore mid-copy was moved aside.
    moved = list((spool_dir / "corrupt").glob("*")) if (spool_dir / "corrupt").exists() else []
    assert len(moved) <= 1 and all(path.stat().st_size < 1024 for path in moved)



def test_after_kill_9_acknowledged_batches_are_not_sent_again(receiver, spool_dir) -> None:
    """The ack log is what a restart trusts: only the batch in flight at the kill may arrive twice."""
    emitter = start_emitter(receiver.endpoint, str(spool_dir), "100000", "--delay", "0.001", "--batch", "10")
    assert wait_until(lambda: len(receiver.records) >= 300, timeout=60)
    emitter.kill()
    emitter.wait(10)
    restarted = start_emitter(receiver.endpoint, str(spool_dir), "0", "--drain", "60")
    out, err = restarted.communicate(timeout=90)
    assert "drained True" in out, err
    uids = [uid for uid, _ in received_uids(receiver)]
    assert len(uids) >= 300
    assert len(uids) - len(set(uids)) <= 10

def test_receiver_down_30_seconds_then_up_loses_nothing_and_keeps_order(spool_dir) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1/logs"
    emitter = start_emitter(endpoint, str(spool_dir), "300", "--delay", "0.03", "--drain", "120")
    started = time.monotonic()
    returned = read_uids(emitter, 300, timeout=60)
    assert len(returned) == 300
    time.sleep(max(0.0, 30 - (time.monotonic() - started)))
    assert emitter.poll() is None  # still retrying
    with OTLPReceiver(port=port) as receiver:
        out, err = emitter.communicate(timeout=120)
        assert "drained True" in out, err
        arrived = received_uids(receiver)
    assert {uid for uid, _ in arrived} == set(returned)
    first_arrival: list[int] = []
    for _, seq in arrived:
        if seq not in first_arrival:
            first_arrival.append(seq)
    assert first_arrival == list(range(1, 301))


def test_200000_event_burst_loses_nothing(receiver, spool_dir) -> None:
    emitter = start_emitter(receiver.endpoint, str(spool_dir), "200000", "--burst", "--drain", "180")
    out, err = emitter.communicate(timeout=240)
    assert "drained True" in out, err
    uids = [
        kv.value.string_value
        for request in receiver.requests
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
        for kv in record.attributes
        if kv.key == "log.record.uid"
    ]
    assert len(set(uids)) == 200_000


def serve_and_hit(command: list[str], port: int, receiver: OTLPReceiver, env: dict[str, str]) -> tuple[set[str], Counter[int]]:
    """Start a server, send requests until both workers answered, return the uids it reported and requests per pid."""
    log_path = Path(env["OTEL_AUDIT_SPOOL_DIR"]).parent / "server.log"
    # stderr goes to a file: a pipe nobody reads would block a chatty worker once its buffer fills
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log, text=True)
    uids: set[str] = set()
    pids: Counter[int] = Counter()
    try:
        url = f"http://127.0.0.1:{port}/"
        assert wait_until(lambda: _reachable(url + "health"), 60, interval=0.2), "server did not start"
        for _ in range(400):
            with httpx.Client(timeout=10) as client:  # a new connection each time, so both workers take some
                pid, uid = client.get(url).text.split()
            uids.add(uid)
            pids[int(pid)] += 1
            if len(pids) >= 2 and sum(pids.values()) >= 40:
                break
        if not wait_until(lambda: len(receiver.records) >= len(uids) + 1, 30):
            for pid in pids:  # the app registers faulthandler on SIGUSR1: every thread's stack goes to the log
                os.kill(pid, signal.SIGUSR1)
            time.sleep(1)
            arrived = Counter(record.attributes["audit.metadata"]["pid"] for record in receiver.records)
            raise AssertionError(f"sent per pid {dict(pids)}, arrived per pid {dict(arrived)}\n{log_path.read_text()[-20000:]}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    return uids, pids


def _reachable(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def _server_env(receiver: OTLPReceiver, spool_dir: Path) -> dict[str, str]:
    return {"OTEL_AUDIT_ENDPOINT": receiver.endpoint, "OTEL_AUDIT_SPOOL_DIR": str(spool_dir), "PYTHONPATH": str(HERE / "apps")}


def test_gunicorn_preload_two_workers_deliver_each_event_once(receiver, spool_dir) -> None:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "wsgi_app:app"]
    uids, pids = serve_and_hit(command, port, receiver, _server_env(receiver, spool_dir))
    assert len(pids) == 2
    time.sleep(0.5)  # anything resent by a worker would arrive now
    reads = [r for r in receiver.records if r.attributes["audit.action"] == "document.read"]
    starts = [r for r in receiver.records if r.attributes["audit.action"] == "app.start"]
    assert sorted(r.attributes["log.record.uid"] for r in reads) == sorted(uids)  # each once
    assert {r.attributes["audit.metadata"]["pid"] for r in reads} == set(pids)
    assert len(starts) == 1  # emitted by the master before fork; no worker sent it again


def test_uvicorn_two_workers_deliver_each_event_once(receiver, spool_dir) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--workers", "2", "--port", str(port), "--no-access-log", "asgi_app:app"]
    uids, pids = serve_and_hit(command, port, receiver, _server_env(receiver, spool_dir))
    assert len(pids) == 2
    assert wait_until(lambda: sum(r.attributes["audit.action"] == "app.start" for r in receiver.records) >= 2, 30)
    time.sleep(0.5)
    reads = [r for r in receiver.records if r.attributes["audit.action"] == "document.read"]
    starts = [r for r in receiver.records if r.attributes["audit.action"] == "app.start"]
    assert sorted(r.attributes["log.record.uid"] for r in reads) == sorted(uids)
    assert {r.attributes["audit.metadata"]["pid"] for r in starts} == set(pids)
