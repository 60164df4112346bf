"""A row's attributes JSON leaves out what its columns hold (events.stored_attributes), and reading the row puts
it back: every accepted record's attributes come back as they were decoded, and rows stored before the JSON left
them out read the same."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audit import semconv
from otel_audit.logger import new_uid
from otel_audit.store import Storage
from otel_audit.store.events import dumps
from otel_audit.store.otlp import map_request
from otel_audit.store.storage import event_row, row_event

from .helpers import audit_attributes, build_request

ABSENT = object()
COLUMN_ATTRIBUTES = (
    semconv.AUDIT_ACTION, semconv.AUDIT_OUTCOME, semconv.LOG_RECORD_UID, semconv.USER_ID, semconv.AUDIT_ACTOR_TYPE,
    semconv.AUDIT_RESOURCE_TYPE, semconv.AUDIT_RESOURCE_ID, semconv.AUDIT_METADATA,
)


def optional(*values) -> st.SearchStrategy:
    return st.sampled_from([ABSENT, *values])


records = st.fixed_dictionaries({
    semconv.AUDIT_ACTION: st.sampled_from(["user.login", "document.share"]),
    semconv.AUDIT_OUTCOME: optional("unknown", "success", "denied"),
    semconv.LOG_RECORD_UID: optional(None, "sha256:chosen-by-the-exporter", "u-1", "") | st.builds(new_uid),
    semconv.USER_ID: optional(None, "alice", ""),
    semconv.AUDIT_ACTOR_TYPE: optional(None, "user", "service"),
    semconv.AUDIT_RESOURCE_TYPE: optional(None, "document"),
    semconv.AUDIT_RESOURCE_ID: optional(None, "doc-1", ""),
    semconv.AUDIT_METADATA: optional(None, {}, {"plan": "pro", "items": [1, 2.5, {"deep": True}]}),
    semconv.AUDIT_REASON: optional("because"),
}).map(lambda record: {name: value for name, value in record.items() if value is not ABSENT})


def stored_event(attributes: dict):
    batch = map_request(build_request([attributes]), "acme")
    return batch.events[0] if batch.events else None


@settings(max_examples=300, deadline=None)
@given(attributes=records)
def test_a_row_reads_back_every_decoded_attribute(attributes) -> None:
    event = stored_event(attributes)
    if event is None:  # refused by validation (an actor type of null, say): nothing is stored
        return
    kept = json.loads(event.attributes_json)
    read = row_event((1, *event_row(event)))
    assert read.attributes == event.attributes
    assert set(read.attributes) == set(attributes)
    assert semconv.AUDIT_ACTION not in kept
    for name in COLUMN_ATTRIBUTES[1:]:
        if name in kept:  # left in the JSON only when the columns cannot say it was there
            value = attributes[name]
            assert value is None or value == {} or (name, value) in {
                (semconv.AUDIT_OUTCOME, "unknown"), (semconv.LOG_RECORD_UID, "sha256:chosen-by-the-exporter")}


def test_a_typical_row_keeps_only_what_no_column_holds() -> None:
    attributes = audit_attributes(**{semconv.AUDIT_METADATA: {"plan": "pro"}, semconv.CLIENT_ADDRESS: "10.0.0.1"})
    event = stored_event(attributes)
    assert json.loads(event.attributes_json) == {semconv.CLIENT_ADDRESS: "10.0.0.1"}
    assert event.metadata_text == '{"plan":"pro"}'


def test_the_store_keeps_column_held_attributes_once_and_returns_them(storage: Storage) -> None:
    attributes = audit_attributes(**{semconv.AUDIT_METADATA: {"plan": "pro"}, semconv.AUDIT_REASON: "quota"})
    event = stored_event(attributes)
    storage.insert_events([event])
    with storage.read() as conn:
        [(stored_json,)] = conn.execute(
            f"SELECT attributes FROM events WHERE uid = {storage.placeholder}", (event.uid,)).fetchall()
    assert json.loads(stored_json) == {semconv.AUDIT_REASON: "quota"}
    assert storage.get_event("acme", event.uid).attributes == attributes


def test_rows_stored_with_every_attribute_in_their_json_read_the_same(storage: Storage) -> None:
    attributes = audit_attributes(**{semconv.AUDIT_METADATA: {"plan": "pro"}, semconv.AUDIT_OUTCOME: "unknown"})
    event = stored_event(attributes)
    event.attributes_json = dumps(attributes)  # the format before stored_attributes
    storage.insert_events([event])
    assert storage.get_event("acme", event.uid).attributes == attributes
