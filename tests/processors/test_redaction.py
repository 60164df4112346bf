"""Redaction rules and strategies through the real pipeline: keys, values, paths, body, failures, configuration."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider, ReadWriteLogRecord

import otel_audit
from otel_audit import semconv
from otel_audit.config import ConfigurationError
from otel_audit.processors import RedactionConfig, RedactionProcessor
from otel_audit.processors.redact import (
    MASK,
    RedactionError,
    Redactor,
    is_card_number,
    is_iban,
    normalize_key,
)
from otel_audit.stats import STATS
from otel_audit.testing import AuditCapture

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
CARD = "4111 1111 1111 1111"


def attributes_of(record: ReadWriteLogRecord) -> dict[str, Any]:
    return dict(record.log_record.attributes or {})


def logger() -> otel_audit.AuditLogger:
    return otel_audit.get_audit_logger("redaction-test")


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "db_password", "userPassword", "passwd", "pwd", "api_key", "apiKey", "API-KEY", "X-Api-Key",
     "apikey", "Authorization", "cookie", "Set-Cookie", "private_key", "privateKey", "ssn", "user_ssn", "card_number",
     "cardNumber", "client_secret", "refresh_token", "accessToken", "cvv", "iban", "pin"],
)
def test_sensitive_keys_in_any_spelling_are_masked(capture_pipeline, key: str) -> None:
    capture = capture_pipeline()
    logger().emit("user.update", actor="u-1", metadata={key: "plain-looking value", "nested": {"list": [{key: 7}]}})
    metadata = capture.attributes[0][semconv.AUDIT_METADATA]
    assert metadata[key] == MASK
    assert metadata["nested"]["list"][0][key] == MASK
    assert capture.attributes[0][semconv.AUDIT_REDACTED] == sorted(
        [f"audit.metadata.{key}", f"audit.metadata.nested.list[0].{key}"]
    )


@pytest.mark.parametrize("key", ["author", "shipping", "description", "keyboard", "monkey", "spinner", "tokenizer_name"])
def test_innocent_keys_that_contain_short_names_are_not_masked(capture_pipeline, key: str) -> None:
    capture = capture_pipeline()
    logger().emit("user.update", actor="u-1", metadata={key: "kept"})
    expected = MASK if key == "tokenizer_name" else "kept"  # `token` (5+ letters) matches anywhere in a key
    assert capture.attributes[0][semconv.AUDIT_METADATA][key] == expected


def test_changes_of_sensitive_fields_keep_their_shape(capture_pipeline) -> None:
    capture = capture_pipeline()
    logger().emit("user.update", actor="u-1", changes={"password": ("old-secret", "new-secret"), "title": ("a", JWT)})
    attributes = capture.attributes[0]
    assert attributes[semconv.AUDIT_CHANGES] == {
        "password": {"old": MASK, "new": MASK},
        "title": {"old": "a", "new": MASK},
    }
    assert attributes[semconv.AUDIT_REDACTED] == ["audit.changes.password", "audit.changes.title.new"]
    event = capture.events[0]  # still readable back as an AuditEvent (the store's direction)
    assert event.changes["password"].new == MASK


def test_action_block_exception_message_is_redacted(capture_pipeline) -> None:
    capture = capture_pipeline()
    with pytest.raises(ConnectionError), logger().action("report.export", resource="report"):
        raise ConnectionError(f"could not reach postgres://app:hunter2@db:5432/x with token {JWT}")
    attributes = capture.attributes[0]
    assert attributes[semconv.AUDIT_REASON] == f"could not reach postgres://app:{MASK}@db:5432/x with token {MASK}"
    assert "hunter2" not in str(attributes)
    assert attributes[semconv.AUDIT_REDACTED] == [semconv.AUDIT_REASON]


def test_secret_under_any_attribute_including_semconv_ones(capture_pipeline) -> None:
    capture = capture_pipeline()
    logger().emit(
        "document.share",
        actor={"id": "u-1", "name": f"Bob {CARD}"},
        resource={"type": "document", "id": "d-1", "name": f"notes {JWT}"},
        user_agent="curl/8.0 (Authorization: Bearer abcdef0123456789xyz)",
        url_path="/share?access_token=abcdef123456",
    )
    attributes = capture.attributes[0]
    assert attributes[semconv.USER_NAME] == f"Bob {MASK}"
    assert attributes[semconv.AUDIT_RESOURCE_NAME] == f"notes {MASK}"
    assert attributes[semconv.USER_AGENT_ORIGINAL] == f"curl/8.0 (Authorization: {MASK}"  # over-redacts the ")", never under
    assert attributes[semconv.URL_PATH] == f"/share?access_token={MASK}"
    assert attributes[semconv.AUDIT_RESOURCE_ID] == "d-1"
    assert sorted(attributes[semconv.AUDIT_REDACTED]) == sorted(
        [semconv.USER_NAME, semconv.AUDIT_RESOURCE_NAME, semconv.USER_AGENT_ORIGINAL, semconv.URL_PATH]
    )


def test_integer_card_numbers_and_bytes(capture_pipeline) -> None:
    capture = capture_pipeline()
    logger().emit("payment.create", actor="u-1", metadata={"n": 4111111111111111, "count": 4111111111111112, "raw": JWT.encode()})
    metadata = capture.attributes[0][semconv.AUDIT_METADATA]
    assert metadata == {"n": MASK, "count": 4111111111111112, "raw": MASK}


def test_strategies_drop_last4_hash(capture_pipeline) -> None:
    key = b"k" * 32
    capture = capture_pipeline(
        redaction=RedactionConfig(
            keys={"email_address": "hash", "account": "last4"},
            detectors={"card": "last4", "jwt": "hash"},
            hash_key=key,
        )
    )
    for _ in range(2):
        logger().emit(
            "user.update",
            actor="u-1",
            metadata={"password": "x", "email_address": "ann@example.com", "account": "DE0012345678", "pay": f"card {CARD}", "t": JWT},
        )
    first, second = (attributes[semconv.AUDIT_METADATA] for attributes in capture.attributes)
    expected_hash = "hmac:" + hmac.new(key, b"ann@example.com", hashlib.sha256).hexdigest()[:32]
    assert first["password"] == MASK
    assert first["email_address"] == expected_hash == second["email_address"]  # joinable, not readable
    assert first["account"] == "****5678"
    assert first["pay"] == "card ****1111"
    assert first["t"].startswith("hmac:") and first["t"] == second["t"]


def test_drop_strategy_removes_the_key(capture_pipeline) -> None:
    capture = capture_pipeline(redaction={"strategy": "drop"})
    logger().emit("user.update", actor="u-1", metadata={"password": "x", "ok": "y", "note": f"jwt {JWT} here"})
    attributes = capture.attributes[0]
    assert attributes[semconv.AUDIT_METADATA] == {"ok": "y", "note": "jwt  here"}
    assert attributes[semconv.AUDIT_REDACTED] == ["audit.metadata.note", "audit.metadata.password"]


def test_extra_keys_allow_keys_and_allowlist_mode(capture_pipeline) -> None:
    capture = capture_pipeline(redaction={"keys": ["mothers_maiden_name"], "allow_keys": ["token_count"]})
    logger().emit("ai.complete", actor="u-1", metadata={"MothersMaidenName": "Smith", "token_count": 512, "tokens": "x"})
    assert capture.attributes[0][semconv.AUDIT_METADATA] == {"MothersMaidenName": MASK, "token_count": 512, "tokens": MASK}

    strict = capture_pipeline(redaction={"mode": "allowlist", "allow_keys": ["plan", "items"]})
    logger().emit("order.create", actor="u-1", metadata={"plan": "pro", "items": 3, "free_text": "anything"})
    attributes = strict.attributes[0]
    assert attributes[semconv.AUDIT_METADATA] == {"plan": "pro", "items": 3, "free_text": MASK}
    assert attributes[semconv.USER_ID] == "u-1"  # record attributes are defined by semconv, not free keys


def test_pii_detectors_are_opt_in(capture_pipeline) -> None:
    text = "call +1 415 555 0100 or mail ann@example.com"
    default = capture_pipeline()
    logger().emit("support.ticket", actor="u-1", metadata={"note": text})
    assert default.attributes[0][semconv.AUDIT_METADATA]["note"] == text
    pii = capture_pipeline(redaction={"detectors": {"email": True, "phone": True}})
    logger().emit("support.ticket", actor="u-1", metadata={"note": text})
    assert pii.attributes[0][semconv.AUDIT_METADATA]["note"] == f"call {MASK} or mail {MASK}"


def test_redaction_off(capture_pipeline) -> None:
    capture = capture_pipeline(redaction=False)
    logger().emit("user.update", actor="u-1", metadata={"password": "x"})
    assert capture.attributes[0][semconv.AUDIT_METADATA] == {"password": "x"}


def test_body_string_and_map_are_redacted() -> None:
    capture = AuditCapture()
    provider = LoggerProvider()
    provider.add_log_record_processor(RedactionProcessor(RedactionConfig(), capture))
    otel = provider.get_logger("body")
    otel.emit(event_name="audit.x.y", body=f"login with {JWT}", attributes={semconv.AUDIT_ACTION: "x.y"})
    otel.emit(event_name="audit.x.y", body={"headers": {"Authorization": "Basic dXNlcjpwYXNz"}, "n": [CARD]},
              attributes={semconv.AUDIT_ACTION: "x.y"})
    first, second = capture.records
    assert first.log_record.body == f"login with {MASK}"
    assert attributes_of(first)[semconv.AUDIT_REDACTED] == ("body",)
    assert second.log_record.body == {"headers": {"Authorization": MASK}, "n": [MASK]}
    assert attributes_of(second)[semconv.AUDIT_REDACTED] == ("body.headers.Authorization", "body.n[0]")
    provider.shutdown()


class ExplodingMapping(Mapping):
    """A mapping whose contents cannot be read: stands in for any value redaction fails on."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("unreadable")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("unreadable")

    def __len__(self) -> int:
        return 1


