"""FastAPI throughput with the audit middleware vs plain, vs a stock pure-ASGI middleware + one SDK log, vs tracing.

One variant per process: `python -m benchmarks.bench_fastapi --variant otel-audit --size quick` starts the OTLP
sink (benchmarks.harness sink, its own process), the variant's app under uvicorn (its own process, one worker,
127.0.0.1), and drives `POST /documents/{document_id}` with wrk (keep-alive, fixed connections, fixed duration)
after a warm-up. Every POST is audited, so each request of the audited variants is one event; the sink's record
count afterwards shows they all arrived. Besides requests/s it records the server process's CPU time per request
(all threads, so the audit exporter is included; the event-loop thread's share is also recorded on its own): on a
shared machine the throughput of one run swings with the neighbours' load, while CPU per request hardly does, and
1e6 / CPU-us is the throughput the server would reach on a core of its own. For the two variants that export
(otel-audit, stock), CPU is counted from the moment the sink holds every warm-up record until it holds every record
of the run, so each run is charged its own exports, the last batch sent after wrk stopped included, and none of the
warm-up's. `python -m benchmarks.bench_fastapi
--compare` runs every variant interleaved (harness.run_benchmark) and prints ratios of the medians and the
medians of per-repetition ratios.

`python -m benchmarks.bench_fastapi --breakdown` says where an audited request's extra CPU goes, without a server:
the same POST is driven straight through the ASGI app in one process, chunks of each stage alternated, and the
event-loop thread's CPU per request compared stage by stage (plain; + an empty pass-through ASGI middleware; + the
audit middleware auditing nothing; + its event with `emit` a no-op; + `emit` through the SDK logger, filter and
redaction with the delivery stage a no-op; the full path, which adds encoding and the spool write; the stock
middleware + SDK log). The no-op stages exist only in that diagnostic process. The other threads' CPU (the
exporters, flushed after every chunk) is reported per event. Without uvicorn, h11 and the socket calls a request
costs about a third of what it costs in the server, and each stage less than it does there (fewer cache misses in
a small loop), so the breakdown gives proportions, not the server's figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from benchmarks.harness import (
    REPO_ROOT,
    Benchmark,
    Figure,
    Ratio,
    Sink,
    Target,
    print_result,
    python_command,
    run_benchmark,
    rotated,
    sink_process,
)

INTERLEAVED = "plain and otel-audit, interleaved"
VARIANTS = ("plain", "otel-audit", "otel-audit, no event", "stock ASGI + SDK log", "FastAPIInstrumentor", INTERLEAVED)
FACTORIES = {
    "plain": "plain_app",
    "otel-audit": "audited_app",
    "otel-audit, no event": "audited_no_event_app",
    "stock ASGI + SDK log": "stock_log_app",
    "FastAPIInstrumentor": "traced_app",
}
AUDITED = ("otel-audit", "stock ASGI + SDK log")  # the variants exporting one record per POST to the sink
SECONDS = {"smoke": 2, "quick": 5, "full": 15}
WARMUP_SECONDS = 1
CONNECTIONS = 16
START_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0
# Side by side: fresh pairs of servers, each pair measured in ABBA slices. A server process runs up to a tenth
# faster or slower than the next one of the same code (plain against plain, one pair at a time, read 0.89x-1.03x
# pinned), so one pair's ratio carries two processes' luck; pooling several pairs per repetition averages it,
# while the slices within a pair keep the two servers seconds apart (the machine's own speed drifts over minutes).
INTERLEAVED_PAIRS = {"smoke": 1, "quick": 2, "full": 4}
INTERLEAVED_SLICES = {"smoke": 2, "quick": 2, "full": 4}  # per pair
INTERLEAVED_SLICE_SECONDS = {"smoke": 1, "quick": 1, "full": 2}
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
    app.state.log_provider = provider

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


@functools.cache
def _cpu_plan() -> tuple[int, int] | None:
    """(server CPU, load CPU) when this process may use two CPUs and taskset exists, else None.

    Every server measured here runs on the first CPU, wrk and the sink on the second: left to the scheduler, a
    server shares its core with wrk in some runs and not in others, and its CPU per request moves with that (an A/A
    test, plain against plain in six fresh pairs: 0.85x-1.12x unpinned, 0.89x-1.03x pinned). Pinned, the audit
    exporter also shares the server's CPU instead of borrowing the load generator's, so throughput pays for it."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None
    return cpus[0], cpus[1]


