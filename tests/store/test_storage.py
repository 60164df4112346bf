"""The storage suite: the same behaviour on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import base64
import math
import sqlite3
import struct
import threading
import time

import pytest

from otel_audit import semconv
from otel_audit.store import ApiKey, EventQuery, QueryError, Storage, open_storage
from otel_audit.store.keys import Authenticator, bootstrap_key, create_key, hash_key
from otel_audit.store.otlp import map_request
from otel_audit.store.sqlite import PAGE_SIZE

from .helpers import audit_attributes, build_request

BASE = 1_700_000_000_000_000_000


def ingest(storage: Storage, records, tenant="acme", times=None):
    batch = map_request(build_request(records, times=times), tenant)
    assert batch.rejected == 0, batch.reasons
    return storage.insert_events(batch.events)


def query(**params) -> EventQuery:
    return EventQuery.from_params({name: str(value) for name, value in params.items()})


def test_round_trip_keeps_every_attribute_and_record_field(storage: Storage) -> None:
    attributes = audit_attributes(
        "document.share",
        **{
            semconv.USER_ROLES: ["admin", "editor"],
            semconv.HTTP_RESPONSE_STATUS_CODE: 201,
            semconv.AUDIT_METADATA: {"shared_with": "bob", "count": 3, "ratio": 0.5, "flag": True,
                                     "nested": {"list": [1, "two", {"three": 3}]}, "unicode": "zürich ✓"},
            semconv.AUDIT_CHANGES: {"title": {"old": "a", "new": "b"}},
            semconv.AUDIT_TENANT_ID: "acme",
        },
    )
    [stored] = ingest(storage, [attributes], times=[BASE])
    event = storage.get_event("acme", attributes[semconv.LOG_RECORD_UID])
    assert event is not None
    assert event.attributes == attributes
    assert (event.action, event.outcome, event.actor_id, event.resource_type, event.resource_id) == (
        "document.share", "success", "alice", "document", "doc-1")
    assert event.time_unix_nano == BASE
    assert event.trace_id == "0af7651916cd43dd8448eb211c80319c" and event.span_id == "b7ad6b7169203331"
    assert (event.severity_number, event.severity_text) == (9, "INFO")
    assert event.resource == {"service.name": "store-tests"}
    assert (event.scope_name, event.scope_version) == ("tests", "1.0")
    assert event.seq == stored.seq > 0
    assert semconv.attributes_to_event(event.attributes).metadata["nested"]["list"][2] == {"three": 3}


def test_duplicate_uids_are_stored_once_per_tenant(storage: Storage) -> None:
    first = audit_attributes()
    second = audit_attributes()
    assert len(ingest(storage, [first, second, first])) == 2
    assert ingest(storage, [first, second]) == []
    assert [event.uid for event in ingest(storage, [first], tenant="globex")] == [first[semconv.LOG_RECORD_UID]]
    assert storage.count("acme", EventQuery()) == 2
    assert storage.count("globex", EventQuery()) == 1


def test_a_batch_mixing_stored_and_new_uids_stores_exactly_the_new_ones_in_input_order(storage: Storage) -> None:
    uid = semconv.LOG_RECORD_UID
    old = [audit_attributes() for _ in range(3)]
    ingest(storage, old)
    new = [audit_attributes() for _ in range(4)]
    stored = ingest(storage, [new[0], old[0], new[1], old[1], new[2], new[3], old[2]])
    assert [event.uid for event in stored] == [attributes[uid] for attributes in new]
    seqs = [event.seq for event in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert all(storage.get_event("acme", event.uid).seq == event.seq for event in stored)
    assert storage.count("acme", EventQuery()) == 7


def test_concurrent_overlapping_batches_store_and_report_each_event_once(storage: Storage) -> None:
    """Retries racing the original (same order, overlapping windows): every event is stored once, and exactly one
    insert reports it as stored (ingest hooks such as alerts see it once)."""
    records = [audit_attributes() for _ in range(160)]
    reported: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(window: list) -> None:
        try:
            for start in range(0, len(window), 20):
                stored = ingest(storage, window[start : start + 20])
                with lock:
                    reported.extend(event.uid for event in stored)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(records[offset : offset + 80],)) for offset in (0, 40, 80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(reported) == sorted(attributes[semconv.LOG_RECORD_UID] for attributes in records)
    assert storage.count("acme", EventQuery()) == 160


def test_record_without_uid_gets_a_content_derived_uid_so_retries_deduplicate(storage: Storage) -> None:
    request = build_request([audit_attributes(**{semconv.LOG_RECORD_UID: None})])
    [stored] = storage.insert_events(map_request(request, "acme").events)
    assert stored.uid.startswith("sha256:")
    assert storage.insert_events(map_request(request, "acme").events) == []


@pytest.fixture
def populated(storage: Storage) -> Storage:
    records, times = [], []
    for index in range(60):
        records.append(audit_attributes(
            ["user.login", "user.logout", "document.share", "document.delete"][index % 4],
            **{
                semconv.USER_ID: f"user-{index % 3}",
                semconv.AUDIT_RESOURCE_TYPE: "document" if index % 2 else "folder",
                semconv.AUDIT_RESOURCE_ID: f"res-{index % 5}",
                semconv.AUDIT_OUTCOME: "failure" if index % 6 == 0 else "success",
                semconv.AUDIT_METADATA: {"note": f"batch {index} 100%_done" if index == 7 else f"batch {index}"},
            },
        ))
        times.append(BASE + index * 1_000_000_000)
    ingest(storage, records, times=times)
    ingest(storage, [audit_attributes("user.login", **{semconv.USER_ID: "user-0"})], tenant="globex", times=[BASE])
    return storage


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"action": "user.login"}, lambda i: i % 4 == 0),
        ({"action": "user.*"}, lambda i: i % 4 in (0, 1)),
        ({"action": "*"}, lambda i: True),
        ({"actor_id": "user-1"}, lambda i: i % 3 == 1),
        ({"resource_type": "folder"}, lambda i: i % 2 == 0),
        ({"resource_id": "res-3"}, lambda i: i % 5 == 3),
        ({"resource_type": "document", "resource_id": "res-3"}, lambda i: i % 5 == 3 and i % 2 == 1),
        ({"outcome": "failure"}, lambda i: i % 6 == 0),
        ({"since": str(BASE + 10 * 10**9), "until": "2023-11-14T22:13:40Z"}, lambda i: 10 <= i < 20),
        ({"q": "100%_done"}, lambda i: i == 7),
        ({"q": "BATCH 1"}, lambda i: str(i).startswith("1")),
        ({"q": "%"}, lambda i: i == 7),
        ({"q": "_"}, lambda i: i == 7),
        ({"action": "user.login", "actor_id": "user-0", "outcome": "failure"}, lambda i: i % 12 == 0),
    ],
)
def test_each_filter_finds_exactly_the_matching_events_newest_first(populated: Storage, params, expected) -> None:
    page = populated.search("acme", query(limit=1000, **params))
    want = [BASE + index * 1_000_000_000 for index in reversed(range(60)) if expected(index)]
    assert [event.time_unix_nano for event in page.events] == want
    assert all(event.tenant_id == "acme" for event in page.events)
    assert populated.count("acme", query(**params)) == len(want)
    assert page.next_cursor is None


def test_cursor_pagination_visits_every_event_once_in_order(populated: Storage) -> None:
    seen, cursor, pages = [], None, 0
    while pages < 20:
        pages += 1
        page = populated.search("acme", EventQuery(limit=7, cursor=cursor))
        seen += [event.uid for event in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 9
    assert len(seen) == len(set(seen)) == 60
    assert seen == [event.uid for event in populated.search("acme", EventQuery(limit=1000)).events]
    cursor = populated.search("acme", EventQuery(limit=1)).next_cursor
    assert cursor is not None
    token = cursor.encode(populated.tokens)
    # sealed, not encoded: the token's bytes are not the cursor's integers (a digit-string check would pass or
    # fail by chance on a random-looking token)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    plain = {struct.pack(">QQ", cursor.time_unix_nano, cursor.seq), struct.pack(">QQ", cursor.seq, cursor.time_unix_nano)}
    assert len(raw) == 16 and raw not in plain
    assert EventQuery.from_params({"cursor": token}, tokens=populated.tokens).cursor == cursor


@pytest.mark.parametrize(
    "hostile",
    ["' OR '1'='1", "x'; DROP TABLE events; --", "\" OR 1=1 --", "%", "user-0' --", "\\", "'||(SELECT 1)||'"],
)
def test_injection_attempts_in_every_filter_match_nothing_and_change_nothing(populated: Storage, hostile: str) -> None:
    for name in ("action", "actor_id", "resource_type", "resource_id"):
        assert populated.search("acme", query(**{name: hostile})).events == []
    assert populated.search("acme", query(q=hostile)).events == ([] if hostile != "%" else
                                                                    populated.search("acme", query(q="%")).events)
    assert populated.count("acme", EventQuery()) == 60
    assert populated.count("globex", EventQuery()) == 1


def test_queries_never_cross_tenants(populated: Storage) -> None:
    globex = populated.search("globex", EventQuery(limit=1000)).events
    assert len(globex) == 1 and globex[0].tenant_id == "globex"
    acme_uid = populated.search("acme", EventQuery(limit=1)).events[0].uid
    assert populated.get_event("globex", acme_uid) is None
    assert populated.count("nobody", EventQuery()) == 0
    assert all(event.tenant_id == "globex" for event in populated.events_after("globex", 0))


def test_events_after_follows_storage_order(storage: Storage) -> None:
    start = storage.last_seq()
    first = ingest(storage, [audit_attributes(), audit_attributes()])
    ingest(storage, [audit_attributes()], tenant="globex")
    second = ingest(storage, [audit_attributes()])
    after = storage.events_after("acme", start)
    assert [event.uid for event in after] == [event.uid for event in first + second]
    assert storage.events_after("acme", second[-1].seq) == []


def test_retention_deletes_only_older_events(populated: Storage) -> None:
    cutoff = BASE + 30 * 1_000_000_000
    assert populated.count_older_than(cutoff) == 31  # 30 of acme + 1 of globex at BASE
    assert populated.count_older_than(cutoff, "acme") == 30
    assert populated.delete_older_than(cutoff, "acme") == 30
    assert populated.count("acme", EventQuery()) == 30
    assert populated.count("globex", EventQuery()) == 1
    assert populated.delete_older_than(cutoff) == 1
    assert populated.delete_older_than(cutoff) == 0


def test_api_keys_are_stored_hashed_and_resolve_to_their_tenant(storage: Storage) -> None:
    key, secret = create_key(storage, "acme", ["read", "ingest"], "ci")
    assert key.scopes == ("ingest", "read")
    assert storage.key_by_hash(hash_key(secret)) == (key, hash_key(secret))
    with storage.read() as conn:
        stored = [tuple(row) for row in conn.execute("SELECT * FROM api_keys").fetchall()]
    assert not any(secret in str(row) for row in stored)
    authenticator = Authenticator(storage, cache_ttl=0)
    assert authenticator.authenticate(secret) == key
    assert authenticator.authenticate(secret + "x") is None
    assert storage.revoke_key(key.key_id, time.time_ns(), tenant_id="globex") is False
    assert storage.revoke_key(key.key_id, time.time_ns()) is True
    assert authenticator.authenticate(secret) is None
    assert [item.key_id for item in storage.list_keys("acme")] == [key.key_id]
    assert storage.list_keys("globex") == []


def test_bootstrap_key_is_idempotent(storage: Storage) -> None:
    first = bootstrap_key(storage, "dev-secret-123", "acme")
    second = bootstrap_key(storage, "dev-secret-123", "acme")
    assert first.key_id == second.key_id
    assert [item.key_id for item in storage.list_keys()] == [first.key_id]
    assert isinstance(Authenticator(storage).authenticate("dev-secret-123"), ApiKey)


def test_processes_registering_the_same_dev_key_at_once_all_succeed(storage: Storage) -> None:
    """Two `serve --dev-key` started together on one database store the same key at the same moment: neither may
    fail on the other's row (on PostgreSQL the second insert used to raise a unique violation and end its server)."""
    for round_number in range(20):
        secret = f"dev-secret-{round_number:04d}"
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def register() -> None:
            start.wait()
            try:
                bootstrap_key(storage, secret, "acme")
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                errors.append(exc)

        threads = [threading.Thread(target=register) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [f"{type(error).__name__}: {error}" for error in errors] == []
        assert isinstance(Authenticator(storage).authenticate(secret), ApiKey)
    assert len(storage.list_keys("acme")) == 20


def test_migrations_are_idempotent_and_extensions_get_their_own_versions(storage: Storage) -> None:
    storage.migrate()
    table = "CREATE TABLE alert_rules_test (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"
    assert storage.apply_migrations("alerts-test", [[table]]) == 1
    assert storage.apply_migrations("alerts-test", [[table], ["CREATE INDEX art_name ON alert_rules_test (name)"]]) == 2
    assert storage.apply_migrations("alerts-test", [[table], ["CREATE INDEX art_name ON alert_rules_test (name)"]]) == 2
    with storage.transaction() as conn:
        conn.execute(f"INSERT INTO alert_rules_test (id, name) VALUES ({storage.placeholder}, {storage.placeholder})",
                     (1, "x"))
    with storage.read() as conn:
        assert conn.execute("SELECT name FROM alert_rules_test").fetchall()[0][0] == "x"


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-01-01T00:00:00"}, "until"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "AAAAAAAAAAAAAAAAAAAAAA"}, "cursor"),
        ({"action": "us*er"}, "action"),
        ({"actor_id": ""}, "actor_id"),
        ({"actor_id": "a\x00b"}, "actor_id"),
        ({"resource_id": "x" * 1025}, "resource_id"),
        ({"q": "x" * 257}, "q"),
        ({"resource": "doc"}, "resource"),
    ],
)
def test_bad_filter_values_raise_query_errors_naming_the_parameter(params, parameter) -> None:
    with pytest.raises(QueryError) as caught:
        EventQuery.from_params(params)
    assert caught.value.parameter == parameter


