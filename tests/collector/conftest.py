"""Helpers for tests that run the real otelcol-audit collector (agent and gateway) on 127.0.0.1.

Reusable pieces (for the collector tests and for end-to-end tests with the real store):

* ``collector_binary``     session fixture: builds (or reuses) the binary with scripts/build-collector.sh
* ``free_ports(n)``        n distinct free TCP ports on 127.0.0.1
* ``wait_for(...)``        poll a predicate with a hard timeout
* ``CollectorProcess``     start / stop / kill / restart a collector, wait for its health_check
* ``OtlpLogSink``          a stdlib OTLP/HTTP logs receiver (stands in for the otel-audit store)
* ``CollectorTopology``    agent + gateway wired together with free ports (fixture ``topology``)
* ``RecordingExporter``    wraps the SDK's OTLP/HTTP exporter and keeps the exact protobuf it sent

Every wait has a timeout; every socket is on 127.0.0.1; nothing asserts on durations.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "collector-config"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-collector.sh"

#: A cold build of the distribution takes minutes (see collector-config/README.md); bounded anyway.
BUILD_TIMEOUT_S = float(os.environ.get("OTEL_AUDIT_COLLECTOR_BUILD_TIMEOUT", "3600"))
#: pytest-timeout budget for a collector test: the (possibly cold) build plus the test itself.
TEST_TIMEOUT_S = int(BUILD_TIMEOUT_S) + 600

LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------------------- building


def build_collector(timeout: float = BUILD_TIMEOUT_S) -> Path:
    """Run scripts/build-collector.sh (a cache hit when the manifest is unchanged); return the binary."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/build-collector.sh failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"scripts/build-collector.sh printed no binary path:\n{proc.stderr[-3000:]}")
    binary = Path(lines[-1].strip())
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise RuntimeError(f"scripts/build-collector.sh reported {binary}, which is not an executable")
    return binary


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """Path of the otelcol-audit binary for this manifest (built once, then cached outside the repo)."""
    return build_collector()


