"""The benchmark harness: fresh-process repetitions, interleaving, medians with min/max, ratios within a repetition.

Each benchmark declares its variants (e.g. "otel-audit disk", "stock SDK") and a command that measures one variant in
a fresh Python process and prints `BENCH-RESULT {json metrics}` as a line of stdout (scripts of other areas are read
with a parser of their own). Repetition r runs every variant once, the order rotated by r so slow drift of a shared
machine hits every variant alike; a comparison is the ratio of two figures of the same repetition, and the report
gives the median over repetitions with min and max. `python -m benchmarks.harness sink` is the OTLP/HTTP sink
(a separate process, so its CPU is not charged to the process being measured).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any
from urllib.request import urlopen

RESULT_PREFIX = "BENCH-RESULT "
MIN_REPETITIONS = 5
SIZES = ("smoke", "quick", "full")
BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent

Metrics = dict[str, float]


@dataclass(frozen=True)
class Target:
    """A target from issue 8, e.g. `<= 0.25` for "emit <= 0.25x stock"."""

    text: str
    op: str
    value: float

    def met(self, figure: float) -> bool:
        """Whether a median meets the target."""
        return figure <= self.value if self.op == "<=" else figure >= self.value


@dataclass(frozen=True)
class Figure:
    """One reported number: metric `key` of `variant`, as a median over repetitions."""

    label: str
    variant: str
    key: str
    unit: str
    target: Target | None = None


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator, each (variant, metric), computed within each repetition."""

    label: str
    numerator: tuple[str, str]
    denominator: tuple[str, str]
    target: Target | None = None


