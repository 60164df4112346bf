"""`python -m benchmarks [--quick] [--only NAME] [--out DIR]`: every benchmark, side by side with stock OpenTelemetry.

Writes `<date>.json` and `<date>.md` (plus `latest.*`) into benchmarks/results/. Each figure is the median of at
least 5 interleaved repetitions in fresh processes, with min and max; each comparison is a ratio within one
repetition. Benchmark scripts of other areas are run as they are and read with a parser of their own; a script
not written yet shows as "not measured yet".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import shlex
import sys
from pathlib import Path

from benchmarks import bench_e2e, bench_emit
from benchmarks.harness import (
    BENCHMARKS_DIR,
    MIN_REPETITIONS,
    SIZES,
    Benchmark,
    Figure,
    Metrics,
    Ratio,
    Target,
    parse_any,
    python_command,
    run_all,
    write_report,
)

RUN = "run"  # the single variant of a script that measures both sides itself


def _script(name: str) -> Path:
    return BENCHMARKS_DIR / name


def _missing(name: str) -> str | None:
    return None if _script(name).exists() else f"benchmarks/{name} is not written yet"


_PROCESSOR_LINE = re.compile(r"^(?P<name>\S.*?)\s+median\s+(?P<value>\d+(?:\.\d+)?)\s+ns/event")
_ADVERSARIAL_LINE = re.compile(r"^(?P<name>adversarial .*?)\s+(?P<value>\d+(?:\.\d+)?)\s+ms\b")


def parse_processors(stdout: str) -> Metrics:
    """bench_processors.py prints `<chain>  median <n> ns/event (...)` per chain (and for the stock SDK reference),
    then `adversarial 4 KiB value, <detector>  <n> ms` lines."""
    metrics: Metrics = {}
    for line in stdout.splitlines():
        match = _PROCESSOR_LINE.match(line) or _ADVERSARIAL_LINE.match(line)
        if match:
            metrics[re.sub(r"\s+", " ", match["name"].strip())] = float(match["value"])
    adversarial = [value for name, value in metrics.items() if name.startswith("adversarial ")]
    if adversarial:
        metrics["adversarial worst"] = max(adversarial)
    return metrics or parse_any(stdout)


STOCK_REFERENCE = "reference: stock SDK Logger.emit"

PROCESSORS = Benchmark(
    name="processors",
    title="2. Filter + redaction cost per event (benchmarks/bench_processors.py)",
    variants=(RUN,),
    command=lambda variant, size: python_command(
        str(_script("bench_processors.py")),
        "--events", {"smoke": "2000", "quick": "5000", "full": "50000"}[size],
        "--repeat", {"smoke": "1", "quick": "1", "full": "3"}[size],
        "--clock", "cpu",
    ),
    parse=parse_processors,
    figures=(
        Figure("filter + redaction (default chain)", RUN, "filter + redaction", "ns/event",
               Target("<= 3,000 ns (issue 3)", "<=", 3000.0)),
        Figure("filter only", RUN, "filter only", "ns/event"),
        Figure("filter + redaction with email/phone detectors", RUN, "filter + redaction (+email/phone)", "ns/event"),
        Figure("filter + redaction + pseudonyms", RUN, "filter + redaction + pseudonyms", "ns/event"),
        Figure("stock SDK Logger.emit, same records (reference)", RUN, STOCK_REFERENCE, "ns/event"),
        Figure("adversarial 4 KiB value, worst detector", RUN, "adversarial worst", "ms"),
    ),
    ratios=(
        Ratio("filter + redaction / stock SDK Logger.emit", (RUN, "filter + redaction"), (RUN, STOCK_REFERENCE)),
    ),
    timeout=lambda size: {"smoke": 60.0, "quick": 60.0, "full": 300.0}[size],
    unavailable=lambda: _missing("bench_processors.py"),
    note="Pre-built SDK records through the chain ending in a no-op stage, timed with the thread's CPU clock; "
    "one process per repetition.",
)


def describe_delivery(key: str) -> tuple[str, Target | None] | None:
    """Unit and target of a figure bench_delivery.py prints (its `ratio_*` figures are computed within one run)."""
    if key == "cpus":
        return None
    if key.startswith("ratio_"):
        if key.startswith("ratio_audit_emit") or key == "ratio_emit_event_vs_stock":
            return "x", Target("<= 0.25x", "<=", 0.25)
        if key.startswith("ratio_cpu"):
            return "x", Target("<= 0.2x", "<=", 0.2)
        if key.startswith("ratio_export"):
            return "x", Target(">= 5x", ">=", 5.0)
        return "x", None
    if key.endswith("_burst_lost"):
        return "events", Target("0", "<=", 0.0) if key.startswith("disk") else None
    if key.endswith("_us_per_event"):
        return "us/event", None
    if key.endswith("_us"):
        return "us", None
    if key.endswith("_per_s"):
        return "events/s", None
    return "", None


DELIVERY = Benchmark(
    name="delivery",
    title="Delivery detail (benchmarks/bench_delivery.py: stock SDK vs otel-audit delivery stage, same process)",
    variants=(RUN,),
    command=lambda variant, size: python_command(
        str(_script("bench_delivery.py")), "--json", *(() if size == "full" else ("--quick",))
    ),
    parse=parse_any,
    describe=describe_delivery,
    timeout=lambda size: {"smoke": 120.0, "quick": 120.0, "full": 900.0}[size],
    unavailable=lambda: _missing("bench_delivery.py"),
    sizes=("smoke", "full"),
    note="Every figure the delivery area's script prints, as it names them: both sides in one process per "
    "repetition (its `ratio_*` figures are computed within that process), one identical event repeated, handed to "
    "the SDK Logger / the delivery stage.",
)

FASTAPI = Benchmark(
    name="fastapi",
    title="6. FastAPI requests/second: plain, + otel-audit middleware, + stock ASGI + SDK log, + FastAPIInstrumentor "
    "(benchmarks/bench_fastapi.py)",
    variants=(RUN,),
    command=lambda variant, size: [],
    unavailable=lambda: _missing("bench_fastapi.py") or "bench_fastapi.py defines no BENCHMARK for the harness",
)

_STORE_SECTION = re.compile(r"^== (?P<backend>\w+): (?P<what>loading|search|OTLP/HTTP ingest)(?: (?P<events>[\d,]+) events)?")
_STORE_RATE = re.compile(r"^\s+(?P<name>\S.*?)\s+(?P<value>[\d,]+(?:\.\d+)?)\s*$")
_STORE_SEARCH = re.compile(
    r"^\s+(?P<name>\S.*?)\s+(?P<p50>\d+\.\d+)\s+(?P<p95>\d+\.\d+)\s+(?P<max>\d+\.\d+)\s+(?P<rows>\d+)\s*$"
)
# bench_store.py's rate lines by what they start with (it adds clock notes like "(wall)" after the name).
_STORE_CANONICAL = (
    ("decode+map+insert ev/s", "ingest ev/s"),
    ("storage insert ev/s", "storage insert ev/s"),
    ("insert ev/s (per CPU", "insert ev/s per CPU second"),
    ("2 threads,", "ingest ev/s (2 threads)"),
)
_STORE_HTTP = re.compile(r"^(?:.*?--workers (?P<workers>\d+))?.*:\s*(?P<value>[\d,]+) ev/s\s*$")


def parse_store(stdout: str) -> Metrics:
    """bench_store.py prints `== <backend>: ...` sections: ingest rates, a search table (p50/p95/max ms), HTTP ingest.

    Keys: `<backend> storage insert ev/s`, `<backend> search p95 ms (worst indexed filter)`, `<backend> search p95 ms:
    <filter>`, `<backend> OTLP/HTTP ingest ev/s (workers N)` per server configuration measured, and `<backend>
    OTLP/HTTP ingest ev/s`, the best of those (the one a deployment would choose).
    """
    metrics: Metrics = {}
    backend, section = "", ""
    worst: dict[str, float] = {}
    for line in stdout.splitlines():
        header = _STORE_SECTION.match(line)
        if header:
            backend, section = header["backend"], header["what"]
            if section == "loading" and header["events"]:
                metrics[f"{backend} events stored"] = float(header["events"].replace(",", ""))
            if section == "OTLP/HTTP ingest":
                rate = _STORE_HTTP.search(line)
                if rate:
                    value = float(rate["value"].replace(",", ""))
                    if rate["workers"]:
                        metrics[f"{backend} OTLP/HTTP ingest ev/s (workers {rate['workers']})"] = value
                    best = f"{backend} OTLP/HTTP ingest ev/s"
                    metrics[best] = max(metrics.get(best, 0.0), value)
            continue
        if section == "loading":
            match = _STORE_RATE.match(line)
            if match:
                name = re.sub(r"\s+", " ", match["name"])
                value = float(match["value"].replace(",", ""))
                metrics[f"{backend} {name}"] = value
                for prefix, canonical in _STORE_CANONICAL:
                    if name.startswith(prefix):
                        metrics[f"{backend} {canonical}"] = value
        elif section == "search":
            match = _STORE_SEARCH.match(line)
            if match:
                p95 = float(match["p95"])
                metrics[f"{backend} search p95 ms: {match['name']}"] = p95
                metrics[f"{backend} search p50 ms: {match['name']}"] = float(match["p50"])
                if "not indexed" not in match["name"]:
                    worst[backend] = max(worst.get(backend, 0.0), p95)
    for name, value in worst.items():
        metrics[f"{name} search p95 ms (worst indexed filter)"] = value
        if metrics.get(f"{name} events stored", 0) >= 1_000_000:
            metrics[f"{name} search p95 ms at 1M events (worst indexed filter)"] = value
    if not metrics:
        return parse_any(stdout)
    return metrics


STORE_EVENTS = {"smoke": "2000", "quick": "10000", "full": "1000000"}

STORE = Benchmark(
    name="store",
    title="7. Store ingest and search (benchmarks/bench_store.py)",
    variants=(RUN,),
    command=lambda variant, size: python_command(
        str(_script("bench_store.py")), "--events", STORE_EVENTS[size],
        "--backend", "sqlite" if size == "quick" else "both",
        "--rounds", {"smoke": "10", "quick": "20", "full": "200"}[size],
        "--http", {"smoke": "0", "quick": "0", "full": "51200"}[size],
    ),
    parse=parse_store,
    figures=tuple(
        figure
        for backend in ("sqlite", "postgresql")
        for figure in (
            # The store ingests with concurrent request threads; the serial figure (one thread, a core idle
            # while the database works) stays as a diagnostic.
            Figure(f"{backend}: ingest in process, 2 threads (decode + map + submit until stored)", RUN,
                   f"{backend} ingest ev/s (2 threads)", "events/s", Target(">= 30,000 events/s", ">=", 30_000.0)),
            Figure(f"{backend}: ingest in process, one thread (decode + map + insert)", RUN, f"{backend} ingest ev/s",
                   "events/s"),
            Figure(f"{backend}: storage insert alone", RUN, f"{backend} storage insert ev/s", "events/s"),
            Figure(f"{backend}: storage insert per CPU second of the benchmark process", RUN,
                   f"{backend} insert ev/s per CPU second", "events/s"),
            Figure(f"{backend}: OTLP/HTTP ingest through otel-audit serve (the better of --workers 1 and 2)", RUN,
                   f"{backend} OTLP/HTTP ingest ev/s", "events/s", Target(">= 30,000 events/s", ">=", 30_000.0)),
            *(
                Figure(f"{backend}: OTLP/HTTP ingest, --workers {workers} ({2 * workers} clients)", RUN,
                       f"{backend} OTLP/HTTP ingest ev/s (workers {workers})", "events/s")
                for workers in (1, 2)
            ),
            Figure(f"{backend}: search p95 at 1,000,000 events, worst indexed filter", RUN,
                   f"{backend} search p95 ms at 1M events (worst indexed filter)", "ms",
                   Target("<= 50 ms", "<=", 50.0)),
            Figure(f"{backend}: search p95 at the events stored in this run, worst indexed filter", RUN,
                   f"{backend} search p95 ms (worst indexed filter)", "ms"),
            Figure(f"{backend}: events stored", RUN, f"{backend} events stored", "events"),
        )
    ),
    timeout=lambda size: {"smoke": 180.0, "quick": 180.0, "full": 3600.0}[size],
    unavailable=lambda: _missing("bench_store.py"),
    note="Events stored per run: quick 10,000, full 1,000,000; the search target applies at 1,000,000 "
    "events (full run). PostgreSQL (a throwaway cluster started per run) and OTLP/HTTP ingest through "
    "`otel-audit serve` are measured in the full run only.",
)


def own_benchmark(module: str, fallback: Benchmark) -> Benchmark:
    """The BENCHMARK a script of another area declares for this harness, else the adapter written for it here."""
    path = _script(f"{module}.py")
    if not path.exists() or not re.search(r"^BENCHMARK\s*[:=]", path.read_text(encoding="utf-8"), re.MULTILINE):
        return fallback
    try:
        declared = importlib.import_module(f"benchmarks.{module}").BENCHMARK
    except Exception as exc:  # noqa: BLE001 - a broken script must not stop the other benchmarks
        reason = f"benchmarks/{module}.py does not import: {type(exc).__name__}: {exc}"
        return dataclasses.replace(fallback, unavailable=lambda: reason)
    return dataclasses.replace(declared, name=fallback.name, title=fallback.title)


def shortened(bench: Benchmark, size: str, leave_out: tuple[str, ...], note: str) -> Benchmark:
    """`bench` as a --quick run measures it: at `size` instead of quick, without the variants in `leave_out`."""
    variants = tuple(variant for variant in bench.variants if variant not in leave_out)
    return dataclasses.replace(
        bench,
        variants=variants,
        command=lambda variant, asked: bench.command(variant, size if asked == "quick" else asked),
        timeout=lambda asked: bench.timeout(size if asked == "quick" else asked),
        note=" ".join(filter(None, (bench.note, note))),
    )


def registry(size: str = "full") -> tuple[Benchmark, ...]:
    """Every benchmark, in the order of the issue's figures, as a run of `size` measures them."""
    fastapi = own_benchmark("bench_fastapi", FASTAPI)
    if size == "quick" and fastapi.unavailable() is None:
        fastapi = shortened(fastapi, "smoke", ("otel-audit, no event",),
                            "A --quick run measures 2 s per variant and leaves out the `otel-audit, no event` variant.")
        # Fixed-duration load runs: 4 variants x 5 repetitions x ~5 s would not fit --quick's 2 minutes.
        fastapi = dataclasses.replace(fastapi, sizes=("smoke", "full"))
    return (
        bench_emit.BENCHMARK,
        own_benchmark("bench_processors", PROCESSORS),
        bench_e2e.BENCHMARK,
        own_benchmark("bench_delivery", DELIVERY),
        fastapi,
        own_benchmark("bench_store", STORE),
    )


def main(argv: list[str] | None = None) -> int:
    names = [bench.name for bench in registry()]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (under 2 minutes on 2 idle cores)")
    parser.add_argument("--only", action="append", choices=names, metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(names)}")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_DIR / "results", help="where results are written")
    parser.add_argument("--repetitions", type=int, default=MIN_REPETITIONS,
                        help=f"repetitions per figure (at least {MIN_REPETITIONS} for published figures)")
    parser.add_argument("--size", choices=("smoke", "quick", "full"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("--repetitions: must be at least 1")
    size = args.size or ("quick" if args.quick else "full")
    selected = [bench for bench in registry(size) if not args.only or bench.name in args.only]
    if args.only:  # named explicitly: measured at any size
        selected = [dataclasses.replace(bench, sizes=SIZES) for bench in selected]
    command = shlex.join(["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])])
    report = run_all(selected, args.repetitions, size, command, log=lambda text: print(text, file=sys.stderr))
    json_path, md_path = write_report(report, args.out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"written: {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
