"""FastAPI throughput with the audit middleware vs plain, vs a stock pure-ASGI middleware + one SDK log, vs tracing.

One variant per process: `python -m benchmarks.bench_fastapi --variant otel-audit --size quick` starts the OTLP
sink (benchmarks.harness sink, its own process), the variant's app under uvicorn (its own process, one worker,
127.0.0.1), and drives `POST /documents/{document_id}` with wrk (keep-alive, fixed connections, fixed duration)
after a warm-up. Every POST is audited, so each request of the audited variants is one event; the sink's record
count afterwards shows they all arrived. Besides requests/s it records the server process's CPU time per request
(all threads, so the audit exporter is included; the event-loop thread's share is also recorded on its own): on a
shared machine the throughput of one run swings with the neighbours' load, while CPU per request hardly does, and
1e6 / CPU-us is the throughput the server would reach on a core of its own. `python -m benchmarks.bench_fastapi
--compare` runs every variant interleaved (harness.run_benchmark) and prints ratios of the medians and the
medians of per-repetition ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from benchmarks.harness import (
    REPO_ROOT,
    Benchmark,
    Figure,
    Ratio,
    Target,
    print_result,
    python_command,
    run_benchmark,
    sink_process,
)

VARIANTS = ("plain", "otel-audit", "otel-audit, no event", "stock ASGI + SDK log", "FastAPIInstrumentor")
FACTORIES = {
    "plain": "plain_app",
    "otel-audit": "audited_app",
    "otel-audit, no event": "audited_no_event_app",
    "stock ASGI + SDK log": "stock_log_app",
    "FastAPIInstrumentor": "traced_app",
}
SECONDS = {"smoke": 2, "quick": 5, "full": 15}
WARMUP_SECONDS = 1
CONNECTIONS = 16
START_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0
_WRK_SCRIPT = 'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'


# -- the apps (imported by uvicorn in the server process: `--factory benchmarks.bench_fastapi:<name>`) ----------


def plain_app() -> Any:
    """The app every variant shares: one state-changing endpoint with a path parameter."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/documents/{document_id}")
    async def update_document(document_id: str) -> dict[str, str]:
        return {"id": document_id, "status": "updated"}

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def audited_app() -> Any:
    """plain_app + otel-audit's middleware; the audit pipeline from OTEL_AUDIT_* (set by the variant process)."""
    import otel_audit
    from otel_audit.instrumentation.fastapi import instrument_app

    otel_audit.configure()
    return instrument_app(plain_app())


def audited_no_event_app() -> Any:
    """The middleware's own cost: audit context and request bookkeeping, but POST is not an audited method."""
    import otel_audit
    from otel_audit.instrumentation.fastapi import instrument_app

    otel_audit.configure()
    return instrument_app(plain_app(), methods=["DELETE"])


def stock_log_app() -> Any:
    """plain_app + the stock way: a pure ASGI middleware emitting one SDK log record per POST (batch processor)."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=os.environ["BENCH_SINK"])))
    logger = provider.get_logger("stock-audit")
    app = plain_app()

    class StockAuditMiddleware:
        def __init__(self, downstream: Any) -> None:
            self.app = downstream

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["method"] != "POST":
                await self.app(scope, receive, send)
                return
            started = time.perf_counter_ns()
            status = [500]

            async def send_with_status(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_with_status)
            finally:
                client = scope.get("client")
                logger.emit(LogRecord(
                    timestamp=time.time_ns(),
                    severity_number=SeverityNumber.INFO,
                    event_name="audit.http.post",
                    attributes={
                        "audit.action": "document.update", "audit.outcome": "success", "audit.actor.type": "anonymous",
                        "audit.resource.type": "document", "audit.resource.id": scope["path"].rsplit("/", 1)[-1],
                        "http.request.method": "POST", "http.route": "/documents/{document_id}",
                        "url.path": scope["path"], "http.response.status_code": status[0],
                        "client.address": client[0] if client else "",
                        "audit.metadata": {"duration_ms": (time.perf_counter_ns() - started) / 1e6},
                    },
                ))

    app.add_middleware(StockAuditMiddleware)
    return app


def traced_app() -> Any:
    """plain_app + FastAPIInstrumentor with a batch span processor exporting OTLP/HTTP to the sink."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    sink = os.environ["BENCH_SINK"].removesuffix("/v1/logs")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink}/v1/traces")))
    app = plain_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


