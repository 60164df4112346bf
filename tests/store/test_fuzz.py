"""Bounded fuzzing of the OTLP endpoint (random, mutated and structurally odd protobuf/JSON): never a 5xx."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_audit import semconv
from otel_audit.store import create_app, open_storage

from .conftest import Tenant
from .helpers import ServerThread, audit_attributes, build_request, otlp_json

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CONTENT_TYPES = ["application/x-protobuf", "application/json", "application/json; charset=utf-8", "text/plain", ""]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[tuple[httpx.Client, str, ServerThread]]:
    storage = open_storage(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db")
    tenant = Tenant(storage, "acme")
    with ServerThread(create_app(storage)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, tenant.key, server
    storage.close()


def post(endpoint, body: bytes, content_type: str, gzip_it: bool = False) -> httpx.Response:
    client, key, _ = endpoint
    headers = {"authorization": f"Bearer {key}"}
    if content_type:
        headers["content-type"] = content_type
    if gzip_it:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    response = client.post("/v1/logs", content=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text, body[:200])
    if response.status_code >= 400:
        assert response.json()["message"]
    return response


VALID = build_request([
    audit_attributes(**{semconv.AUDIT_METADATA: {"a": [1, 2.5, True, "x", {"b": None}]}}),
    audit_attributes("user.login", **{semconv.AUDIT_OUTCOME: "failure"}),
])
VALID_PROTOBUF = VALID.SerializeToString()
VALID_JSON = otlp_json(VALID)


@FUZZ
@given(body=st.binary(max_size=2048), content_type=st.sampled_from(CONTENT_TYPES), gzip_it=st.booleans())
def test_random_bodies(endpoint, body, content_type, gzip_it) -> None:
    post(endpoint, body, content_type, gzip_it)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[position : position + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[position:]
        elif kind == "duplicate":
            data[position:position] = data[position : position + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(body=mutated(VALID_PROTOBUF), gzip_it=st.booleans())
def test_mutated_protobuf(endpoint, body, gzip_it) -> None:
    post(endpoint, body, "application/x-protobuf", gzip_it)


@FUZZ
@given(body=mutated(VALID_JSON))
def test_mutated_json_bytes(endpoint, body) -> None:
    post(endpoint, body, "application/json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@FUZZ
@given(data=st.data())
def test_structurally_mutated_otlp_json(endpoint, data) -> None:
    document = json.loads(VALID_JSON)
    for _ in range(data.draw(st.integers(1, 4))):
        paths = [path for path in _paths(document) if path]
        path = data.draw(st.sampled_from(paths))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = data.draw(json_values)
    post(endpoint, json.dumps(document).encode(), "application/json")


any_values = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=30) | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(
    attributes=st.dictionaries(
        st.sampled_from([semconv.AUDIT_ACTION, semconv.AUDIT_OUTCOME, semconv.USER_ID, semconv.AUDIT_TENANT_ID,
                         semconv.AUDIT_METADATA, semconv.AUDIT_CHANGES, semconv.USER_ROLES, semconv.LOG_RECORD_UID,
                         semconv.HTTP_RESPONSE_STATUS_CODE, semconv.AUDIT_RESOURCE_TYPE]) | st.text(max_size=12),
        any_values, max_size=8,
    ),
    event_name=st.sampled_from(["audit.user.login", "audit.", "", "app.log"]) | st.text(max_size=20),
    encoding=st.sampled_from(["protobuf", "json"]),
)
def test_well_formed_requests_with_arbitrary_attribute_values(endpoint, attributes, event_name, encoding) -> None:
    attributes.setdefault(semconv.AUDIT_ACTION, "user.login")
    request = build_request([attributes], event_names=[event_name])
    if encoding == "protobuf":
        post(endpoint, request.SerializeToString(), "application/x-protobuf")
    else:
        post(endpoint, otlp_json(request), "application/json")


def test_server_still_answers_after_fuzzing(endpoint) -> None:
    client, key, _ = endpoint
    response = post(endpoint, VALID_PROTOBUF, "application/x-protobuf")
    assert response.status_code == 200
    assert client.get("/v1/events/count", headers={"authorization": f"Bearer {key}"}).json()["count"] >= 2
