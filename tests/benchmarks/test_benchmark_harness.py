"""The benchmark harness on a tiny configuration: real processes, a real sink, real pipelines; structure, not timings."""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks import bench_e2e, bench_emit
from benchmarks.__main__ import parse_processors, parse_store
from benchmarks.harness import (
    REPO_ROOT,
    Benchmark,
    Figure,
    Ratio,
    Target,
    markdown,
    parse_any,
    python_command,
    rotated,
    run_all,
    run_benchmark,
    write_report,
)
from otel_audit import semconv
from otel_audit.testing import OTLPReceiver

pytestmark = pytest.mark.timeout(300)


def test_rotated_order_interleaves_every_variant_once_per_repetition() -> None:
    variants = ("a", "b", "c")
    orders = [rotated(variants, repetition) for repetition in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_emit_benchmark_ratios_are_computed_within_each_repetition() -> None:
    bench = dataclasses.replace(
        bench_emit.BENCHMARK,
        variants=("otel-audit disk", "stock SDK"),
        figures=tuple(f for f in bench_emit.BENCHMARK.figures if f.variant in ("otel-audit disk", "stock SDK")),
        ratios=bench_emit.BENCHMARK.ratios[:2],
    )
    order: list[str] = []
    result = run_benchmark(bench, repetitions=2, size="smoke", log=order.append)

    assert result["status"] == "measured", result["errors"]
    assert [line.rsplit(": ", 1)[1] for line in order] == ["otel-audit disk", "stock SDK", "stock SDK",
                                                            "otel-audit disk"]
    disk, stock = result["samples"]["otel-audit disk"], result["samples"]["stock SDK"]
    assert len(disk) == len(stock) == 2
    for run in disk + stock:
        assert run["received"] == run["emitted"] > 0  # the sink decoded and counted every record
        assert run["dropped"] == 0
    for ratio, metric in zip(result["ratios"], ("us_per_call", "cpu_us_per_call"), strict=True):
        expected = [disk[r][metric] / stock[r][metric] for r in range(2)]
        assert ratio["values"] == pytest.approx(expected)
        assert ratio["median"] == pytest.approx(statistics.median(expected))
        assert (ratio["min"], ratio["max"]) == (min(expected), max(expected))
        assert ratio["met"] == (ratio["median"] <= 0.25)
    figure = result["figures"][0]
    assert figure["values"] == [run["us_per_call"] for run in result["samples"][figure["variant"]]]


def test_e2e_benchmark_counts_what_the_sink_acknowledged() -> None:
    bench = dataclasses.replace(bench_e2e.BENCHMARK, ratios=bench_e2e.BENCHMARK.ratios[:1])
    result = run_benchmark(bench, repetitions=1, size="smoke")

    assert result["status"] == "measured", result["errors"]
    ours, stock = result["samples"]["otel-audit"][0], result["samples"]["stock SDK"][0]
    for run in (ours, stock):
        assert run["cpu_events_acknowledged"] == run["cpu_events_emitted"] == bench_e2e.CPU_EVENTS["smoke"]
        assert run["burst_emitted"] == bench_e2e.BURST_EVENTS["smoke"]
        assert run["burst_loss_pct"] == pytest.approx(100 * (1 - run["burst_received"] / run["burst_emitted"]))
    assert ours["burst_received"] == ours["burst_emitted"]  # durable delivery loses nothing, whatever the speed
    assert result["ratios"][0]["values"] == [pytest.approx(ours["cpu_us_per_event"] / stock["cpu_us_per_event"])]


def test_both_sides_send_the_same_typical_event(tmp_path: Path) -> None:
    event = bench_emit.typical_events(1)[0]
    received = {}
    for name, make in (
        ("otel-audit", lambda endpoint: bench_emit.OtelAuditEmitter(endpoint, "memory", str(tmp_path))),
        ("stock", bench_emit.StockEmitter),
    ):
        with OTLPReceiver() as receiver:
            emitter = make(receiver.endpoint)
            emitter.emit(event)
            emitter.flush()
            emitter.close()
            (record,) = receiver.wait_for(1, timeout=10)
        received[name] = record

    ours, stock = received["otel-audit"], received["stock"]
    assert ours.event_name == stock.event_name == bench_emit.EVENT_NAME
    assert ours.severity_number == stock.severity_number
    assert len(ours.attributes) == 11 and len(ours.attributes[semconv.AUDIT_METADATA]) == 5
    uid = semconv.LOG_RECORD_UID
    assert ours.attributes[uid] != stock.attributes[uid]
    assert {k: v for k, v in ours.attributes.items() if k != uid} == {
        k: v for k, v in stock.attributes.items() if k != uid
    }


def test_failures_and_missing_scripts_are_reported_not_invented(tmp_path: Path) -> None:
    crashing = Benchmark(
        name="crash",
        title="a benchmark whose process fails",
        variants=("a", "b"),
        command=lambda variant, size: python_command("-c", "import sys; sys.exit('boom')")
        if variant == "a"
        else python_command("-c", "print('BENCH-RESULT {\"x\": 4.0}')"),
        figures=(Figure("x of b", "b", "x", "us"),),
        ratios=(Ratio("a / b", ("a", "x"), ("b", "x"), Target("<= 1x", "<=", 1.0)),),
    )
    missing = Benchmark(name="later", title="not written", variants=("run",), command=lambda v, s: [],
                        unavailable=lambda: "benchmarks/bench_later.py is not written yet")
    full_only = dataclasses.replace(missing, name="long", unavailable=lambda: None, sizes=("full",))
    report = run_all([crashing, missing, full_only], repetitions=2, size="smoke", command="test")
    crash = report["benchmarks"]["crash"]
    assert crash["status"] == "measured with errors"
    assert [error["variant"] for error in crash["errors"]] == ["a", "a"]
    assert "boom" in crash["errors"][0]["error"]
    assert crash["ratios"][0]["n"] == 0 and crash["ratios"][0]["median"] is None and crash["ratios"][0]["met"] is None
    assert crash["figures"][0]["values"] == [4.0, 4.0]
    assert report["benchmarks"]["later"]["status"] == "not measured yet"
    assert report["benchmarks"]["long"]["status"] == "not run at this size"

    json_path, md_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["benchmarks"]["crash"]["figures"][0]["median"] == 4.0
    text = md_path.read_text()
    assert text == markdown(report) + "\n" == (tmp_path / "latest.md").read_text()
    assert "| a / b | - | - | <= 1x | not measured in this run |" in text
    assert "| x of b | 4 us | 4 us - 4 us |  | only 2 repetitions |" in text
    assert "Not measured yet: benchmarks/bench_later.py is not written yet." in text
    pins = report["environment"]["stock_pins"]
    assert pins["opentelemetry-sdk"] == report["environment"]["packages"]["opentelemetry-sdk"]
    assert f"stock baseline opentelemetry-sdk {pins['opentelemetry-sdk']} (the project's pin)" in text
    assert "Not run at this size: not part of a smoke run; `python -m benchmarks --only long` measures it." in text


def test_a_process_over_its_time_is_killed_with_what_it_started(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    sleeper = (
        "import subprocess, sys, time; "
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(marker)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    slow = Benchmark(name="slow", title="never finishes", variants=("a",),
                     command=lambda variant, size: python_command("-c", sleeper), timeout=lambda size: 3.0)
    result = run_benchmark(slow, repetitions=1, size="smoke")

    assert result["status"] == "failed"
    assert "timed out" in result["errors"][0]["error"]
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # killed by SIGKILL; its parent (now gone) can't reap it, init does
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]


def test_command_line_runs_a_script_of_another_area_in_fresh_processes(tmp_path: Path) -> None:
    completed = subprocess.run(
        python_command("-m", "benchmarks", "--size", "smoke", "--repetitions", "2", "--only", "processors",
                       "--out", str(tmp_path)),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / "latest.json").read_text())
    result = report["benchmarks"]["processors"]
    assert result["status"] == "measured", result["errors"]
    chain = next(figure for figure in result["figures"] if figure["key"] == "filter + redaction")
    assert chain["n"] == 2 and all(value > 0 for value in chain["values"])
    assert chain["median"] == statistics.median(chain["values"])
    assert "| filter + redaction (default chain) |" in completed.stdout
    assert report["command"].startswith("python -m benchmarks --size smoke")


def test_parsers_read_the_formats_other_scripts_print() -> None:
    assert parse_any('noise\n{\n  "a": 1.5,\n  "b": 2,\n  "name": "x",\n  "flag": true\n}\n') == {"a": 1.5, "b": 2.0}
    assert parse_any("BENCH-RESULT {\"a\": 1}\n") == {"a": 1.0}
    assert parse_processors(
        "filter only   median     720 ns/event (cpu)  (per-repetition medians: 720)\n"
        "adversarial 4 KiB value, email                    1.25 ms (cpu)\n"
        "adversarial 4 KiB value, phone                    3.50 ms (cpu)\n"
    ) == {
        "filter only": 720.0,
        "adversarial 4 KiB value, email": 1.25,
        "adversarial 4 KiB value, phone": 3.5,
        "adversarial worst": 3.5,
    }
    store = parse_store(
        "== sqlite: loading 1,000,000 events in batches of 512\n"
        "  storage insert ev/s (wall)         51,234\n"
        "  decode+map+insert ev/s (wall)      31,000\n"
        "  2 threads, 51,200 more events: decode+map+submit until stored ev/s (wall)       38,500\n"
        "== sqlite: search at 1,000,000 events (200 queries per filter, page size 50)\n"
        "  filter                             p50 ms   p95 ms   max ms   rows\n"
        "  actor_id                             1.00     4.50     9.00     50\n"
        "  free text q (not indexed)           90.00    99.00    99.00      3\n"
        "== sqlite: OTLP/HTTP ingest through `otel-audit serve --workers 1` (2 clients, protobuf, 512/batch): 33,000 ev/s\n"
        "== sqlite: OTLP/HTTP ingest through `otel-audit serve --workers 2` (4 clients, protobuf, 512/batch): 12,500 ev/s\n"
    )
    assert store["sqlite storage insert ev/s"] == store["sqlite storage insert ev/s (wall)"] == 51234.0
    assert store["sqlite ingest ev/s"] == 31000.0  # the serial line, not the two threads' line after it
    assert store["sqlite ingest ev/s (2 threads)"] == 38500.0
    assert store["sqlite search p95 ms (worst indexed filter)"] == 4.5  # the unindexed free-text filter is excluded
    assert store["sqlite search p95 ms at 1M events (worst indexed filter)"] == 4.5
    assert store["sqlite OTLP/HTTP ingest ev/s (workers 1)"] == 33000.0
    assert store["sqlite OTLP/HTTP ingest ev/s (workers 2)"] == 12500.0
    assert store["sqlite OTLP/HTTP ingest ev/s"] == 33000.0  # the better configuration, not the last line