@dataclass(frozen=True)
class Benchmark:
    """A benchmark as the harness runs it: variants, how to run one in a fresh process, what to report."""

    name: str
    title: str
    variants: tuple[str, ...]
    command: Callable[[str, str], list[str]]
    figures: tuple[Figure, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    parse: Callable[[str], Metrics] = field(default=lambda stdout: parse_result_line(stdout))
    timeout: Callable[[str], float] = field(default=lambda size: 120.0)
    unavailable: Callable[[], str | None] = field(default=lambda: None)
    note: str = ""
    sizes: tuple[str, ...] = SIZES
    describe: Callable[[str], tuple[str, Target | None] | None] = field(default=lambda key: ("", None))


class ResultFormatError(ValueError):
    """A benchmark process finished but its output carried no figures the harness understands."""


def parse_result_line(stdout: str) -> Metrics:
    """The metrics of the last `BENCH-RESULT {...}` line of a benchmark process."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            document = json.loads(line[len(RESULT_PREFIX) :])
            return {key: float(value) for key, value in document.items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)}
    raise ResultFormatError(f"no {RESULT_PREFIX.strip()} line in the output")


def parse_any(stdout: str) -> Metrics:
    """Figures printed by a script of another area: a BENCH-RESULT line, else the last JSON object printed (one
    line or indented), else `name  number` lines."""
    try:
        return parse_result_line(stdout)
    except ResultFormatError:
        pass
    start = stdout.rfind("\n{")
    start = start + 1 if start >= 0 else (0 if stdout.startswith("{") else -1)
    if start >= 0:
        try:
            document = json.loads(stdout[start:])
        except ValueError:
            document = None
        if isinstance(document, dict):
            return {key: float(value) for key, value in document.items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)}
    metrics = {}
    for line in stdout.splitlines():
        match = _NAME_NUMBER.match(line)
        if match:
            metrics[match["name"]] = float(match["value"])
    if not metrics:
        raise ResultFormatError("no figures found in the output")
    return metrics


_NAME_NUMBER = re.compile(r"^(?P<name>[A-Za-z_][\w.+/ -]*?)\s*[:=]?\s+(?P<value>-?\d+(?:\.\d+)?)\s*$")


def print_result(metrics: dict[str, Any]) -> None:
    """Report a measurement to the harness (the last line of stdout)."""
    print(RESULT_PREFIX + json.dumps(metrics, sort_keys=True), flush=True)


def python_command(*args: str) -> list[str]:
    """This interpreter running `args`, from the repository root (so `-m benchmarks.x` resolves)."""
    return [sys.executable, *args]


def run_process(argv: Sequence[str], timeout: float) -> tuple[str, str, int]:
    """Run one measurement process to completion; stdout, stderr, exit code.

    It runs in a process group of its own, killed whole (servers and sinks it started included) when `timeout`
    seconds pass; subprocess.TimeoutExpired is raised then.
    """
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    for name in list(env):
        if name.startswith(("OTEL_BLRP_", "OTEL_AUDIT_", "OTEL_EXPORTER_OTLP")):
            del env[name]  # stock defaults and otel-audit defaults, whatever the calling shell set
    process = subprocess.Popen(
        list(argv), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return stdout, stderr, process.returncode


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and count of the repetitions that produced a value."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def rotated(variants: Sequence[str], repetition: int) -> list[str]:
    """The run order of repetition `repetition`: the variants rotated by it."""
    shift = repetition % len(variants)
    return [*variants[shift:], *variants[:shift]]


def run_benchmark(
    bench: Benchmark, repetitions: int, size: str, log: Callable[[str], None] = lambda text: None
) -> dict[str, Any]:
    """Run `bench` (every variant once per repetition, fresh process each) and summarize its figures and ratios."""
    reason = bench.unavailable()
    if reason is not None:
        return {"title": bench.title, "status": "not measured yet", "reason": reason, "figures": [], "ratios": []}
    if size not in bench.sizes:
        return {"title": bench.title, "status": "not run at this size", "figures": [], "ratios": [],
                "reason": f"not part of a {size} run; `python -m benchmarks{' --quick' if size == 'quick' else ''} "
                          f"--only {bench.name}` measures it"}
    samples: dict[str, list[Metrics | None]] = {variant: [] for variant in bench.variants}
    errors: list[dict[str, Any]] = []
    started = time.monotonic()
    for repetition in range(repetitions):
        for variant in rotated(bench.variants, repetition):
            argv = bench.command(variant, size)
            log(f"  [{bench.name}] repetition {repetition + 1}/{repetitions}: {variant}")
            metrics: Metrics | None = None
            try:
                stdout, stderr, code = run_process(argv, bench.timeout(size))
                if code != 0:
                    raise ResultFormatError(f"exit code {code}: {stderr.strip()[-800:]}")
                metrics = bench.parse(stdout)
            except (ResultFormatError, ValueError, subprocess.TimeoutExpired) as exc:
                errors.append({"repetition": repetition, "variant": variant, "error": str(exc)[-1000:]})
                log(f"  [{bench.name}] {variant} failed: {str(exc)[-300:]}")
            samples[variant].append(metrics)
    return {
        "title": bench.title,
        "status": "measured" if not errors else ("failed" if _all_empty(samples) else "measured with errors"),
        "note": bench.note,
        "seconds": round(time.monotonic() - started, 1),
        "figures": [_figure_summary(figure, samples) for figure in _figures_to_report(bench, samples)],
        "ratios": [_ratio_summary(ratio, samples, repetitions) for ratio in bench.ratios],
        "samples": samples,
        "errors": errors,
    }


def _figures_to_report(bench: Benchmark, samples: dict[str, list[Metrics | None]]) -> tuple[Figure, ...]:
    """The declared figures; every metric printed when none of them was found (the script changed its names)."""
    seen = {(variant, key) for variant, runs in samples.items() for run in runs for key in run or ()}
    declared = {(figure.variant, figure.key) for figure in bench.figures}
    declared |= {side for ratio in bench.ratios for side in (ratio.numerator, ratio.denominator)}
    if bench.figures and declared & seen:
        return bench.figures
    return _every_metric(samples, bench.describe)


def _every_metric(
    samples: dict[str, list[Metrics | None]], describe: Callable[[str], tuple[str, Target | None] | None]
) -> tuple[Figure, ...]:
    """For a script the harness has no figure list for: every metric it printed, as it named it; `describe` gives
    a metric's unit and target, or None to leave it out."""
    seen: dict[tuple[str, str], None] = {}
    for variant, runs in samples.items():
        for run in runs:
            for key in run or ():
                seen[(variant, key)] = None
    figures = []
    for variant, key in seen:
        description = describe(key)
        if description is not None:
            figures.append(Figure(key, variant, key, description[0], description[1]))
    return tuple(figures)


def _all_empty(samples: dict[str, list[Metrics | None]]) -> bool:
    return all(sample is None for runs in samples.values() for sample in runs)


def _target_fields(target: Target | None, median: float | None) -> dict[str, Any]:
    if target is None:
        return {"target": None, "met": None}
    return {"target": target.text, "met": None if median is None else target.met(median)}


def _figure_summary(figure: Figure, samples: dict[str, list[Metrics | None]]) -> dict[str, Any]:
    values = [run[figure.key] for run in samples.get(figure.variant, []) if run is not None and figure.key in run]
    summary = summarize(values)
    return {"label": figure.label, "variant": figure.variant, "key": figure.key, "unit": figure.unit, **summary,
            **_target_fields(figure.target, summary["median"])}


def _ratio_summary(ratio: Ratio, samples: dict[str, list[Metrics | None]], repetitions: int) -> dict[str, Any]:
    values = []
    for repetition in range(repetitions):
        top = _value(samples, ratio.numerator, repetition)
        bottom = _value(samples, ratio.denominator, repetition)
        if top is not None and bottom:
            values.append(top / bottom)
    summary = summarize(values)
    return {"label": ratio.label, "numerator": list(ratio.numerator), "denominator": list(ratio.denominator),
            **summary, **_target_fields(ratio.target, summary["median"])}


def _value(samples: dict[str, list[Metrics | None]], which: tuple[str, str], repetition: int) -> float | None:
    runs = samples.get(which[0], [])
    run = runs[repetition] if repetition < len(runs) else None
    return None if run is None else run.get(which[1])


# -- report ---------------------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """What the figures were measured on (they only compare within one run)."""
    versions: dict[str, str | None] = {}
    for package in ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "protobuf", "otel-audit"):
        try:
            versions[package] = _metadata.version(package)
        except _metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "packages": versions,
        "stock_pins": project_pins(),
    }


