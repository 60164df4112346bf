"""The redaction shortcuts never disagree with the detectors: the pre-screen (surely_clean), its joined form, the
timestamp shapes, the shortest-match length, the clean cache and the emit fast path (is_clean)."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadWriteLogRecord

from otel_audit import semconv
from otel_audit.logger import new_uid
from otel_audit.processors import RedactionConfig, RedactionProcessor, redact
from otel_audit.processors.redact import (
    _ATTRIBUTE,
    _TIMESTAMP_SHAPES,
    MASK,
    Redactor,
    luhn_valid,
)
from otel_audit.testing import AuditCapture

from .conftest import NEGATIVES, POSITIVES

CONFIGS = {
    "default": RedactionConfig(),
    "pii": RedactionConfig(detectors={"email": True, "phone": True}),
    "short key": RedactionConfig(keys=["k"]),
}
REDACTORS = {name: Redactor(config) for name, config in CONFIGS.items()}
PROPERTY = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)

# Pieces every detector is made of (its literals, its separators, digits), so that random strings often come close
# to a match, plus ordinary id material.
FRAGMENTS = [
    "eyJ", "hbGciOi", ".", "AKIA", "ASIA", "AIza", "ya29.", "ghp_", "github_pat_", "xoxb-", "xoxp-", "xapp-1-",
    "hooks.slack.com/services/", "sk_live_", "rk_test_", "whsec_", "-----BEGIN", " PRIVATE KEY-----", "Bearer ",
    "bearer ", "basic ", "Basic ", "https://", "user:", "pass@", "?token=", "password=", "pin=", "pwd:", '"pin": ',
    "secret", "=", ":", "@", "example.com", "+1 ", "+44", "(212) ", "555-0100", "415.555.0100", "-", " ", "/", "_",
    "GB82", "WEST", "DE89", "abc", "req", "doc", "id", "T", "Z", "é", "\u00a0", "\u2003", "\t", "\n",
]
digits = st.text(alphabet="0123456789", min_size=1, max_size=6)
pieces = st.one_of(st.sampled_from(FRAGMENTS), digits, st.text(alphabet="abcdefxyz0123456789-.", max_size=8))
near_misses = st.lists(pieces, max_size=12).map("".join)
# What passes the pre-screen: lower-case words and digit groups joined by `-`, `.` and `/` (ids, versions, dates).
id_like = st.from_regex(r"[a-z0-9]{0,6}(?:[-./][a-z0-9]{1,6}){0,5}", fullmatch=True)
anything = st.text(max_size=40)


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    """A Luhn-valid card number of `length` digits starting with `prefix`."""
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


@st.composite
def grouped_cards(draw: st.DrawFn) -> str:
    """Luhn-valid card numbers in any grouping (including groups of three) with single space or dash separators."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    prefix, length = draw(st.sampled_from([("4", 16), ("4", 13), ("51", 16), ("37", 15), ("6011", 16), ("3528", 16)]))
    number = luhn_complete(prefix, length, rng)
    out, position = [], 0
    while position < len(number):
        size = draw(st.integers(1, 5))
        out.append(number[position : position + size])
        position += size
    separator = draw(st.sampled_from(["-", " ", ""]))
    return separator.join(out)


def cannot_disagree(redactor: Redactor, text: str) -> None:
    if redactor.surely_clean(text):
        assert redactor.scan_text(text) is None, text


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(text=st.one_of(near_misses, id_like, anything))
@example(text="xoxb-abcdefghijkl")
@example(text="ya29.abcdefghijklmnopqrstuvwxyz")
@example(text="hooks.slack.com/services/abcdefghijk")
@example(text="378-282-246-310-005")
@example(text="2026-01-01 4111111111111111")
@example(text="2026-01-01 415.555.0100")
def test_prescreen_never_says_clean_when_a_detector_matches(name: str, text: str) -> None:
    cannot_disagree(REDACTORS[name], text)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(
    card=grouped_cards(), before=st.sampled_from(["", "order ", "x-", "a/"]), after=st.sampled_from(["", " ok", "/b"])
)
def test_prescreen_sees_every_grouping_of_a_card_number(name: str, card: str, before: str, after: str) -> None:
    redactor = REDACTORS[name]
    text = before + card + after
    assert redactor.scan_text(text) is not None, text
    assert not redactor.surely_clean(text), text


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(parts=st.lists(st.one_of(near_misses, id_like, grouped_cards()), min_size=1, max_size=6))
def test_joined_prescreen_vouches_for_every_part(name: str, parts: list[str]) -> None:
    """is_clean pre-screens the texts of a record joined by `/`: a pass must hold for each text on its own."""
    redactor = REDACTORS[name]
    if redactor.surely_clean("/".join(parts)):
        for part in parts:
            assert redactor.scan_text(part) is None, (part, parts)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(shape=st.sampled_from(sorted(_TIMESTAMP_SHAPES)), seed=st.integers(0, 2**32))
