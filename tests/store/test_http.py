"""The store's HTTP API over a real socket: OTLP ingest, bad input, search, export, tail, keys, tenant isolation."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otel_audit import semconv
from otel_audit.store import create_app

from .helpers import ServerThread, audit_attributes, build_request, otlp_json

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def post_logs(server, tenant, request, *, encoding=PROTOBUF, key=None, gzip_body=False, headers=None):
    body = request.SerializeToString() if encoding == PROTOBUF else otlp_json(request)
    all_headers = tenant.headers(key, encoding)
    if gzip_body:
        body = gzip.compress(body)
        all_headers["content-encoding"] = "gzip"
    all_headers.update(headers or {})
    return httpx.post(f"{server.url}/v1/logs", content=body, headers=all_headers, timeout=10)


def decode_response(response: httpx.Response) -> ExportLogsServiceResponse:
    message = ExportLogsServiceResponse()
    if response.headers["content-type"].startswith(JSON):
        json_format.Parse(response.text, message)
    else:
        message.ParseFromString(response.content)
    return message


def get(server, tenant, path, key=None, **params):
    return httpx.get(f"{server.url}{path}", params=params, headers=tenant.headers(key), timeout=10)


def assert_json_error(response: httpx.Response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["error"] and payload["message"]
    for fragment in fragments:
        assert fragment in payload["message"], payload
    return payload


def assert_still_serving(server, tenant) -> None:
    attributes = audit_attributes()
    response = post_logs(server, tenant, build_request([attributes]))
    assert response.status_code == 200
    uid = attributes[semconv.LOG_RECORD_UID]
    assert get(server, tenant, f"/v1/events/{uid}").json()["uid"] == uid


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
@pytest.mark.parametrize("gzip_body", [False, True])
def test_ingest_then_search_returns_the_exported_attributes(served, encoding, gzip_body) -> None:
    server, acme, _ = served
    attributes = audit_attributes(**{semconv.AUDIT_METADATA: {"n": 2**40, "f": 1.5, "ok": False, "l": ["a", 1]},
                                     semconv.USER_ROLES: ["admin"]})
    response = post_logs(server, acme, build_request([attributes]), encoding=encoding, gzip_body=gzip_body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(encoding)
    assert not decode_response(response).HasField("partial_success")
    found = get(server, acme, "/v1/events", resource_id="doc-1").json()
    assert [event["attributes"] for event in found["events"]] == [attributes]
    assert found["events"][0]["tenant_id"] == "acme"
    assert found["next_cursor"] is None


def test_mixed_batch_stores_valid_records_and_reports_the_rest(served) -> None:
    server, acme, _ = served
    good = [audit_attributes(), audit_attributes()]
    records = [
        good[0],
        audit_attributes(**{semconv.AUDIT_TENANT_ID: "globex"}),       # another tenant
        audit_attributes(**{semconv.AUDIT_OUTCOME: "meh"}),            # invalid outcome
        {"message": "plain application log"},                          # not an audit record
        audit_attributes(**{semconv.USER_ID: "a\x00b"}),               # NUL in an indexed column
        good[1],
    ]
    times = [1, 2, 3, 4, 5, 6]
    records.append(audit_attributes())  # a fixed64 timestamp beyond int64
    times.append(2**64 - 1)
    request = build_request(records, event_names=[None, None, None, "app.log", None, None, None], times=times)
    response = post_logs(server, acme, request)
    assert response.status_code == 200
    partial = decode_response(response).partial_success
    assert partial.rejected_log_records == 4
    assert "record 6: invalid audit event: time_unix_nano: is beyond the year 2262" in partial.error_message
    assert "record 1: invalid audit event: audit.tenant.id" in partial.error_message
    assert "record 2: invalid audit event: outcome" in partial.error_message
    assert "record 4: invalid audit event: user.id: must not contain NUL" in partial.error_message
    assert "1 non-audit log records ignored" in partial.error_message
    stored = {event["uid"] for event in get(server, acme, "/v1/events").json()["events"]}
    assert stored == {record[semconv.LOG_RECORD_UID] for record in good}
    assert get(server, acme, "/v1/stats").json()["ingest"] == {
        "received": 7, "stored": 2, "duplicate": 0, "rejected": 4, "ignored": 1}
    assert get(server, served[2], "/v1/events").json()["events"] == []


def test_resending_a_batch_is_idempotent(served) -> None:
    server, acme, _ = served
    request = build_request([audit_attributes(), audit_attributes()])
    for _attempt in range(3):
        assert post_logs(server, acme, request).status_code == 200
    assert get(server, acme, "/v1/events/count").json() == {"count": 2}
    assert get(server, acme, "/v1/stats").json()["ingest"]["duplicate"] == 4


@pytest.mark.parametrize(
    ("body", "content_type", "extra", "status", "fragment"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF, {}, 400, "not a valid ExportLogsServiceRequest"),
        (b"{not json", JSON, {}, 400, "not valid OTLP JSON"),
        (b'{"resourceLogs": 5}', JSON, {}, 400, "not valid OTLP JSON"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', JSON, {}, 400, "OTLP JSON"),
        (b'{"resourceLogs": []}\xff', JSON, {}, 400, "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, {}, 400, "OTLP JSON"),
        (b"hello", "text/plain", {}, 415, "Content-Type"),
        (b"hello", None, {}, 415, "Content-Type"),
        (b"\x1f\x8b\x08garbage", PROTOBUF, {"content-encoding": "gzip"}, 400, "not valid gzip"),
        (gzip.compress(b"abc")[:-6], PROTOBUF, {"content-encoding": "gzip"}, 400, "truncated"),
        (b"abc", PROTOBUF, {"content-encoding": "br"}, 415, "Content-Encoding"),
    ],
)
def test_malformed_requests_get_4xx_json_and_the_server_keeps_serving(served, body, content_type, extra, status, fragment):
    server, acme, _ = served
    headers = acme.headers()
    if content_type:
        headers["content-type"] = content_type
    headers.update(extra)
    response = httpx.post(f"{server.url}/v1/logs", content=body, headers=headers, timeout=10)
    assert_json_error(response, status, fragment)
    assert_still_serving(server, acme)


def test_body_and_decompressed_size_limits(storage) -> None:
    from otel_audit.store import StoreSettings

    from .conftest import Tenant

    acme = Tenant(storage, "acme")
    app = create_app(storage, settings=StoreSettings(max_body_bytes=10_000, max_decompressed_bytes=100_000))
    with ServerThread(app) as server:
        big = build_request([audit_attributes(**{semconv.AUDIT_METADATA: {"pad": "x" * 20_000}})])
        assert_json_error(post_logs(server, acme, big), 413, "exceeds 10000 bytes")
        bomb = gzip.compress(b"\x00" * 5_000_000)
        assert len(bomb) < 10_000
        response = httpx.post(f"{server.url}/v1/logs", content=bomb, timeout=10,
                              headers={**acme.headers(None, PROTOBUF), "content-encoding": "gzip"})
        assert_json_error(response, 413, "decompressed body exceeds 100000 bytes")
        deflate_bomb = zlib.compress(b"\x00" * 5_000_000)
        response = httpx.post(f"{server.url}/v1/logs", content=deflate_bomb, timeout=10,
                              headers={**acme.headers(None, PROTOBUF), "content-encoding": "deflate"})
        assert_json_error(response, 413, "decompressed")

        def chunks():
            for _ in range(20):
                yield b"x" * 1000

        response = httpx.post(f"{server.url}/v1/logs", content=chunks(), timeout=10, headers=acme.headers(None, PROTOBUF))
        assert_json_error(response, 413, "exceeds 10000 bytes")
        assert_still_serving(server, acme)


@pytest.mark.parametrize(
    ("headers", "status", "fragment"),
    [
        ({}, 401, "missing API key"),
        ({"authorization": "Bearer wrong-key-123"}, 401, "invalid"),
        ({"authorization": "Basic YWxhZGRpbjpvcGVu"}, 401, "Bearer"),
        ({"authorization": "Bearer"}, 401, "Bearer"),
        ({"x-api-key": "wrong-key-123"}, 401, "invalid"),
        ({"authorization": "Bearer " + "k" * 5000}, 401, "invalid"),
    ],
)
def test_missing_or_invalid_keys_are_refused_on_every_endpoint(served, headers, status, fragment) -> None:
    server, acme, _ = served
    for method, path in [("POST", "/v1/logs"), ("GET", "/v1/events"), ("GET", "/v1/events/count"),
                         ("GET", "/v1/events/export"), ("GET", "/v1/events/tail"), ("GET", "/v1/events/x"),
                         ("GET", "/v1/keys"), ("GET", "/v1/stats")]:
        response = httpx.request(method, f"{server.url}{path}", headers={**headers, "content-type": PROTOBUF},
                                 content=b"" if method == "POST" else None, timeout=10)
        assert_json_error(response, status, fragment)
        assert response.headers["www-authenticate"] == "Bearer"
    assert_still_serving(server, acme)


def test_scopes_are_enforced(served) -> None:
    server, acme, _ = served
    request = build_request([audit_attributes()])
    assert_json_error(post_logs(server, acme, request, key=acme.read_key), 403, "'ingest' scope")
    assert post_logs(server, acme, request, key=acme.ingest_key).status_code == 200
    response = httpx.post(f"{server.url}/v1/logs", content=request.SerializeToString(), timeout=10,
                          headers={"content-type": PROTOBUF, "x-api-key": acme.ingest_key})
    assert response.status_code == 200
    assert_json_error(get(server, acme, "/v1/events", key=acme.ingest_key), 403, "'read' scope")
    assert get(server, acme, "/v1/events", key=acme.read_key).status_code == 200
    assert_json_error(get(server, acme, "/v1/keys", key=acme.read_key), 403, "'admin' scope")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"limit": "-1"}, "limit"),
        ({"since": "last tuesday"}, "since"),
        ({"cursor": "'; DROP TABLE events; --"}, "cursor"),
        ({"resource": "doc-1"}, "resource"),
        ({"action": "a*b"}, "action"),
    ],
)
def test_bad_filter_values_get_400_naming_the_parameter(served, params, parameter) -> None:
    server, acme, _ = served
    for path in ("/v1/events", "/v1/events/count", "/v1/events/export"):
        if parameter in ("limit", "cursor") and path != "/v1/events":
            continue
        payload = assert_json_error(get(server, acme, path, **params), 400)
        assert payload["parameter"] == parameter
    repeated = httpx.get(f"{server.url}/v1/events?action=a.b&action=c.d", headers=acme.headers(), timeout=10)
    assert assert_json_error(repeated, 400, "more than once")["parameter"] == "action"
    assert_json_error(get(server, acme, "/v1/events/export", format="xml"), 400, "format")


def test_injection_attempts_in_filters_are_plain_values(served) -> None:
    server, acme, _ = served
    post_logs(server, acme, build_request([audit_attributes()]))
    for hostile in ["' OR '1'='1", "doc-1' --", "x\"; DROP TABLE events; --", "%", "_"]:
        for name in ("action", "actor_id", "resource_type", "resource_id", "q"):
            response = get(server, acme, "/v1/events", **{name: hostile})
            assert response.status_code == 200
            assert response.json()["events"] == []
    assert get(server, acme, "/v1/events/count").json() == {"count": 1}


def test_pagination_over_http_with_the_opaque_cursor(served) -> None:
    server, acme, _ = served
    uids = [f"uid-{index:03d}" for index in range(25)]
    post_logs(server, acme, build_request([audit_attributes(**{semconv.LOG_RECORD_UID: uid}) for uid in uids]))
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        page = get(server, acme, "/v1/events", **params).json()
        seen += [event["uid"] for event in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(uids))


def test_cross_tenant_isolation_on_every_endpoint(served) -> None:
    server, acme, globex = served
    secret = audit_attributes(**{semconv.AUDIT_RESOURCE_ID: "acme-secret", semconv.AUDIT_METADATA: {"x": "acme-only"}})
    before_everything = get(server, acme, "/v1/events/tail").json()["next"]
    post_logs(server, acme, build_request([secret]))
    uid = secret[semconv.LOG_RECORD_UID]
    tail_start = get(server, globex, "/v1/events/tail").json()["next"]
    post_logs(server, acme, build_request([audit_attributes(**{semconv.AUDIT_RESOURCE_ID: "acme-secret"})]))

    assert get(server, acme, "/v1/events", resource_id="acme-secret").json()["events"]
    assert get(server, globex, "/v1/events", resource_id="acme-secret").json()["events"] == []
    assert get(server, globex, "/v1/events", q="acme-only").json()["events"] == []
    assert get(server, globex, "/v1/events/count").json() == {"count": 0}
    assert get(server, globex, "/v1/events/count", resource_id="acme-secret").json() == {"count": 0}
    assert_json_error(get(server, globex, f"/v1/events/{uid}"), 404, "no such event")
    for fmt in ("csv", "jsonl", "ocsf"):
        body = get(server, globex, "/v1/events/export", format=fmt).text
        assert "acme" not in body and uid not in body
    assert get(server, acme, "/v1/events/tail", after=before_everything).json()["events"]
    assert get(server, globex, "/v1/events/tail", after=before_everything).json()["events"] == []
    assert get(server, globex, "/v1/events/tail", after=tail_start).json()["events"] == []
    globex_keys = get(server, globex, "/v1/keys").json()["keys"]
    assert {key["tenant_id"] for key in globex_keys} == {"globex"}
    acme_key_id = get(server, acme, "/v1/keys").json()["keys"][0]["key_id"]
    assert_json_error(httpx.delete(f"{server.url}/v1/keys/{acme_key_id}", headers=globex.headers(), timeout=10), 404)
    assert get(server, acme, "/v1/events/count").json() == {"count": 2}
    assert get(server, globex, "/v1/stats").json()["ingest"]["received"] == 0
    # an event claiming the other tenant is rejected, not stored under either
    claim = audit_attributes(**{semconv.AUDIT_TENANT_ID: "acme"})
    partial = decode_response(post_logs(server, globex, build_request([claim]))).partial_success
    assert partial.rejected_log_records == 1
    assert get(server, acme, f"/v1/events/{claim[semconv.LOG_RECORD_UID]}").status_code == 404


def test_exports_stream_every_match_in_each_format(served) -> None:
    server, acme, _ = served
    records = [
        audit_attributes("user.login", **{semconv.AUDIT_OUTCOME: "failure", semconv.CLIENT_ADDRESS: "203.0.113.9",
                                          semconv.AUDIT_REASON: "=HYPERLINK(\"http://evil\")"}),
        audit_attributes("document.delete"),
        audit_attributes("document.share", **{semconv.AUDIT_OUTCOME: "denied"}),
    ]
    post_logs(server, acme, build_request(records))
    rows = list(csv.DictReader(io.StringIO(get(server, acme, "/v1/events/export", format="csv").text)))
    assert [row["action"] for row in rows] == ["document.share", "document.delete", "user.login"]
    assert rows[2]["reason"].startswith("'=HYPERLINK")
    assert json.loads(rows[0]["attributes"]) == records[2]
    lines = get(server, acme, "/v1/events/export", format="jsonl", outcome="failure").text.splitlines()
    assert [json.loads(line)["attributes"] for line in lines] == [records[0]]
    ocsf = [json.loads(line) for line in get(server, acme, "/v1/events/export", format="ocsf").text.splitlines()]
    by_action = {event["api"]["operation"] if "api" in event else event["message"]: event for event in ocsf}
    login = by_action["user.login"]
    assert (login["class_uid"], login["activity_id"], login["type_uid"], login["status_id"]) == (3002, 1, 300201, 2)
    assert login["src_endpoint"] == {"ip": "203.0.113.9"} and login["user"]["uid"] == "alice"
    delete = by_action["document.delete"]
    assert (delete["class_uid"], delete["activity_id"], delete["category_uid"]) == (6003, 4, 6)
    assert delete["resources"] == [{"type": "document", "uid": "doc-1"}]
    assert by_action["document.share"]["status_detail"] == "denied"
    assert all(event["metadata"]["uid"] in {r[semconv.LOG_RECORD_UID] for r in records} for event in ocsf)


def test_tail_returns_events_stored_after_the_token(served) -> None:
    server, acme, _ = served
    start = get(server, acme, "/v1/events/tail").json()
    assert start["events"] == []
    first = [audit_attributes(), audit_attributes()]
    post_logs(server, acme, build_request(first))
    page = get(server, acme, "/v1/events/tail", after=start["next"]).json()
    assert [event["uid"] for event in page["events"]] == [r[semconv.LOG_RECORD_UID] for r in first]
    assert get(server, acme, "/v1/events/tail", after=page["next"]).json() == {"events": [], "next": page["next"]}
    assert_json_error(get(server, acme, "/v1/events/tail", after="abc"), 400, "after")


def test_keys_api_creates_lists_and_revokes_within_the_tenant(served) -> None:
    server, acme, _ = served
    created = httpx.post(f"{server.url}/v1/keys", json={"scopes": ["read"], "name": "dashboard"},
                         headers=acme.headers(), timeout=10)
    assert created.status_code == 201
    payload = created.json()
    assert payload["tenant_id"] == "acme" and payload["scopes"] == ["read"] and payload["secret"].startswith("oak_")
    assert get(server, acme, "/v1/events", key=payload["secret"]).status_code == 200
    listed = get(server, acme, "/v1/keys").json()["keys"]
    assert payload["key_id"] in {key["key_id"] for key in listed}
    assert all("secret" not in key and "key_hash" not in key for key in listed)
    revoked = httpx.delete(f"{server.url}/v1/keys/{payload['key_id']}", headers=acme.headers(), timeout=10)
    assert revoked.json() == {"key_id": payload["key_id"], "revoked": True}
    assert_json_error(get(server, acme, "/v1/events", key=payload["secret"]), 401, "revoked")
    for body, parameter in [({"scopes": ["root"]}, "scopes"), ({"scopes": "read"}, "scopes"),
                            ({"scopes": ["read"], "tenant": "globex"}, "tenant")]:
        response = httpx.post(f"{server.url}/v1/keys", json=body, headers=acme.headers(), timeout=10)
        assert assert_json_error(response, 400)["parameter"] == parameter
    response = httpx.post(f"{server.url}/v1/keys", content=b"{", headers=acme.headers(), timeout=10)
    assert_json_error(response, 400, "JSON")


def test_unknown_routes_and_methods_answer_json(served) -> None:
    server, acme, _ = served
    assert_json_error(httpx.get(f"{server.url}/nope", timeout=10), 404)
    assert_json_error(httpx.get(f"{server.url}/v1/logs", headers=acme.headers(), timeout=10), 405)
    assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz", timeout=10).json() == {"status": "ready"}


def test_ingest_hooks_receive_exactly_the_newly_stored_events(storage) -> None:
    from .conftest import Tenant

    acme = Tenant(storage, "acme")
    calls = []
    app = create_app(storage, ingest_hooks=[lambda events: calls.append([e.uid for e in events])])
    app.state.store.add_ingest_hook(lambda events: 1 / 0)  # a failing hook never fails ingest
    with ServerThread(app) as server:
        first, second = audit_attributes(), audit_attributes()
        assert post_logs(server, acme, build_request([first])).status_code == 200
        assert post_logs(server, acme, build_request([first, second])).status_code == 200
        assert post_logs(server, acme, build_request([first, second])).status_code == 200
    assert calls == [[first[semconv.LOG_RECORD_UID]], [second[semconv.LOG_RECORD_UID]]]