def _pin_to_load_cpu(pid: int) -> None:
    """Every thread of process `pid` onto the load generator's CPU (threads it starts later inherit it)."""
    plan = _cpu_plan()
    if plan is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {plan[1]})
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just ended


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
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


def _wrk(base_url: str, seconds: int, script: Path, connections: int = CONNECTIONS) -> tuple[float, int]:
    """Requests per second and completed requests of one wrk run (1 thread, `connections` keep-alive connections)."""
    plan = _cpu_plan()
    completed = subprocess.run(
        [*(("taskset", "-c", str(plan[1])) if plan else ()),
         "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"{base_url}/documents/doc-42"],
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


def _drain(sink: Sink, expected: int, deadline: float) -> int:
    """Wait until the sink has received `expected` records or the deadline passes; how many it has."""
    received = sink.count()
    while received < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        received = sink.count()
    return received


@contextmanager
def _server(
    factory: str, sink: Sink, tmp: Path, extra_env: dict[str, str] | None = None,
    wrapper: tuple[str, ...] = (), start_timeout: float = START_TIMEOUT_S,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The app of a factory in this module under uvicorn (its own process, one worker, 127.0.0.1), ready:
    (process, base URL). `extra_env` is added to the server's environment last; `wrapper` runs the server (valgrind)."""
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update({
        "BENCH_SINK": sink.endpoint,
        "OTEL_AUDIT_ENDPOINT": sink.endpoint,
        "OTEL_AUDIT_PROTOCOL": "http/protobuf",
        "OTEL_AUDIT_SPOOL_DIR": str(tmp / f"spool-{port}"),
        "OTEL_SERVICE_NAME": "bench-fastapi",
    })
    env.update(extra_env or {})
    plan = _cpu_plan()
    if not wrapper and plan is not None:
        wrapper = ("taskset", "-c", str(plan[0]))
    server = subprocess.Popen(
        [*wrapper] + python_command("-m", "uvicorn", "--factory", f"benchmarks.bench_fastapi:{factory}",
                       "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
                       "--loop", "asyncio", "--http", "h11"),
        cwd=REPO_ROOT, env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base_url, server, start_timeout)
        yield server, base_url
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(15)


@contextmanager
def _load_setup() -> Iterator[tuple[Sink, Path, Path]]:
    """The sink, a scratch directory and wrk's POST script in it: (sink, directory, script)."""
    with sink_process() as sink, tempfile.TemporaryDirectory(prefix="bench-fastapi-") as tmp:
        _pin_to_load_cpu(sink.process.pid)  # the backend: on the load generator's CPU, not the server's
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_SCRIPT)
        yield sink, Path(tmp), script


def measure(variant: str, size: str) -> dict[str, Any]:
    """Throughput of one variant; for audited variants also how many events reached the sink."""
    with _load_setup() as (sink, tmp, script):
        with _server(FACTORIES[variant], sink, tmp) as (server, base_url):
            _, warmup_requests = _wrk(base_url, WARMUP_SECONDS, script)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            if variant in AUDITED:
                _drain(sink, warmup_requests, deadline)  # the warm-up's exports are not charged to the run
            cpu_before, loop_cpu_before = _cpu_seconds(server.pid), _cpu_seconds(server.pid, server.pid)
            rps, requests = _wrk(base_url, SECONDS[size], script)
            expected = warmup_requests + requests
            # The run's own exports, including the last batch sent after wrk stopped, are charged to it.
            received = _drain(sink, expected, deadline) if variant in AUDITED else 0
            cpu_per_request_us = (_cpu_seconds(server.pid) - cpu_before) / requests * 1e6
            loop_cpu_per_request_us = (_cpu_seconds(server.pid, server.pid) - loop_cpu_before) / requests * 1e6
    result: dict[str, Any] = {"rps": rps, "requests": requests, "server_cpu_us_per_request": cpu_per_request_us,
                              "event_loop_cpu_us_per_request": loop_cpu_per_request_us,
                              "other_threads_cpu_us_per_request": cpu_per_request_us - loop_cpu_per_request_us,
                              "cpu_capacity_rps": 1e6 / cpu_per_request_us}
    if variant in AUDITED:
        result.update({"events_expected": expected, "events_received": received,
                       "events_missing": max(0, expected - received)})
    return result


def measure_interleaved(size: str) -> dict[str, Any]:
    """plain and otel-audit side by side: both servers up at once, wrk alternating between them in short slices
    (ABBA order), so the two are measured seconds apart rather than a whole run apart; totals over the slices of
    INTERLEAVED_PAIRS fresh pairs of servers, so that no one process's speed decides the ratio."""
    names = ("plain", "otel-audit")
    requests = dict.fromkeys(names, 0)
    cpu = dict.fromkeys(names, 0.0)
    # Each pair's ratio as a figure of its own (the harness keeps numbers only), so the results JSON shows how far
    # the pairs pooled into the ratio were apart.
    pairs: dict[str, float] = {}
    events_missing = 0
    with _load_setup() as (sink, tmp, script):
        for number in range(1, INTERLEAVED_PAIRS[size] + 1):
            pair = _interleaved_pair(sink, tmp, script, size)
            for name in names:
                requests[name] += pair["requests"][name]
                cpu[name] += pair["cpu"][name]
            pairs[f"pair_{number}_rps_ratio"] = round(pair["requests"]["otel-audit"] / pair["requests"]["plain"], 3)
            events_missing += pair["events_missing"]
    plain_cpu_us, audited_cpu_us = (cpu[name] / requests[name] * 1e6 for name in names)
    return {"rps_ratio": requests["otel-audit"] / requests["plain"], "cpu_capacity_ratio": plain_cpu_us / audited_cpu_us,
            "plain_server_cpu_us_per_request": plain_cpu_us, "audited_server_cpu_us_per_request": audited_cpu_us,
            "events_missing": events_missing, **pairs}


def _interleaved_pair(sink: Sink, tmp: Path, script: Path, size: str) -> dict[str, Any]:
    """One fresh pair of servers, plain and otel-audit, measured in alternating slices: requests and CPU seconds
    of each, and the audited server's events the sink did not receive."""
    with _server(FACTORIES["plain"], sink, tmp) as plain, _server(FACTORIES["otel-audit"], sink, tmp) as audited:
        servers = {"plain": plain, "otel-audit": audited}
        already = sink.count()
        warmup_events = _wrk(audited[1], WARMUP_SECONDS, script)[1]
        _wrk(plain[1], WARMUP_SECONDS, script)
        received = _drain(sink, already + warmup_events, time.monotonic() + DRAIN_TIMEOUT_S)
        requests = dict.fromkeys(servers, 0)
        cpu = {name: -_cpu_seconds(process.pid) for name, (process, _) in servers.items()}
        for slice_number in range(INTERLEAVED_SLICES[size]):
            for name in rotated(tuple(servers), slice_number):
                requests[name] += _wrk(servers[name][1], INTERLEAVED_SLICE_SECONDS[size], script)[1]
                if name == "otel-audit":
                    # Its exports are done before the next slice starts, so they slow neither server's slice.
                    received = _drain(sink, already + warmup_events + requests[name],
                                      time.monotonic() + DRAIN_TIMEOUT_S)
        for name, (process, _) in servers.items():
            cpu[name] += _cpu_seconds(process.pid)
    return {"requests": requests, "cpu": cpu,
            "events_missing": max(0, already + warmup_events + requests["otel-audit"] - received)}


def _wrk_missing() -> str | None:
    return None if shutil.which("wrk") else "wrk is not installed (apt-get install wrk)"


_SERVER_SETUP_S = 2 * (WARMUP_SECONDS + START_TIMEOUT_S) + DRAIN_TIMEOUT_S  # the longest a variant's setup may take


def _pair_seconds(size: str) -> float:
    """The longest one side-by-side pair may take: its setup, and its slices with a drain after each."""
    return INTERLEAVED_SLICES[size] * (2 * INTERLEAVED_SLICE_SECONDS[size] + 2) + _SERVER_SETUP_S


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
        Figure("side by side: otel-audit / plain throughput", INTERLEAVED, "rps_ratio", "x",
               Target(">= 0.90", ">=", 0.90)),
        Figure("side by side: otel-audit / plain, from server CPU per request", INTERLEAVED, "cpu_capacity_ratio", "x",
               Target(">= 0.90", ">=", 0.90)),
        Figure("side by side: plain server CPU per request", INTERLEAVED, "plain_server_cpu_us_per_request", "us"),
        Figure("side by side: otel-audit server CPU per request", INTERLEAVED, "audited_server_cpu_us_per_request",
               "us"),
        Figure("side by side: otel-audit events missing at the sink", INTERLEAVED, "events_missing", "events",
               Target("0", "<=", 0.0)),
    ),
    ratios=(
        # The goal (>= 0.90) is judged side by side (the interleaved figures above): these servers run minutes apart.
        Ratio("otel-audit / plain throughput", ("otel-audit", "rps"), ("plain", "rps")),
        Ratio("otel-audit / plain, from server CPU per request", ("otel-audit", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps")),
        Ratio("otel-audit without events / plain, from server CPU per request", ("otel-audit, no event", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps")),
        Ratio("stock ASGI + SDK log / plain, from server CPU per request", ("stock ASGI + SDK log", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps")),
        Ratio("FastAPIInstrumentor / plain, from server CPU per request", ("FastAPIInstrumentor", "cpu_capacity_rps"),
              ("plain", "cpu_capacity_rps")),
        Ratio("stock ASGI + SDK log / plain", ("stock ASGI + SDK log", "rps"), ("plain", "rps")),
        Ratio("FastAPIInstrumentor / plain", ("FastAPIInstrumentor", "rps"), ("plain", "rps")),
    ),
    timeout=lambda size: max(SECONDS[size] + _SERVER_SETUP_S, INTERLEAVED_PAIRS[size] * _pair_seconds(size)) + 60,
    unavailable=_wrk_missing,
)


def compare(repetitions: int, size: str) -> dict[str, Any]:
    """All variants, interleaved; ratios of the medians next to the harness's medians of per-repetition ratios."""
    result = run_benchmark(BENCHMARK, repetitions, size, log=lambda text: print(text, file=sys.stderr, flush=True))
    if result.get("status") == "not measured yet":
        return result
    for key in ("rps", "cpu_capacity_rps"):
        medians = {variant: statistics.median(run[key] for run in runs if run and key in run)
                   for variant, runs in result["samples"].items() if any(run and key in run for run in runs)}
        plain = medians.get("plain")
        result[f"median_{key}"] = {variant: round(value) for variant, value in medians.items()}
        result[f"ratio_of_medians_{key}"] = {variant: round(value / plain, 3) for variant, value in medians.items()
                                             if plain}
    return result


# -- where the time goes (in process, no server) ---------------------------------------------------------------

BREAKDOWN_CHUNK = 2000
BREAKDOWN_ROUNDS = {"smoke": 5, "quick": 15, "full": 41}
_SCOPE = {
    "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "scheme": "http",
    "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "method": "POST", "root_path": "",
    "path": "/documents/doc-42", "raw_path": b"/documents/doc-42", "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"2"), (b"content-type", b"application/json")],
}
_BODY = {"type": "http.request", "body": b"{}", "more_body": False}


class _PassThrough:
    """The least any pure ASGI middleware costs: one more layer that only awaits the next."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@contextmanager
def _emit_is_a_no_op() -> Iterator[None]:
    """Within the block the middleware builds its event's arguments and emits nothing."""
    from otel_audit.instrumentation import _http

    emit_positional = _http.emit_positional
    _http.emit_positional = lambda *arguments: ""
    try:
        yield
    finally:
        _http.emit_positional = emit_positional


@contextmanager
def _delivery_is_a_no_op() -> Iterator[None]:
    """Within the block the durable delivery stage accepts records without encoding or spooling them, on the SDK's
    path (on_emit) and on the direct path (its stage); audit loggers are bound again on entry and exit, so they
    pick up the stage in effect."""
    from otel_audit.delivery import DurableLogRecordProcessor
    from otel_audit.logger import binding

    on_emit, direct_stage = DurableLogRecordProcessor.on_emit, DurableLogRecordProcessor.direct_stage
    DurableLogRecordProcessor.on_emit = lambda self, log_record: None  # type: ignore[method-assign]
    DurableLogRecordProcessor.direct_stage = lambda self, logger: lambda *fields: True  # type: ignore[method-assign]
    binding.bind(binding.provider, binding.chain)
    try:
        yield
    finally:
        DurableLogRecordProcessor.on_emit = on_emit  # type: ignore[method-assign]
        DurableLogRecordProcessor.direct_stage = direct_stage  # type: ignore[method-assign]
        binding.bind(binding.provider, binding.chain)


def _other_threads_cpu() -> float:
    """CPU seconds of every thread of this process but the calling one (Linux /proc)."""
    own = threading.get_native_id()
    return sum(_cpu_seconds(os.getpid(), int(tid)) for tid in os.listdir("/proc/self/task") if int(tid) != own)


def breakdown(size: str) -> dict[str, Any]:
    """Event-loop thread CPU per request of each stage (medians of alternated chunks), and the differences."""
    import asyncio

    import otel_audit
    from otel_audit.instrumentation.fastapi import instrument_app

    with sink_process() as sink, tempfile.TemporaryDirectory(prefix="bench-fastapi-") as tmp:
        _pin_to_load_cpu(sink.process.pid)  # the backend: on the load generator's CPU, not the server's
        os.environ.update({"BENCH_SINK": sink.endpoint, "OTEL_AUDIT_ENDPOINT": sink.endpoint,
                           "OTEL_AUDIT_PROTOCOL": "http/protobuf", "OTEL_AUDIT_SPOOL_DIR": str(Path(tmp) / "spool")})
        pipeline = otel_audit.configure()
        passthrough = plain_app()
        passthrough.add_middleware(_PassThrough)
        stock = stock_log_app()
        delivery_no_op = instrument_app(plain_app())
        stages: dict[str, tuple[Any, Callable[[], AbstractContextManager[None]]]] = {
            "plain": (plain_app(), nullcontext),
            "+ pass-through ASGI middleware": (passthrough, nullcontext),
            "+ otel-audit middleware, no event": (instrument_app(plain_app(), methods=["DELETE"]), nullcontext),
            "+ event, emit a no-op": (instrument_app(plain_app()), _emit_is_a_no_op),
            "+ emit through logger, filter, redaction; delivery a no-op": (delivery_no_op, _delivery_is_a_no_op),
            "+ encoding and spool write (otel-audit, full)": (instrument_app(plain_app()), nullcontext),
            "stock ASGI + SDK log": (stock, nullcontext),
        }

        async def receive() -> dict[str, Any]:
            return _BODY

        async def send(message: Any) -> None:
            return None

        async def drive(app: Any, count: int) -> None:
            for _ in range(count):
                await app(dict(_SCOPE), receive, send)

        loop = asyncio.new_event_loop()
        for app, _ in stages.values():
            loop.run_until_complete(drive(app, 200))  # builds the middleware stacks, warms up
        loop_cpu: dict[str, list[float]] = {name: [] for name in stages}
        other_cpu = dict.fromkeys(stages, 0.0)
        for round_number in range(BREAKDOWN_ROUNDS[size]):
            for name in rotated(tuple(stages), round_number):
                app, patch = stages[name]
                other_before = _other_threads_cpu()
                with patch():
                    started = time.thread_time_ns()
                    loop.run_until_complete(drive(app, BREAKDOWN_CHUNK))
                    loop_cpu[name].append((time.thread_time_ns() - started) / BREAKDOWN_CHUNK / 1000)
                pipeline.force_flush()
                stock.state.log_provider.force_flush()
                other_cpu[name] += _other_threads_cpu() - other_before
        loop.close()
        otel_audit.shutdown()
        stock.state.log_provider.shutdown()
    report: dict[str, Any] = {"loop_thread_us_per_request": {}, "difference_from_previous_stage_us": {},
                              "other_threads_us_per_request": {}}
    previous = None
    for name, values in loop_cpu.items():
        value = statistics.median(values)
        report["loop_thread_us_per_request"][name] = round(value, 2)
        report["other_threads_us_per_request"][name] = round(other_cpu[name] / len(values) / BREAKDOWN_CHUNK * 1e6, 2)
        if previous is not None and name != "stock ASGI + SDK log":
            report["difference_from_previous_stage_us"][name] = round(value - previous, 2)
        previous = value
    report.update({"rounds": BREAKDOWN_ROUNDS[size], "requests_per_chunk": BREAKDOWN_CHUNK})
    return report


# -- where the time goes in the server (one uvicorn process, stages switched under load) ------------------------

SERVER_BREAKDOWN_SECONDS = {"smoke": 4, "quick": 40, "full": 120}
SERVER_BREAKDOWN_PERIOD_S = 0.1
_SWITCH_PREFIX = "/__stage/"
_STATS_PATH = "/__stats"


class _ConstantEvent:
    """The floor of auditing a request: a pass-through middleware emitting one constant event per POST, through
    emit's compiled positional entry, `repeat` times (twice: what a second, warm emit costs after the first). Each
    emit call's own thread CPU time is summed by its place in the request (the timer adds about 0.3 us a call)."""

    def __init__(self, app: Any, repeat: int) -> None:
        from otel_audit import get_audit_logger
        from otel_audit.model import Actor, Outcome

        self.app, self.repeat = app, repeat
        self.emit_ns = [0] * repeat
        self.posts = 0
        logger = get_audit_logger("otel_audit.instrumentation.asgi")
        self.arguments = (
            logger, "document.update", Actor.anonymous(), ("document", "doc-42"), Outcome.SUCCESS,
            {"duration_ms": 0.1}, None, None, None, None, None, "127.0.0.1", None, None, "bench-request-id", "POST",
            "/documents/{document_id}", "/documents/doc-42", 200, None,
        )
        self.call: tuple[Callable[..., Any], tuple[Any, ...]] | None = None

    def _bind(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """What each POST calls, and with what (bound at the first POST, once the pipeline is configured)."""
        from otel_audit.logger import emit_positional

        return emit_positional, self.arguments

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http" and scope["method"] == "POST":
            if self.call is None:
                self.call = self._bind()
            call, arguments = self.call
            for place in range(self.repeat):
                started = time.thread_time_ns()
                call(*arguments)
                self.emit_ns[place] += time.thread_time_ns() - started
            self.posts += 1


class _PrebuiltEvent(_ConstantEvent):
    """The constant event's attributes built once; each POST then runs only what emit runs below the processors:
    the direct path's delivery stage (encoding and the spool write), or with `write` False the encoder alone."""

    def __init__(self, app: Any, write: bool) -> None:
        super().__init__(app, 1)
        self.write = write

    def _bind(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        from otel_audit import semconv
        from otel_audit.delivery._wire import encode_log_parts
        from otel_audit.logger import fast_attributes
        from otel_audit.pipeline import current_pipeline
        from otel_audit.processors import iter_chain

        logger, action, *rest = self.arguments
        _, attributes, severity_number, severity_text = fast_attributes(action, *rest, None)
        pipeline = current_pipeline()
        assert pipeline is not None
        *_, delivery = iter_chain(pipeline.chain)
        stage = delivery.direct_stage(logger._logger()) if self.write else encode_log_parts
        now = time.time_ns()
        return stage, (now, now, severity_number, severity_text, attributes, semconv.event_name(action), 0, 0, 0)


class _StageSwitch:
    """One app, every stage's middleware stack around it; `GET /__stage/<n>` makes stage n answer what follows,
    booking the event-loop thread's CPU time and requests since the last switch to the stage that had them."""

    def __init__(self, stages: list[Any]) -> None:
        self.stages = stages
        self.current = 0
        self.totals = [[0, 0.0] for _ in self.stages]  # requests, event-loop thread CPU seconds
        self.requests, self.cpu_mark = 0, time.thread_time()

    def _book(self) -> None:
        now = time.thread_time()
        self.totals[self.current][0] += self.requests
        self.totals[self.current][1] += now - self.cpu_mark
        self.requests, self.cpu_mark = 0, now

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith((_SWITCH_PREFIX, _STATS_PATH)):
            self._book()
            if path.startswith(_SWITCH_PREFIX):
                self.current = int(path[len(_SWITCH_PREFIX):])
            emits = {index: (stage.posts, stage.emit_ns) for index, stage in enumerate(self.stages)
                     if isinstance(stage, _ConstantEvent)}
            body = json.dumps({"totals": self.totals, "process_cpu": time.process_time(), "emits": emits}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await self.stages[self.current](scope, receive, send)
        self.requests += 1


SERVER_STAGES = {  # stage: events per request (every request of the load is a POST)
    "plain": 0,
    "+ pass-through ASGI middleware": 0,
    "+ otel-audit middleware, no event": 0,
    "+ otel-audit middleware (full)": 1,
    "+ one constant event per POST, no request work": 1,
    "+ the same event twice per POST": 2,
    "+ a prebuilt event's encoding alone": 0,
    "+ a prebuilt event's delivery stage alone (encoding, spool write)": 1,
}


def server_breakdown_app() -> Any:
    """SERVER_STAGES around one plain app, for `--server-breakdown` (uvicorn imports this in the server)."""
    import otel_audit
    from otel_audit.instrumentation.asgi import AuditMiddleware

    otel_audit.configure()
    app = plain_app()
    return _StageSwitch([
        app, _PassThrough(app), AuditMiddleware(app, methods=["DELETE"]), AuditMiddleware(app),
        _ConstantEvent(app, 1), _ConstantEvent(app, 2),
        _PrebuiltEvent(app, write=False), _PrebuiltEvent(app, write=True),
    ])


def server_breakdown(size: str, server_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Event-loop thread CPU per request of each stage in one uvicorn process under continuous wrk load, the stage
    switched every SERVER_BREAKDOWN_PERIOD_S: the stages are measured milliseconds apart in the same process, so
    the machine's drift and the process's memory layout cancel out. The other threads' CPU (the exporter) is given
    per event of the stages that emit; the constant-event stages also give the emit calls' own CPU, first and
    second, so what an emit costs inside the call and what it costs the rest of the request can be told apart.
    `server_env` is added to the server's environment (OTEL_AUDIT_* settings, for example)."""
    import http.client

    seconds = SERVER_BREAKDOWN_SECONDS[size]
    with _load_setup() as (sink, tmp, script):
        with _server("server_breakdown_app", sink, tmp, server_env) as (_, base_url):
            control = http.client.HTTPConnection("127.0.0.1", int(base_url.rsplit(":", 1)[1]), timeout=10)

            def get(path: str) -> dict[str, Any]:
                control.request("GET", path)
                return json.loads(control.getresponse().read())

            load = subprocess.Popen(
                ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds + WARMUP_SECONDS + 2}s", "-s", str(script),
                 f"{base_url}/documents/doc-42"], stdout=subprocess.DEVNULL,
            )
            try:
                for stage in range(len(SERVER_STAGES)):  # warm-up, not counted
                    get(f"{_SWITCH_PREFIX}{stage}")
                    time.sleep(WARMUP_SECONDS / len(SERVER_STAGES))
                before = get(_STATS_PATH)
                end, switches = time.monotonic() + seconds, 0
                while time.monotonic() < end:
                    get(f"{_SWITCH_PREFIX}{switches % len(SERVER_STAGES)}")
                    switches += 1
                    time.sleep(SERVER_BREAKDOWN_PERIOD_S)
                after = get(_STATS_PATH)
            finally:
                load.wait(seconds + WARMUP_SECONDS + 60)
    report: dict[str, Any] = {"loop_thread_us_per_request": {}, "difference_from_plain_us": {}}
    requests = [a[0] - b[0] for a, b in zip(after["totals"], before["totals"])]
    cpu = [a[1] - b[1] for a, b in zip(after["totals"], before["totals"])]
    plain = cpu[0] / requests[0] * 1e6
    for stage, name in enumerate(SERVER_STAGES):
        value = cpu[stage] / requests[stage] * 1e6
        report["loop_thread_us_per_request"][name] = round(value, 1)
        report["difference_from_plain_us"][name] = round(value - plain, 1)
    events = sum(count * per_request for count, per_request in zip(requests, SERVER_STAGES.values()))
    report["other_threads_us_per_event"] = round(
        ((after["process_cpu"] - before["process_cpu"]) - sum(cpu)) / events * 1e6, 1)
    report["emit_call_us"] = {}
    for index, (posts, emit_ns) in after["emits"].items():
        posts_before, emit_ns_before = before["emits"][index]
        report["emit_call_us"][list(SERVER_STAGES)[int(index)]] = [
            round((now - then) / (posts - posts_before) / 1e3, 1) for now, then in zip(emit_ns, emit_ns_before)]
    report.update({"seconds": seconds, "switch_period_s": SERVER_BREAKDOWN_PERIOD_S, "requests": requests})
    return report


# -- instructions per request (callgrind) ------------------------------------------------------------------------

INSTRUCTION_VARIANTS = ("plain", "otel-audit, no event", "otel-audit")
INSTRUCTION_SECONDS = {"smoke": 3, "quick": 12, "full": 30}
CALLGRIND_START_TIMEOUT_S = 600.0


def _callgrind_control(pid: int, *options: str) -> None:
    """Tell the callgrind running `pid` to start or stop counting (-i on/off), or to write its counts (-d)."""
    subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True, timeout=120)


def _callgrind_totals(path_prefix: str, pid: int) -> dict[int, int]:
    """Instructions counted by thread (1: the event loop), from the dump callgrind_control -d wrote."""
    totals = {}
    for path in sorted(Path(path_prefix).parent.glob(f"{Path(path_prefix).name}.{pid}.1-*")):
        found = re.search(r"^totals: (\d+)", path.read_text(), re.MULTILINE)
        totals[int(path.name.rsplit("-", 1)[1])] = int(found.group(1)) if found else 0
    return totals


def server_instructions(size: str) -> dict[str, Any]:
    """Instructions per request of plain, the middleware auditing nothing and the middleware, each in its own uvicorn
    server run by callgrind, counted only while one wrk connection drives POSTs after a warm-up. Counts, not seconds:
    they repeat for the same code whatever else the machine is doing, so a change's cost can be read off one run."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"--server-instructions needs {tool} (Debian package valgrind)")
    report: dict[str, Any] = {"event_loop_instructions_per_request": {}, "other_threads_instructions_per_request": {}}
    with _load_setup() as (sink, tmp, script):
        for variant in INSTRUCTION_VARIANTS:
            out = str(tmp / f"callgrind-{FACTORIES[variant]}")
            wrapper = ("valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                       f"--callgrind-out-file={out}.%p")
            with _server(FACTORIES[variant], sink, tmp, wrapper=wrapper,
                         start_timeout=CALLGRIND_START_TIMEOUT_S) as (server, base_url):
                _wrk(base_url, WARMUP_SECONDS * 3, script, connections=1)
                _callgrind_control(server.pid, "-i", "on")
                _, requests = _wrk(base_url, INSTRUCTION_SECONDS[size], script, connections=1)
                _callgrind_control(server.pid, "-i", "off")
                _callgrind_control(server.pid, "-d")
            totals = _callgrind_totals(out, server.pid)
            report["event_loop_instructions_per_request"][variant] = round(totals.pop(1, 0) / requests)
            report["other_threads_instructions_per_request"][variant] = round(sum(totals.values()) / requests)
    plain = report["event_loop_instructions_per_request"]["plain"]
    report["all_threads_ratio_to_plain"] = {
        variant: round(plain / (loop + report["other_threads_instructions_per_request"][variant]), 4)
        for variant, loop in report["event_loop_instructions_per_request"].items()}
    report["seconds"] = INSTRUCTION_SECONDS[size]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--size", default="quick", choices=tuple(SECONDS))
    parser.add_argument("--compare", action="store_true", help="run every variant, interleaved, and compare")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true", help="where an audited request's CPU goes (in process)")
    parser.add_argument("--server-breakdown", action="store_true",
                        help="where an audited request's CPU goes in one uvicorn server, stages switched under load")
    parser.add_argument("--server-instructions", action="store_true",
                        help="instructions per request of plain, no event and otel-audit servers (callgrind)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="with --server-breakdown: add to the server's environment; repeatable")
    args = parser.parse_args()
    if args.breakdown:
        print(json.dumps(breakdown(args.size), indent=2))
        return
    if args.server_instructions:
        print(json.dumps(server_instructions(args.size), indent=2))
        return
    if args.server_breakdown:
        server_env = dict(item.split("=", 1) for item in args.server_env)
        print(json.dumps(server_breakdown(args.size, server_env), indent=2))
        return
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
    print_result(measure_interleaved(args.size) if args.variant == INTERLEAVED else measure(args.variant, args.size))


if __name__ == "__main__":
    main()