def test_timestamp_shapes_hold_nothing_with_any_digits(name: str, shape: bytes, seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice("0123456789") if char == "9" else char for char in shape.decode())
    redactor = REDACTORS[name]
    assert redactor.surely_clean(text)
    assert redactor.scan_text(text) is None, text


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(text=st.one_of(st.lists(pieces, max_size=3).map("".join), st.text(alphabet="pinkwdotsc=:\"' 019", max_size=6)))
@example(text="pin=1")
@example(text="k=v")
def test_nothing_shorter_than_the_shortest_match_is_a_secret(name: str, text: str) -> None:
    redactor = REDACTORS[name]
    assume(len(text) < redactor.min_secret_len)
    assert redactor.scan_text(text) is None, text


def test_corpus_positives_never_pass_the_prescreen_and_negatives_mostly_do(capsys: pytest.CaptureFixture[str]) -> None:
    for entry in POSITIVES:
        redactor = REDACTORS["pii" if entry["config"] == "pii" else "default"]
        assert not redactor.surely_clean(entry["value"]), entry
    passed = sum(REDACTORS["default"].surely_clean(entry["value"]) for entry in NEGATIVES)
    with capsys.disabled():
        print(f"\npre-screen: 0/{len(POSITIVES)} positives pass, {passed}/{len(NEGATIVES)} negatives pass")


def test_fixed_prefilter_holes_and_short_key_values_are_redacted() -> None:
    redactor = Redactor()
    assert redactor.redact_text("xoxb-abcdefghijkl") == MASK
    assert redactor.redact_text("ya29.abcdefghijklmnopqrstuvwxyz") == MASK
    assert redactor.redact_text("378-282-246-310-005") == MASK
    assert redactor.redact_text("2026-01-01 4111111111111111") == "2026-01-01 " + MASK
    assert redactor.redact_text("pin=1") == "pin=" + MASK
    assert Redactor(CONFIGS["pii"]).redact_text("2026-01-01 415.555.0100") == "2026-01-01 " + MASK
    # a 9-digit fraction and a `-hhmm` offset chain into 13 digits (found by the timestamp-shape property test)
    assert redactor.redact_text("8173-47-22 23:74:27.464668557-5819") == "8173-47-22 23:74:27." + MASK


def test_uuids_and_lone_digit_words_pass_the_prescreen_when_no_detector_can_match() -> None:
    """One all-digit word under 13 digits matches no number detector (a UUID's last group, an order number), nor does
    a chain of words under 9 digits; when any chain of eight characters counted, one UUIDv4 in fifteen went to
    the detectors."""
    for name, redactor in REDACTORS.items():
        rng = random.Random(2026)
        uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
        passed = [text for text in uuids if redactor.surely_clean(text)]
        assert len(passed) >= 0.98 * len(uuids), name
        assert all(redactor.scan_text(text) is None for text in passed), name
        for text in ("order-123456789012", "39764552-719c-42f0", "9e91-855180513969", "4816-9127"):
            assert redactor.surely_clean(text), (name, text)
        for text in ("1234567890123", "123-45-6789", "4111-1111-1111-1111", "a-12345-6789", "4111111111111111-x"):
            assert not redactor.surely_clean(text), (name, text)
    assert REDACTORS["default"].surely_clean("415.555.0100")  # dots join no number the default detectors know
    assert not REDACTORS["pii"].surely_clean("415.555.0100")  # a phone number, with phone detection on


def test_an_equal_float_never_vouches_for_an_integer_card_number() -> None:
    redactor = Redactor()
    assert redactor.changes_in({"amount": 4111111111111111.0, "n": "x"}, "", _ATTRIBUTE, []) is None
    touched: list[str] = []
    assert redactor.changes_in({"amount": 4111111111111111, "n": "x"}, "", _ATTRIBUTE, touched) == {"amount": MASK}
    assert touched == ["amount"]
    both: list[str] = []
    changes = Redactor().changes_in({"f": 4111111111111111.0, "i": 4111111111111111}, "", _ATTRIBUTE, both)
    assert changes == {"i": MASK} and both == ["i"]