# -- one measurement --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urlopen(f"{base_url}/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


def _wrk(base_url: str, seconds: int, script: Path) -> tuple[float, int]:
    """Requests per second and completed requests of one wrk run (1 thread, CONNECTIONS keep-alive connections)."""
    completed = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), f"{base_url}/documents/doc-42"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )
    rps = re.search(r"Requests/sec:\s+([\d.]+)", completed.stdout)
    total = re.search(r"(\d+) requests in", completed.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", completed.stdout)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{completed.stdout}")
    if errors is not None:
        raise RuntimeError(f"the server answered errors:\n{completed.stdout}")
    return float(rps.group(1)), int(total.group(1))


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process, all its threads, or of one thread (Linux /proc; clock-tick resolution)."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(variant: str, size: str) -> dict[str, Any]:
    """Throughput of one variant; for audited variants also how many events reached the sink."""
    with sink_process() as sink, tempfile.TemporaryDirectory(prefix="bench-fastapi-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_SCRIPT)
        port = _free_port()
        env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
        env.update({
            "BENCH_SINK": sink.endpoint,
            "OTEL_AUDIT_ENDPOINT": sink.endpoint,
            "OTEL_AUDIT_PROTOCOL": "http/protobuf",
            "OTEL_AUDIT_SPOOL_DIR": str(Path(tmp) / "spool"),
            "OTEL_SERVICE_NAME": "bench-fastapi",
        })
        server = subprocess.Popen(
            python_command("-m", "uvicorn", "--factory", f"benchmarks.bench_fastapi:{FACTORIES[variant]}",
                           "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
                           "--loop", "asyncio", "--http", "h11"),
            cwd=REPO_ROOT, env=env,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base_url, server)
            _, warmup_requests = _wrk(base_url, WARMUP_SECONDS, script)
            cpu_before, loop_cpu_before = _cpu_seconds(server.pid), _cpu_seconds(server.pid, server.pid)
            rps, requests = _wrk(base_url, SECONDS[size], script)
            cpu_per_request_us = (_cpu_seconds(server.pid) - cpu_before) / requests * 1e6
            loop_cpu_per_request_us = (_cpu_seconds(server.pid, server.pid) - loop_cpu_before) / requests * 1e6
            expected = warmup_requests + requests
            received = sink.count()
            if variant in ("otel-audit", "stock ASGI + SDK log"):
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while received < expected and time.monotonic() < deadline:
                    time.sleep(0.2)
                    received = sink.count()
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(15)
    result: dict[str, Any] = {"rps": rps, "requests": requests, "server_cpu_us_per_request": cpu_per_request_us,
                              "event_loop_cpu_us_per_request": loop_cpu_per_request_us,
                              "other_threads_cpu_us_per_request": cpu_per_request_us - loop_cpu_per_request_us,
                              "cpu_capacity_rps": 1e6 / cpu_per_request_us}
    if variant in ("otel-audit", "stock ASGI + SDK log"):
        result.update({"events_expected": expected, "events_received": received,
                       "events_missing": max(0, expected - received)})
    return result


def _wrk_missing() -> str | None:
    return None if shutil.which("wrk") else "wrk is not installed (apt-get install wrk)"


BENCHMARK = Benchmark(
    name="fastapi",
    title="FastAPI throughput: plain vs otel-audit middleware (1 audit event per POST) vs stock ASGI + SDK log vs "
          "FastAPIInstrumentor (uvicorn, 127.0.0.1, wrk)",
    variants=VARIANTS,
    command=lambda variant, size: python_command("-m", "benchmarks.bench_fastapi", "--variant", variant, "--size", size),
    figures=(
        Figure("plain FastAPI", "plain", "rps", "req/s"),
        Figure("with otel-audit middleware", "otel-audit", "rps", "req/s"),
        Figure("with stock ASGI middleware + SDK log", "stock ASGI + SDK log", "rps", "req/s"),
        Figure("with FastAPIInstrumentor", "FastAPIInstrumentor", "rps", "req/s"),
        Figure("plain: server CPU per request", "plain", "server_cpu_us_per_request", "us"),
        Figure("otel-audit: server CPU per request", "otel-audit", "server_cpu_us_per_request", "us"),
        Figure("otel-audit: event-loop thread CPU per request", "otel-audit", "event_loop_cpu_us_per_request", "us"),
        Figure("otel-audit: other threads (audit exporter) CPU per request", "otel-audit",
               "other_threads_cpu_us_per_request", "us"),
        Figure("otel-audit, no event: server CPU per request", "otel-audit, no event", "server_cpu_us_per_request", "us"),
        Figure("stock ASGI + SDK log: server CPU per request", "stock ASGI + SDK log", "server_cpu_us_per_request", "us"),
        Figure("FastAPIInstrumentor: server CPU per request", "FastAPIInstrumentor", "server_cpu_us_per_request", "us"),
        Figure("otel-audit events missing at the sink", "otel-audit", "events_missing", "events",
               Target("0", "<=", 0.0)),
    ),
    ratios=(
        Ratio("otel-audit / plain throughput", ("otel-audit", "rps"), ("plain", "rps"), Target(">= 0.90", ">=", 0.90)),
        Ratio("otel-audit / plain, from server CPU per request", ("otel-audit", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps"), Target(">= 0.90", ">=", 0.90)),
        Ratio("otel-audit without events / plain, from server CPU per request", ("otel-audit, no event", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps")),
        Ratio("stock ASGI + SDK log / plain, from server CPU per request", ("stock ASGI + SDK log", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps")),
        Ratio("FastAPIInstrumentor / plain, from server CPU per request", ("FastAPIInstrumentor", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps")),
        Ratio("stock ASGI + SDK log / plain", ("stock ASGI + SDK log", "rps"), ("plain", "rps")),
        Ratio("FastAPIInstrumentor / plain", ("FastAPIInstrumentor", "rps"), ("plain", "rps")),
    ),
    timeout=lambda size: SECONDS[size] + WARMUP_SECONDS + START_TIMEOUT_S + DRAIN_TIMEOUT_S + 60,
    unavailable=_wrk_missing,
)


def compare(repetitions: int, size: str) -> dict[str, Any]:
    """All variants, interleaved; ratios of the medians next to the harness's medians of per-repetition ratios."""
    result = run_benchmark(BENCHMARK, repetitions, size, log=lambda text: print(text, file=sys.stderr, flush=True))
    if result.get("status") == "not measured yet":
        return result
    for key in ("rps", "cpu_capacity_rps"):
        medians = {variant: statistics.median(run[key] for run in runs if run)
                   for variant, runs in result["samples"].items() if any(runs)}
        plain = medians.get("plain")
        result[f"median_{key}"] = {variant: round(value) for variant, value in medians.items()}
        result[f"ratio_of_medians_{key}"] = {variant: round(value / plain, 3) for variant, value in medians.items()
                                             if plain}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--size", default="quick", choices=tuple(SECONDS))
    parser.add_argument("--compare", action="store_true", help="run every variant, interleaved, and compare")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    if args.compare:
        report = compare(args.repetitions, args.size)
        keys = ("median_rps", "ratio_of_medians_rps", "median_cpu_capacity_rps", "ratio_of_medians_cpu_capacity_rps",
                "ratios", "figures", "errors", "status")
        print(json.dumps({key: report.get(key) for key in keys}, indent=2, default=str))
        return
    if args.variant is None:
        parser.error("--variant or --compare is required")
    reason = _wrk_missing()
    if reason:
        sys.exit(reason)
    print_result(measure(args.variant, args.size))


if __name__ == "__main__":
    main()
