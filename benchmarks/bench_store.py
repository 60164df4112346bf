"""Store benchmarks: ingest rate (mapping, storage, full OTLP/HTTP) and search latency per indexed filter.

    python benchmarks/bench_store.py --events 1000000 --backend both
    python benchmarks/bench_store.py --events 200000 --backend sqlite --http

Storage ingest decodes (the store's own decoder, compiled when built) and inserts OTLP-sized batches (512 records,
one transaction each) of realistic audit records, then up to 51,200 more (at most a quarter of the load) by two
threads at once, as concurrent
requests are (SQLite then writes concurrent batches in one transaction); search
runs each filter with random values against the loaded database and reports p50/p95/max. PostgreSQL runs on a
throwaway cluster with durable settings (fsync on); SQLite uses WAL with synchronous=FULL.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from store.helpers import audit_attributes, build_request, free_port  # noqa: E402

from otel_audit import semconv  # noqa: E402
from otel_audit.store import EventQuery, Storage, open_storage  # noqa: E402
from otel_audit.store.app import tune_server_gc  # noqa: E402
from otel_audit.store.otlp import PROTOBUF, ingest_request  # noqa: E402
from otel_audit.store.pgcluster import PostgresCluster  # noqa: E402

ACTIONS = [f"{area}.{verb}" for area in ("user", "document", "folder", "billing", "admin", "api_key", "team",
                                          "project", "invoice", "report")
           for verb in ("create", "read", "update", "delete", "share")]
OUTCOMES = ["success"] * 90 + ["failure"] * 6 + ["denied"] * 3 + ["unknown"]
RESOURCE_TYPES = ["document", "folder", "invoice", "project", "report", "team", "user", "api_key"]
START_NS = 1_767_225_600 * 10**9  # 2026-01-01
SPAN_NS = 90 * 86_400 * 10**9  # events spread over 90 days
TENANTS = ["acme"] * 9 + ["globex"]
BATCH = 512


def make_records(rng: random.Random, count: int, start_ns: int = START_NS, step_ns: int = 10**6) -> tuple[list[dict[str, Any]], list[int]]:
    """`count` realistic audit records; timestamps advance by `step_ns` with a few seconds of jitter, as events
    emitted "now" and delivered within seconds do."""
    records, times = [], []
    for index in range(count):
        resource_type = rng.choice(RESOURCE_TYPES)
        records.append(audit_attributes(
            rng.choice(ACTIONS),
            **{
                semconv.AUDIT_OUTCOME: rng.choice(OUTCOMES),
                semconv.USER_ID: f"user-{rng.randrange(2000)}",
                semconv.USER_EMAIL: None,
                semconv.AUDIT_RESOURCE_TYPE: resource_type,
                semconv.AUDIT_RESOURCE_ID: f"{resource_type}-{rng.randrange(200_000) if rng.random() < 0.9 else rng.randrange(20)}",
                semconv.CLIENT_ADDRESS: f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                semconv.USER_AGENT_ORIGINAL: "Mozilla/5.0 (X11; Linux x86_64) bench",
                semconv.AUDIT_REQUEST_ID: f"req-{rng.getrandbits(48):012x}",
                semconv.HTTP_REQUEST_METHOD: "POST",
                semconv.HTTP_ROUTE: "/api/v1/things/{id}",
                semconv.HTTP_RESPONSE_STATUS_CODE: 200,
                semconv.AUDIT_METADATA: {"plan": rng.choice(["free", "pro", "enterprise"]), "items": rng.randrange(100),
                                         "tags": ["a", "b"]},
            },
        ))
        times.append(start_ns + index * step_ns + rng.randrange(-5 * 10**9, 5 * 10**9))
    return records, times


def load(storage: Storage, total: int, seed: int = 1) -> dict[str, float]:
    """Insert `total` events batch by batch; return mapping and storage rates (events/s)."""
    rng = random.Random(seed)
    step = SPAN_NS // total
    map_seconds = insert_seconds = map_cpu = insert_cpu = 0.0
    done = 0
    next_report = time.monotonic() + 10
    while done < total:
        size = min(BATCH, total - done)
        records, times = make_records(rng, size, START_NS + done * step, step)
        tenant = rng.choice(TENANTS)
        request = build_request(records, times=times)
        body = request.SerializeToString()
        started, started_cpu = time.perf_counter(), time.process_time()
        batch = ingest_request(body, PROTOBUF, tenant)
        mapped, mapped_cpu = time.perf_counter(), time.process_time()
        stored = storage.insert_events(batch.events)
        insert_seconds += time.perf_counter() - mapped
        insert_cpu += time.process_time() - mapped_cpu
        map_seconds += mapped - started
        map_cpu += mapped_cpu - started_cpu
        assert len(stored) == size, (len(stored), batch.reasons)
        done += size
        if time.monotonic() > next_report:
            print(f"  loaded {done:,} / {total:,} (storage {done / insert_seconds:,.0f} ev/s)", flush=True)
            next_report = time.monotonic() + 10
    return {
        "decode+map ev/s (wall)": total / map_seconds,
        "decode+map ev/s (per CPU s)": total / map_cpu,
        "storage insert ev/s (wall)": total / insert_seconds,
        "insert ev/s (per CPU s here)": total / insert_cpu,
        "decode+map+insert ev/s (wall)": total / (map_seconds + insert_seconds),
    }


def concurrent_ingest(storage: Storage, total: int, threads: int = 2, seed: int = 4) -> float:
    """Decode + map + submit of `total` events (after `load`) by `threads` threads taking OTLP bodies from one
    queue, as the app's request threads do, until all are stored; events/s (wall). Bodies are built beforehand,
    untimed. The cyclic garbage collector runs with the thresholds `otel-audit serve` sets (store.app.
    tune_server_gc), as in the app's process."""
    rng = random.Random(seed)
    start = START_NS + SPAN_NS
    step = SPAN_NS // max(total, 1)
    bodies = []
    for offset in range(0, total, BATCH):
        records, times = make_records(rng, BATCH, start + offset * step, step)
        bodies.append((rng.choice(TENANTS), build_request(records, times=times).SerializeToString()))
    work = iter(bodies)
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                item = next(work, None)
            if item is None:
                return
            batch = ingest_request(item[1], PROTOBUF, item[0])
            storage.submit_events(batch.events)

    def count(tenant_id: str, stored: list[Any], duplicates: int) -> None:
        with lock:
            totals[0] += len(stored)
            totals[1] += duplicates

    totals = [0, 0]
    storage.add_stored_listener(count)
    thresholds = gc.get_threshold()
    tune_server_gc()
    try:
        started = time.perf_counter()
        run_threads([threading.Thread(target=run) for _ in range(threads)])
        storage.settle()  # SQLite: until every journaled batch is merged into the indexed table
        elapsed = time.perf_counter() - started
    finally:
        gc.set_threshold(*thresholds)
    storage.remove_stored_listener(count)
    if totals != [len(bodies) * BATCH, 0]:
        raise RuntimeError(f"stored {totals[0]} and skipped {totals[1]} of {len(bodies) * BATCH} events")
    return len(bodies) * BATCH / elapsed


def run_threads(threads: list[threading.Thread]) -> None:
    """Start the threads and wait for all of them (the callers time this and what must follow it)."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def search_latencies(storage: Storage, rounds: int, seed: int = 2) -> dict[str, tuple[float, float, float, int]]:
    """p50/p95/max milliseconds and mean result count of each filter (page size 50, newest first)."""
    rng = random.Random(seed)

    def window() -> dict[str, str]:
        start = START_NS + rng.randrange(SPAN_NS)
        return {"since": str(start), "until": str(start + 3600 * 10**9)}

    filters = {
        "newest page (no filter)": lambda: {},
        "action (exact)": lambda: {"action": rng.choice(ACTIONS)},
        "action (prefix user.*)": lambda: {"action": rng.choice(ACTIONS).split(".")[0] + ".*"},
        "actor_id": lambda: {"actor_id": f"user-{rng.randrange(2000)}"},
        "resource_type": lambda: {"resource_type": rng.choice(RESOURCE_TYPES)},
        "resource_id": lambda: {"resource_id": f"document-{rng.randrange(200_000)}"},
        "resource_type+resource_id": lambda: {"resource_type": "document",
                                              "resource_id": f"document-{rng.randrange(200_000)}"},
        "resource_id (busy: 20 ids)": lambda: {"resource_id": f"document-{rng.randrange(20)}"},
        "outcome=failure": lambda: {"outcome": "failure"},
        "outcome=denied + 1h window": lambda: {"outcome": "denied", **window()},
        "time range (1 h)": window,
        "actor_id + action": lambda: {"actor_id": f"user-{rng.randrange(2000)}", "action": rng.choice(ACTIONS)},
        "page 5 via cursor (actor_id)": None,
        "free text q (not indexed)": lambda: {"q": rng.choice(["enterprise", "zzz-absent"])},
    }
    results = {}
    for name, make in filters.items():
        latencies, counts = [], []
        runs = rounds if "free text" not in name else max(rounds // 10, 5)
        for _ in range(runs):
            if make is None:
                query = EventQuery.from_params({"actor_id": f"user-{rng.randrange(2000)}", "limit": "50"})
                started = time.perf_counter()
                for _page in range(5):
                    page = storage.search("acme", query)
                    if page.next_cursor is None:
                        break
                    query = query.with_cursor(page.next_cursor)
            else:
                query = EventQuery.from_params({**make(), "limit": "50"})
                started = time.perf_counter()
                page = storage.search("acme", query)
            latencies.append((time.perf_counter() - started) * 1000)
            counts.append(len(page.events))
        latencies.sort()
        p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        results[name] = (statistics.median(latencies), p95, latencies[-1], int(statistics.mean(counts)))
    return results


def http_ingest(db_url: str, total: int, clients: int = 2, workers: int = 1) -> float:
    """Full path: `otel-audit serve` subprocess, `clients` threads POSTing protobuf batches of 512 (each on one
    kept-alive connection); events/s."""
    import httpx

    port = free_port()
    key = "bench-dev-key-0123456789"
    cli = str(Path(sys.executable).with_name("otel-audit"))
    server = subprocess.Popen([cli, "serve", "--db", db_url, "--port", str(port), "--dev-key", f"{key}:acme",
                               "--workers", str(workers)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("otel-audit serve did not become ready")
            time.sleep(0.1)
        rng = random.Random(3)
        bodies = []
        for _ in range(max(1, total // BATCH)):
            records, times = make_records(rng, BATCH, time.time_ns())
            bodies.append(build_request(records, times=times).SerializeToString())
        errors: list[str] = []

        def send(chunk: list[bytes]) -> None:
            # http.client on one kept-alive connection, as the library's exporter sends (httpx took 4-5 us of the
            # two shared cores per event, about a tenth of what the server spends)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            headers = {"authorization": f"Bearer {key}", "content-type": "application/x-protobuf"}
            try:
                for body in chunk:
                    connection.request("POST", "/v1/logs", body=body, headers=headers)
                    response = connection.getresponse()
                    content = response.read()
                    if response.status != 200 or content:
                        errors.append(f"{response.status} {content[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
            finally:
                connection.close()

        def settled() -> None:
            # A read answers once every accepted event is stored and indexed (SQLite merges its ingest journal
            # first), so the time includes indexing the last batches.
            response = httpx.get(f"{url}/v1/events", params={"limit": "1"}, headers={"authorization": f"Bearer {key}"},
                                 timeout=120)
            if response.status_code != 200:
                errors.append(f"search: {response.status_code} {response.content[:200]!r}")

        started = time.perf_counter()
        run_threads([threading.Thread(target=send, args=(bodies[index::clients],)) for index in range(clients)])
        settled()
        elapsed = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
        stats = httpx.get(f"{url}/v1/stats", headers={"authorization": f"Bearer {key}"}, timeout=120).json()["ingest"]
        if workers == 1 and stats["stored"] != len(bodies) * BATCH:
            raise RuntimeError(f"stored {stats['stored']} of {len(bodies) * BATCH} events: {stats}")
        return len(bodies) * BATCH / elapsed
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(backend: str, events: int, rounds: int, http: int, concurrent: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        cluster = None
        if backend == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        else:
            cluster = PostgresCluster(durable=True).start()
            url = cluster.url
        try:
            print(f"\n== {backend}: loading {events:,} events in batches of {BATCH}", flush=True)
            storage = open_storage(url)
            rates = load(storage, events)
            for name, value in rates.items():
                print(f"  {name:<28} {value:>12,.0f}")
            if concurrent:
                rate = concurrent_ingest(storage, concurrent)
                print(f"  2 threads, {concurrent:,} more events: decode+map+submit until stored ev/s (wall) {rate:>12,.0f}")
            if backend == "postgresql":
                with storage.transaction() as conn:
                    conn.execute("ANALYZE events")
            print(f"   (load average now {os.getloadavg()[0]:.1f})")
            print(f"== {backend}: search at {events:,} events ({rounds} queries per filter, page size 50)")
            print(f"  {'filter':<32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'rows':>6}")
            for name, (p50, p95, worst, rows) in search_latencies(storage, rounds).items():
                print(f"  {name:<32} {p50:>8.2f} {p95:>8.2f} {worst:>8.2f} {rows:>6}")
            storage.close()
            for workers in (1, 2) if http else ():
                rate = http_ingest(url, http, clients=2 * workers, workers=workers)
                print(f"== {backend}: OTLP/HTTP ingest through `otel-audit serve --workers {workers}` "
                      f"({2 * workers} clients, protobuf, 512/batch, load average {os.getloadavg()[0]:.1f}): "
                      f"{rate:,.0f} ev/s", flush=True)
        finally:
            if cluster is not None:
                cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events to load (default 200,000)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=200, help="queries per search filter")
    parser.add_argument("--http", type=int, default=51_200, metavar="N",
                        help="also measure OTLP/HTTP ingest with N events (0: skip)")
    parser.add_argument("--concurrent", type=int, metavar="N",
                        help="after loading, N more events ingested by 2 threads (default: a quarter of --events, at "
                             "most 51,200; 0: skip)")
    args = parser.parse_args()
    concurrent = min(args.events // 4, 51_200) if args.concurrent is None else args.concurrent
    print(f"bench_store: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for backend in (["sqlite", "postgresql"] if args.backend == "both" else [args.backend]):
        run(backend, args.events, args.rounds, args.http, concurrent)


if __name__ == "__main__":
    main()