def test_fail_closed_for_one_value_counts_the_error() -> None:
    capture = AuditCapture()
    processor = RedactionProcessor(RedactionConfig(), capture)
    record = ReadWriteLogRecord(LogRecord(event_name="audit.x.y", body=ExplodingMapping(), attributes={semconv.AUDIT_ACTION: "x.y"}))
    record.log_record.attributes = {semconv.AUDIT_ACTION: "x.y", "payload": ExplodingMapping(), "ok": "kept"}
    before = STATS.snapshot()["processor_errors"]
    processor.on_emit(record)  # must not raise
    (delivered,) = capture.records
    assert delivered.log_record.body == MASK
    assert attributes_of(delivered)["payload"] == MASK
    assert attributes_of(delivered)["ok"] == "kept"
    assert attributes_of(delivered)[semconv.AUDIT_REDACTED] == ["body", "payload"]
    assert STATS.snapshot()["processor_errors"] == before + 2


class ExplodingAttributes(dict):
    """Attributes whose values cannot be read: the whole record must be scrubbed, not passed through."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("broken attributes")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("broken attributes")


def test_fail_closed_for_the_whole_record_scrubs_it() -> None:
    capture = AuditCapture()
    processor = RedactionProcessor(RedactionConfig(), capture)
    record = ReadWriteLogRecord(LogRecord(event_name="audit.x.y", body="secret body"))
    record.log_record.attributes = ExplodingAttributes(
        {semconv.AUDIT_ACTION: "x.y", semconv.LOG_RECORD_UID: "u", "free": "maybe secret"}
    )
    before = STATS.snapshot()["processor_errors"]
    processor.on_emit(record)
    (delivered,) = capture.records
    assert attributes_of(delivered) == {
        semconv.AUDIT_ACTION: "x.y", semconv.LOG_RECORD_UID: "u", semconv.AUDIT_REDACTED: ["*"],
    }
    assert delivered.log_record.body is None
    assert STATS.snapshot()["processor_errors"] == before + 1


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"strategy": "blur"}, "strategy: unknown strategy 'blur'"),
        ({"keys": {"x": "scramble"}}, "keys.x: unknown strategy 'scramble'"),
        ({"detectors": {"dna": True}}, "unknown detector 'dna'"),
        ({"detectors": {"card": "hash"}}, "the hash strategy needs hash_key or OTEL_AUDIT_REDACTION_KEY"),
        ({"mode": "strict"}, "mode must be denylist or allowlist"),
        ({"colour": "red"}, "unknown option 'colour'"),
        ("yes", "expected True, False, a mapping or RedactionConfig"),
    ],
)
def test_bad_redaction_settings_fail_at_configure(setting: Any, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_AUDIT_REDACTION_KEY", raising=False)
    with pytest.raises(RedactionError) as info:
        otel_audit.configure(delivery_processor=AuditCapture(), redaction=setting)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigurationError)


def test_hash_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_AUDIT_REDACTION_KEY", "env-key-0123456789")
    redactor = Redactor(RedactionConfig(strategy="hash"))
    expected = "hmac:" + hmac.new(b"env-key-0123456789", b"x", hashlib.sha256).hexdigest()[:32]
    assert redactor.apply("hash", "x") == expected


def test_helpers() -> None:
    assert normalize_key("X-API-KEY") == normalize_key("xApiKey") == "xapikey"
    assert is_card_number("4111111111111111") and not is_card_number("4111111111111112")
    assert not is_card_number("1234567812345670")  # Luhn-valid but no card scheme starts with 1
    assert is_iban("DE89370400440532013000") and not is_iban("DE88370400440532013000")


def test_audit_events_fixture_sees_redacted_values(audit_events: AuditCapture) -> None:
    logger().emit("user.login", actor="u-1", metadata={"password": "hunter2", "note": f"token={JWT}"})
    attributes = audit_events.assert_emitted(action="user.login")
    assert attributes[semconv.AUDIT_METADATA] == {"password": MASK, "note": f"token={MASK}"}
    assert "hunter2" not in str(audit_events.attributes)


def test_list_attribute_reports_the_items_it_changed(capture_pipeline) -> None:
    capture = capture_pipeline()
    logger().emit("user.update", actor={"id": "u-1", "roles": ["viewer", f"admin {JWT}"]})
    attributes = capture.attributes[0]
    assert attributes[semconv.USER_ROLES] == ["viewer", f"admin {MASK}"]
    assert attributes[semconv.AUDIT_REDACTED] == [f"{semconv.USER_ROLES}[1]"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"password": "correct horse battery staple", "user": "bob"}', '{"password": "[REDACTED]", "user": "bob"}'),
        ('{"pin": 1234, "user": "bob"}', '{"pin": [REDACTED], "user": "bob"}'),
        ("db_password: two words\nnext line", "db_password: [REDACTED]\nnext line"),
        ("Cookie: sid=abc; theme=dark", "Cookie: [REDACTED]"),
        ("GET /cb?code=x1&token=abc123&page=2", "GET /cb?code=x1&token=[REDACTED]&page=2"),
        ("password=" + "p" * 600 + " retrying", "password=[REDACTED] retrying"),
        ("time: 12:30, mode=fast", None),
    ],
)
def test_secrets_inside_text_values(text: str, expected: str | None) -> None:
    assert Redactor().redact_text(text) == expected


def test_text_longer_than_the_scan_limit_is_masked_whole(capture_pipeline) -> None:
    capture = capture_pipeline(redaction={"max_scan_chars": 1000})
    logger().emit("report.upload", actor="u-1", metadata={"small": "fine text here", "huge": "x" * 1001})
    attributes = capture.attributes[0]
    assert attributes[semconv.AUDIT_METADATA] == {"small": "fine text here", "huge": MASK}
    assert attributes[semconv.AUDIT_REDACTED] == ["audit.metadata.huge"]
    with pytest.raises(RedactionError, match="max_scan_chars must be a positive integer"):
        Redactor(RedactionConfig(max_scan_chars=0))
