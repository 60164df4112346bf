"""Two `otel-audit serve` processes on one PostgreSQL ingesting one stream concurrently: one delivery per alert."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from otel_audit import webhook_signature
from otel_audit.store import create_key, open_storage

from .helpers import NS, Api, WebhookReceiver, free_port, login_event, wait_for

DEV_KEY = "alerts-dev-key-0123456789"


@pytest.fixture
def two_stores(new_postgres_database: Callable[[], str], tmp_path) -> Iterator[list[str]]:
    """Two store processes on one fresh PostgreSQL database; their base URLs. A server that does not become
    ready fails the test with its exit status and the end of its log."""
    url = new_postgres_database()
    env = {**os.environ, "OTEL_AUDIT_WEBHOOK_BACKOFF_SECONDS": "0.05", "OTEL_AUDIT_WEBHOOK_MAX_BACKOFF_SECONDS": "0.2"}
    allow_by = [({"OTEL_AUDIT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}, []), ({}, ["--webhook-allow-host", "127.0.0.1"])]
    processes, urls = [], []
    try:
        for index, (extra_env, extra_args) in enumerate(allow_by):
            port = free_port()
            with open(tmp_path / f"serve-{index}.log", "wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "otel_audit.cli", "serve", "--db", url, "--port", str(port),
                     "--dev-key", f"{DEV_KEY}:acme", *extra_args],
                    env={**env, **extra_env}, stdout=subprocess.DEVNULL, stderr=log,
                ))
            urls.append(f"http://127.0.0.1:{port}")
        for index, (base, process) in enumerate(zip(urls, processes)):
            try:
                wait_for(lambda base=base, process=process: process.poll() is not None or _ready(base),
                         f"{base} to be ready", timeout=60, interval=0.1)
                failure = "" if process.poll() is None else f"{base} exited with status {process.returncode}"
            except AssertionError as exc:
                failure = str(exc)
            if failure:
                log_tail = (tmp_path / f"serve-{index}.log").read_text(errors="replace")[-4000:]
                raise AssertionError(f"{failure}; its log ends:\n{log_tail}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _stream(users: list[str], per_user: int, seed: int) -> list[tuple[list[dict], list[int]]]:
    """Batches of 1-3 failed logins of `users`, interleaved, 4 s apart in event time."""
    base = time.time_ns() - 900 * NS
    events = [(login_event(user), base + index * 4 * NS) for index in range(per_user) for user in users]
    rng = random.Random(seed)
    batches = []
    while events:
        size = rng.randint(1, 3)
        chunk, events = events[:size], events[size:]
        batches.append(([event for event, _ in chunk], [moment for _, moment in chunk]))
    return batches


def _send(api: Api, batches: list[tuple[list[dict], list[int]]], errors: list[BaseException]) -> None:
    try:
        for records, times in batches:
            api.ingest(records, times)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def _run(apis: list[Api], plans: list[list[tuple[list[dict], list[int]]]]) -> None:
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_send, args=(api, plan, errors)) for api, plan in zip(apis, plans, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.postgres
def test_two_processes_fire_and_deliver_each_alert_once(two_stores: list[str]) -> None:
    apis = [Api(base, DEV_KEY) for base in two_stores]
    with WebhookReceiver() as receiver:
        webhook = apis[0].create_webhook(receiver.url)
        apis[0].create_rule(webhook_ids=[webhook["id"]])

        same = _stream([f"same-{index}" for index in range(4)], 12, seed=1)
        _run(apis, [same, same])
        split = _stream([f"split-{index}" for index in range(4)], 12, seed=2)
        _run(apis, [split[0::2], split[1::2]])

        alerts = apis[1].alerts(limit=100)
        groups = Counter(alert["group"]["user.id"] for alert in alerts)
        assert groups == Counter({f"{kind}-{index}": 1 for kind in ("same", "split") for index in range(4)})
        assert all(alert["count"] == 5 for alert in alerts)
        wait_for(lambda: len(apis[0].deliveries(status="delivered")) == 8, "eight deliveries", timeout=30)
        assert len(apis[0].deliveries()) == 8
        assert len(receiver.received) == 8
        delivered_alerts = Counter(item.json["alert"]["id"] for item in receiver.received)
        assert set(delivered_alerts) == {alert["id"] for alert in alerts} and max(delivered_alerts.values()) == 1
        for item in receiver.received:
            webhook_signature.verify(item.body, item.headers, webhook["secret"])
    for api in apis:
        api.close()


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_concurrent_completions_of_one_window_fire_once(db_url: str, serve) -> None:
    """Many requests, on two stores with separate connections to one database, each complete the same window at once."""
    url = db_url
    storages = [open_storage(url), open_storage(url)]
    servers = []
    try:
        servers += [serve(storage) for storage in storages]
        key = create_key(storages[0], "acme", ["ingest", "read", "admin"])[1]
        apis = [Api(server.url, key) for server in servers]
        apis[0].create_rule()
        base = time.time_ns() - 900 * NS
        for round_index in range(4):
            user = f"user-{round_index}"
            start = base + round_index * 1000 * NS
            apis[0].ingest([login_event(user) for _ in range(4)], [start + index for index in range(4)])
            gate = threading.Barrier(8)
            errors: list[BaseException] = []

            def complete(api: Api, moment: int, user: str = user, gate: threading.Barrier = gate,
                         errors: list[BaseException] = errors) -> None:
                try:
                    gate.wait(10)
                    api.ingest([login_event(user)], [moment])
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=complete, args=(apis[index % 2], start + 10 + index))
                       for index in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert not errors, errors
        groups = Counter(alert["group"]["user.id"] for alert in apis[1].alerts())
        assert groups == Counter({f"user-{index}": 1 for index in range(4)})
        for api in apis:
            api.close()
    finally:
        for server in servers:
            server.__exit__()
        for storage in storages:
            storage.close()