# ------------------------------------------------------------------------------------ small tools


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free on 127.0.0.1 right now (all held open while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.2,
    message: str | Callable[[], str] = "condition",
) -> object:
    """Poll ``predicate`` until it returns a truthy value; raise AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {text}")
        time.sleep(interval)


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get_status(url: str, timeout: float = 2.0) -> int | None:
    """Status code of GET url (no proxies), or None when nothing answers."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without proxy settings (everything here is 127.0.0.1), plus extra."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def validate_config(
    binary: Path, config: Path | str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run ``otelcol-audit validate --config <config>``; return the completed process."""
    return subprocess.run(
        [str(binary), "validate", f"--config={config}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(env),
        timeout=timeout,
    )


# ------------------------------------------------------------------------------ collector process


class CollectorProcess:
    """One collector process: ``start()``, ``wait_healthy()``, ``stop()`` (SIGTERM), ``kill()``."""

    def __init__(
        self,
        binary: Path,
        config: Path,
        env: Mapping[str, str],
        workdir: Path,
        health_port: int,
        name: str,
    ) -> None:
        self.binary = binary
        self.config = config
        self.env = dict(env)
        self.workdir = workdir
        self.health_port = health_port
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def health_url(self) -> str:
        return f"http://{LOOPBACK}:{self.health_port}/"

    def start(self, wait: bool = True, timeout: float = 60) -> "CollectorProcess":
        if self.running():
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} of {self.name} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.binary), f"--config={self.config}"],
                cwd=self.workdir,
                env=clean_env(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_healthy(timeout)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        return http_get_status(self.health_url) == 200

    def wait_healthy(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before it was healthy:\n"
                    + self.log_tail()
                )
            return self.healthy()

        wait_for(ready, timeout, message=lambda: f"{self.name} health_check\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int | None:
        """Graceful stop (SIGTERM); SIGKILL if it does not exit within ``timeout``."""
        if not self.running():
            return None if self.proc is None else self.proc.returncode
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def kill(self) -> int | None:
        """Crash it (SIGKILL): no shutdown hooks run."""
        if not self.running():
            return None
        assert self.proc is not None
        self.proc.kill()
        return self.proc.wait(timeout=10)

    def restart(self, timeout: float = 60) -> None:
        self.stop()
        self.start(wait=True, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# ----------------------------------------------------------------------------- OTLP/HTTP log sink


@dataclass
class SinkRequest:
    headers: dict[str, str]
    request: object  # ExportLogsServiceRequest


class OtlpLogSink:
    """Minimal OTLP/HTTP logs receiver (POST /v1/logs, protobuf, optional gzip/deflate).

    Stands in for the otel-audit store in collector tests: it keeps every decoded
    ``ExportLogsServiceRequest``. ``fail_with(503)`` makes it refuse requests (a store outage).
    """

    def __init__(self, path: str = "/v1/logs") -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

        self._pb = logs_service_pb2
        self.path = path
        self.requests: list[SinkRequest] = []
        self.refused = 0
        self._fail_status: int | None = None
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = sink._fail_status
                if self.path != sink.path:
                    self._reply(404, b"")
                    return
                if status is not None:
                    with sink._lock:
                        sink.refused += 1
                    self._reply(status, b"", retry_after=True)
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    req = sink._pb.ExportLogsServiceRequest()
                    req.ParseFromString(body)
                except Exception:  # a malformed request is a 400, as a real receiver answers
                    self._reply(400, b"")
                    return
                with sink._lock:
                    sink.requests.append(
                        SinkRequest({k.lower(): v for k, v in self.headers.items()}, req)
                    )
                self._reply(200, sink._pb.ExportLogsServiceResponse().SerializeToString())

            def _reply(self, status: int, payload: bytes, retry_after: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                if retry_after:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True)

    @property
    def endpoint(self) -> str:
        """Base URL (the collector's otlp_http exporter appends /v1/logs)."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> "OtlpLogSink":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def fail_with(self, status: int | None) -> None:
        self._fail_status = status

    def log_records(self) -> list[tuple[object, object, object]]:
        """All received (resource, scope, log_record) protobuf triples, in arrival order."""
        with self._lock:
            reqs = list(self.requests)
        out = []
        for r in reqs:
            for rl in r.request.resource_logs:
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        out.append((rl.resource, sl.scope, lr))
        return out


@pytest.fixture
def otlp_sink() -> Iterable[OtlpLogSink]:
    sink = OtlpLogSink().start()
    try:
        yield sink
    finally:
        sink.close()


# ------------------------------------------------------------------------------- agent + gateway


@dataclass
class CollectorTopology:
    """An agent and a gateway from collector-config/, wired together on free 127.0.0.1 ports."""

    binary: Path
    workdir: Path
    store_endpoint: str
    ingest_key: str = "test-ingest-key"
    agent_config: Path = CONFIG_DIR / "agent.yaml"
    gateway_config: Path = CONFIG_DIR / "gateway.yaml"
    extra_gateway_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (
            self.agent_grpc,
            self.agent_http,
            self.agent_health,
            self.agent_metrics,
            self.gateway_grpc,
            self.gateway_http,
            self.gateway_health,
            self.gateway_metrics,
        ) = free_ports(8)
        self.archive_path = self.workdir / "gateway" / "archive" / "audit.jsonl"
        self.app_log_path = self.workdir / "agent" / "app-logs.jsonl"
        self.agent_storage = self.workdir / "agent" / "queue"
        self.gateway = CollectorProcess(
            self.binary,
            self.gateway_config,
            {
                "GATEWAY_LISTEN_HOST": LOOPBACK,
                "GATEWAY_OTLP_GRPC_PORT": str(self.gateway_grpc),
                "GATEWAY_OTLP_HTTP_PORT": str(self.gateway_http),
                "GATEWAY_HEALTH_PORT": str(self.gateway_health),
                "GATEWAY_METRICS_PORT": str(self.gateway_metrics),
                "OTEL_AUDIT_STORE_ENDPOINT": self.store_endpoint,
                "OTEL_AUDIT_INGEST_KEY": self.ingest_key,
                "OTEL_AUDIT_ARCHIVE_PATH": str(self.archive_path),
                **self.extra_gateway_env,
            },
            self.workdir / "gateway",
            self.gateway_health,
            "gateway",
        )
        self.agent = CollectorProcess(
            self.binary,
            self.agent_config,
            {
                "AGENT_LISTEN_HOST": LOOPBACK,
                "AGENT_OTLP_GRPC_PORT": str(self.agent_grpc),
                "AGENT_OTLP_HTTP_PORT": str(self.agent_http),
                "AGENT_HEALTH_PORT": str(self.agent_health),
                "AGENT_METRICS_PORT": str(self.agent_metrics),
                "AGENT_STORAGE_DIR": str(self.agent_storage),
                "AGENT_APP_LOG_FILE": str(self.app_log_path),
                "OTEL_AUDIT_GATEWAY_ENDPOINT": f"{LOOPBACK}:{self.gateway_grpc}",
                "OTEL_AUDIT_GATEWAY_INSECURE": "true",
            },
            self.workdir / "agent",
            self.agent_health,
            "agent",
        )

    @property
    def agent_otlp_http_logs_url(self) -> str:
        return f"http://{LOOPBACK}:{self.agent_http}/v1/logs"

    def start(self) -> "CollectorTopology":
        self.gateway.start()
        self.agent.start()
        return self

    def stop(self) -> None:
        self.agent.stop()
        self.gateway.stop()

    def logs(self) -> str:
        return (
            f"--- agent log ---\n{self.agent.log_tail(60)}\n"
            f"--- gateway log ---\n{self.gateway.log_tail(60)}"
        )


@pytest.fixture
def topology(collector_binary: Path, otlp_sink: OtlpLogSink, tmp_path: Path) -> Iterable[CollectorTopology]:
    """Running gateway + agent; the gateway exports to ``otlp_sink`` (the stand-in store)."""
    topo = CollectorTopology(collector_binary, tmp_path, otlp_sink.endpoint).start()
    try:
        yield topo
    finally:
        topo.stop()
        for proc in (topo.agent, topo.gateway):
            if proc.log_path.exists():
                shutil.copy(proc.log_path, tmp_path / f"{proc.name}.final.log")


# ------------------------------------------------------------------- the app side (OTel SDK)


class RecordingExporter:
    """A LogRecordExporter that delegates to the SDK's OTLP/HTTP exporter and records what it sent.

    ``sent`` maps ``log.record.uid`` to the protobuf LogRecord the SDK encoded and the agent
    acknowledged (export returned SUCCESS); ``failed_batches`` counts batches the exporter gave up on.
    """

    def __init__(self, endpoint: str, timeout: float = 10) -> None:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        self._encode = encode_logs
        self._inner = OTLPLogExporter(endpoint=endpoint, timeout=timeout)
        self._lock = threading.Lock()
        self.sent: dict[str, object] = {}
        self.failed_batches = 0

    def export(self, batch: Sequence[object]):
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        encoded = self._encode(batch)
        result = self._inner.export(batch)
        with self._lock:
            if result == LogRecordExportResult.SUCCESS:
                for rl in encoded.resource_logs:
                    for sl in rl.scope_logs:
                        for lr in sl.log_records:
                            self.sent[attr_value(lr, "log.record.uid") or id(lr)] = lr
            else:
                self.failed_batches += 1
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self._inner.shutdown()


def attr_value(log_record: object, key: str) -> object:
    """The python value of one attribute of a protobuf LogRecord (None when absent)."""
    for kv in log_record.attributes:  # type: ignore[attr-defined]
        if kv.key == key:
            which = kv.value.WhichOneof("value")
            return getattr(kv.value, which) if which else None
    return None


def make_logger_provider(exporter: RecordingExporter, service_name: str = "collector-test-app"):
    """An SDK LoggerProvider exporting synchronously through ``exporter`` (one export per record)."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider
