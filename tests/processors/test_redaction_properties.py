"""Property tests over arbitrary nested metadata: nothing escapes, no planted secret survives, output is AnyValue."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadWriteLogRecord

from otel_audit import semconv
from otel_audit.processors import RedactionConfig, RedactionProcessor
from otel_audit.processors.redact import MASK
from otel_audit.testing import AuditCapture

from .conftest import POSITIVES

SECRETS = [entry for entry in POSITIVES if entry["config"] == "default"]
SENSITIVE_KEYS = ["password", "apiKey", "X-Auth-Token", "client_secret", "set-cookie", "card_number"]

class Planted:
    """A leaf carrying a secret inside free text; replaced by its text before the record is built."""

    def __init__(self, before: str, index: int, after: str) -> None:
        entry = SECRETS[index]
        # " | " keeps the secret a token of its own, as in log lines and messages.
        self.text = f"{before} | {entry['value']} | {after}"
        self.secret = entry["secret"]

    def __repr__(self) -> str:
        return f"Planted({self.text!r})"


planted = st.builds(Planted, st.text(max_size=12), st.integers(0, len(SECRETS) - 1), st.text(max_size=12))
scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=16),
)
keys = st.one_of(st.text(min_size=1, max_size=10), st.sampled_from(SENSITIVE_KEYS))
trees = st.recursive(
    st.one_of(scalars, planted),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)


def unplant(value: Any, secrets: list[str]) -> Any:
    """The drawn tree with Planted leaves turned into their text; their secrets collected."""
    if isinstance(value, Planted):
        secrets.append(value.secret)
        return value.text
    if isinstance(value, dict):
        return {key: unplant(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [unplant(item, secrets) for item in value]
    return value


def is_any_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float, bytes)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_any_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_any_value(item) for key, item in value.items())
    return False


def leaves_under_sensitive_keys(value: Any, inside: bool = False) -> list[Any]:
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            found.extend(leaves_under_sensitive_keys(item, inside or key in SENSITIVE_KEYS))
        return found
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves_under_sensitive_keys(item, inside)]
    return [value] if inside else []


PROCESSOR = RedactionProcessor(RedactionConfig())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, trees, min_size=1, max_size=5), st.one_of(st.none(), planted))
def test_no_exception_no_surviving_secret_valid_any_value(drawn: dict[str, Any], body: Planted | None) -> None:
    secrets: list[str] = []
    metadata = unplant(drawn, secrets)
    capture = AuditCapture()
    PROCESSOR.next_processor = capture
    attributes = {semconv.AUDIT_ACTION: "prop.test", semconv.AUDIT_METADATA: metadata, semconv.AUDIT_REASON: "n/a"}
    record = ReadWriteLogRecord(
        LogRecord(event_name="audit.prop.test", attributes=attributes, body=unplant(body, secrets))
    )
    PROCESSOR.on_emit(record)  # never raises

    (delivered,) = capture.records
    out_attributes = dict(delivered.log_record.attributes or {})
    out_body = delivered.log_record.body
    assert delivered.dropped_attributes == 0
    assert is_any_value(out_attributes) and is_any_value(out_body)
    exported = json.dumps([out_attributes, out_body], default=lambda raw: raw.decode("latin-1"))
    for secret in secrets:
        assert secret not in exported and json.dumps(secret)[1:-1] not in exported, secret
    for leaf in leaves_under_sensitive_keys(out_attributes.get(semconv.AUDIT_METADATA, {})):
        assert leaf in (MASK, None)