def project_pins() -> dict[str, str]:
    """The exact versions pyproject.toml's `dependencies` pin for the OpenTelemetry packages the baselines run on.

    Read with a pattern rather than tomllib, which Python 3.10 (supported by the project) lacks."""
    try:
        text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return {}
    block = re.search(r"^dependencies\s*=\s*\[(?P<items>.*?)\]", text, re.MULTILINE | re.DOTALL)
    if block is None:
        return {}
    return dict(re.findall(r"[\"'](opentelemetry-[\w.-]+)\s*==\s*([\w.]+)[\"']", block["items"]))


def _baseline_line(environment_info: dict[str, Any]) -> str:
    installed = environment_info["packages"].get("opentelemetry-sdk")
    pinned = environment_info.get("stock_pins", {}).get("opentelemetry-sdk")
    if pinned is None or pinned == installed:
        return f"opentelemetry-sdk {installed} (the project's pin)"
    return f"opentelemetry-sdk {installed} (**differs from the project's pin {pinned}**)"


def format_number(value: float | None, unit: str = "") -> str:
    """A figure with 3 significant digits (thousands separated), its unit attached."""
    if value is None or math.isnan(value):
        return "-"
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "%":
        return f"{value:.3g}%"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def _status(entry: dict[str, Any]) -> str:
    if entry["n"] == 0:
        return "not measured in this run"
    notes = []
    if entry["met"] is True:
        notes.append("met")
    elif entry["met"] is False:
        notes.append("**not met**")
    if entry["n"] < MIN_REPETITIONS:
        notes.append(f"only {entry['n']} repetitions")
    return ", ".join(notes)


def markdown(report: dict[str, Any]) -> str:
    """The results as Markdown tables, one per benchmark, targets and their status beside each figure."""
    lines = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}, {report['seconds']:.0f} s in all  ",
        (f"Machine: {report['environment']['cpus']} CPUs, Python {report['environment']['python']}, "
        f"stock baseline {_baseline_line(report['environment'])}, load average at start "
        f"{', '.join(str(v) for v in report['environment']['load_average_at_start'])}  "),
        (f"Repetitions: {report['repetitions']} per figure (fresh process per variant, interleaved); "
        "median [min - max]; ratios computed within each repetition."),
        "",
    ]
    for name, result in report["benchmarks"].items():
        lines.append(f"### {result['title']}")
        lines.append("")
        if result["status"] in ("not measured yet", "not run at this size"):
            lines.append(f"{result['status'].capitalize()}: {result['reason']}.")
            lines.append("")
            continue
        if result.get("note"):
            lines.append(result["note"])
            lines.append("")
        lines.append("| figure | median | min - max | target | status |")
        lines.append("|---|---|---|---|---|")
        for entry in result["ratios"]:
            lines.append(_row(entry["label"], entry, "x"))
        for entry in result["figures"]:
            lines.append(_row(entry["label"], entry, entry["unit"]))
        if result.get("errors"):
            lines.append("")
            lines.append(f"{len(result['errors'])} run(s) failed; see the JSON file (`{name}` -> `errors`).")
        lines.append("")
    return "\n".join(lines)