def test_logger_uids_have_the_fixed_uuidv7_format_the_redactor_trusts() -> None:
    """log.record.uid is skipped by redaction because otel-audit generates it in one fixed format."""
    uuid7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    uids = {new_uid() for _ in range(5000)}
    assert len(uids) == 5000
    assert all(uuid7.fullmatch(uid) for uid in uids)


# -- the emit fast path against the full path ---------------------------------------------------------------------


@pytest.fixture(params=["compiled", "python"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fast path with the compiled screen (processors/_screen.c) and with the pure-Python one it replaces."""
    if request.param == "compiled" and redact._compiled_attributes_clean is None:
        pytest.skip("the _screen extension is not built here (no C compiler at install)")
    if request.param == "python":
        monkeypatch.setattr(redact, "_compiled_attributes_clean", None)
        monkeypatch.setattr(redact, "_compiled_value_clean", None)
    return request.param


scalars = st.one_of(
    near_misses, id_like, id_like, anything, grouped_cards(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False), st.booleans(), st.none(), st.binary(max_size=8),
    st.sampled_from(["2026-01-01T00:00:08.500000+00:00", "doc-00042"]),
)
keys = st.one_of(
    st.sampled_from(["a", "b", "note", "password", "items", "when", "apiKey"]), st.text(min_size=1, max_size=6)
)
trees = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)),
    max_leaves=8,
)
records = st.dictionaries(keys, trees, min_size=1, max_size=5)


@pytest.mark.usefixtures("fast_path")
@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(first=records, later=st.lists(records, max_size=4), seed=st.integers(0, 2**16))
def test_fast_path_says_clean_only_when_the_full_path_changes_nothing(
    name: str, first: dict[str, Any], later: list[dict[str, Any]], seed: int
) -> None:
    """Records of one shape with other values (plans are reused), and records of other shapes of the same size."""
    rng = random.Random(seed)
    redactor = Redactor(CONFIGS[name])
    shapes = [first] + [dict(zip(first, rng.sample(list(other.values()) * len(first), len(first)))) for other in later]
    for attributes in shapes + later:
        attributes = {semconv.AUDIT_ACTION: "a.b", semconv.LOG_RECORD_UID: new_uid(), **attributes}
        if redactor.is_clean(attributes):
            assert Redactor(CONFIGS[name]).changes_in(attributes, "", _ATTRIBUTE, []) is None, attributes


@pytest.mark.usefixtures("fast_path")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.one_of(near_misses, grouped_cards(), st.sampled_from(["GET", "Alice Smith", "mobile"])),
        min_size=3,
        max_size=3,
    )
)
def test_processor_output_is_the_same_with_and_without_the_fast_path(values: list[str]) -> None:
    """The same records through one processor (fast path, caches warm) and one fresh processor per record."""
    warm = RedactionProcessor(RedactionConfig(), AuditCapture())
    for index in range(3):
        metadata = {"y": values[(index + 1) % 3]}
        attributes = {semconv.AUDIT_ACTION: "a.b", "x": values[index % 3], semconv.AUDIT_METADATA: metadata}
        fresh = RedactionProcessor(RedactionConfig(), AuditCapture())
        fresh.redactor.is_clean = lambda attributes: False  # type: ignore[method-assign]
        outputs = []
        for processor in (warm, fresh):
            record = ReadWriteLogRecord(LogRecord(event_name="audit.a.b", attributes=dict(attributes)))
            processor.on_emit(record)
            outputs.append(dict(processor.next_processor.records[-1].log_record.attributes))
        assert outputs[0] == outputs[1]


@pytest.mark.usefixtures("fast_path")
def test_shapes_of_the_same_size_alternating_are_each_checked() -> None:
    """Plans are found by size: another shape of that size must never be read with the wrong plan."""
    capture = AuditCapture()
    processor = RedactionProcessor(RedactionConfig(), capture)
    shapes = [
        {"method": "sso", "mfa": "totp-app"},
        {"target": "u-2", "note": "card 4111-1111-1111-1111"},
        {"method": "sso", "target": "u-3"},
    ]
    for _ in range(4):
        for metadata in shapes:
            attributes = {semconv.AUDIT_ACTION: "a.b", semconv.AUDIT_METADATA: metadata}
            processor.on_emit(ReadWriteLogRecord(LogRecord(event_name="audit.a.b", attributes=attributes)))
    out = [record.log_record.attributes[semconv.AUDIT_METADATA] for record in capture.records]
    assert out == [shapes[0], {"target": "u-2", "note": "card " + MASK}, shapes[2]] * 4