def test_bytes_values_come_back_base64_encoded(storage: Storage) -> None:
    attributes = audit_attributes(**{semconv.AUDIT_METADATA: {"digest": b"\x00\xffabc"}})
    ingest(storage, [attributes])
    event = storage.get_event("acme", attributes[semconv.LOG_RECORD_UID])
    assert event is not None
    assert event.attributes[semconv.AUDIT_METADATA] == {"digest": "AP9hYmM="}


def test_non_finite_floats_outside_the_checked_maps_come_back_as_exported(storage: Storage) -> None:
    attributes = audit_attributes(**{"custom.ratio": math.nan, "custom.floor": -math.inf, "custom.big": 1e16})
    [stored] = ingest(storage, [attributes])
    event = storage.get_event("acme", stored.uid)
    assert event is not None
    assert math.isnan(event.attributes["custom.ratio"])
    assert event.attributes["custom.floor"] == -math.inf and event.attributes["custom.big"] == 1e16


def test_new_sqlite_databases_get_small_pages_and_existing_ones_keep_theirs(tmp_path) -> None:
    existing = tmp_path / "existing.db"
    with sqlite3.connect(existing) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("CREATE TABLE unrelated (x)")
    for path, expected in ((tmp_path / "new.db", PAGE_SIZE), (existing, 4096)):
        store = open_storage(f"sqlite:///{path}")
        try:
            ingest(store, [audit_attributes()])
            with store.read() as conn:
                assert conn.execute("PRAGMA page_size").fetchone()[0] == expected
            assert store.count("acme", EventQuery()) == 1
        finally:
            store.close()