def _row(label: str, entry: dict[str, Any], unit: str) -> str:
    spread = f"{format_number(entry['min'], unit)} - {format_number(entry['max'], unit)}" if entry["n"] else "-"
    return f"| {label} | {format_number(entry['median'], unit)} | {spread} | {entry['target'] or ''} | {_status(entry)} |"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write `<stamp>.json` and `<stamp>.md` plus `latest.json` / `latest.md` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "").replace("-", "").replace(" ", "-")
    text = markdown(report)
    document = json.dumps(report, indent=2, sort_keys=True, default=str)
    json_path, md_path = out_dir / f"{stamp}.json", out_dir / f"{stamp}.md"
    for path, content in ((json_path, document), (md_path, text), (out_dir / "latest.json", document),
                          (out_dir / "latest.md", text)):
        path.write_text(content + "\n", encoding="utf-8")
    return json_path, md_path


def run_all(
    benchmarks: Sequence[Benchmark], repetitions: int, size: str, command: str,
    log: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    """Run every benchmark in turn and assemble the report (JSON-ready)."""
    report: dict[str, Any] = {
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "size": size,
        "repetitions": repetitions,
        "environment": environment(),
        "benchmarks": {},
    }
    started = time.monotonic()
    for bench in benchmarks:
        log(f"{bench.name}: {bench.title}")
        report["benchmarks"][bench.name] = run_benchmark(bench, repetitions, size, log)
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


# -- the OTLP/HTTP sink -------------------------------------------------------------------------------------------


class _SinkState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records = 0
        self.requests = 0
        self.first_keys: list[str] = []


def serve_sink(port: int = 0) -> None:
    """An OTLP/HTTP logs receiver on 127.0.0.1 that decodes each request with opentelemetry-proto and counts records.

    Prints `SINK-PORT <port>` once listening; `GET /count` answers {"records", "requests", "first_attribute_keys"}.
    """
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    state = _SinkState()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = ExportLogsServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception as exc:  # noqa: BLE001 - a body that does not decode is the client's fault
                self._answer(400, json.dumps({"message": f"not an ExportLogsServiceRequest: {exc}"}).encode(),
                             "application/json")
                return
            count = 0
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    count += len(scope_logs.log_records)
            with state.lock:
                if not state.first_keys and count:
                    first = request.resource_logs[0].scope_logs[0].log_records[0]
                    state.first_keys = sorted(kv.key for kv in first.attributes)
                state.records += count
                state.requests += 1
            self._answer(200, b"", "application/x-protobuf")

        def do_GET(self) -> None:
            with state.lock:
                payload = {"records": state.records, "requests": state.requests,
                           "first_attribute_keys": state.first_keys}
            self._answer(200, json.dumps(payload).encode(), "application/json")

        def _answer(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"SINK-PORT {server.server_address[1]}", flush=True)
    threading.Thread(target=_exit_when_parent_closes_stdin, args=(server,), daemon=True).start()
    server.serve_forever()


def _exit_when_parent_closes_stdin(server: ThreadingHTTPServer) -> None:
    sys.stdin.read()
    server.shutdown()


@dataclass
class Sink:
    """A running sink process: export to `endpoint`, read `count()`."""

    process: subprocess.Popen[str]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/logs"

    def status(self) -> dict[str, Any]:
        with urlopen(f"http://127.0.0.1:{self.port}/count", timeout=10) as response:
            return json.loads(response.read())

    def count(self) -> int:
        return int(self.status()["records"])


@contextmanager
def sink_process(start_timeout: float = 30.0) -> Iterator[Sink]:
    """Start the sink in its own process; stop it on exit (its stdin closes, then terminate as a fallback)."""
    process = subprocess.Popen(
        python_command("-m", "benchmarks.harness", "sink"), cwd=REPO_ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )
    try:
        port = _read_port(process, start_timeout)
        yield Sink(process, port)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(5)


def _read_port(process: subprocess.Popen[str], timeout: float) -> int:
    found: list[int] = []

    def read() -> None:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.startswith("SINK-PORT "):
            found.append(int(line.split()[1]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        process.kill()
        raise RuntimeError(f"the OTLP sink did not start within {timeout} s")
    return found[0]


if __name__ == "__main__":
    if sys.argv[1:] == ["sink"]:
        serve_sink()
    else:
        sys.exit("usage: python -m benchmarks.harness sink")
