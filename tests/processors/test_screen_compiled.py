"""The compiled redaction screen (processors/_screen.c) gives the same verdict as the Python reference it replaces
on the emit path: surely_clean for each text, values_clean for each value, the cached key decisions for each key."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_audit.processors.redact import _ATTRIBUTE, _NESTED, _SCAN, _SKIP, Redactor

from .test_prescreen import CONFIGS, anything, grouped_cards, id_like, near_misses, records, trees

screen = pytest.importorskip("otel_audit.processors._screen", reason="the _screen extension is not built here")

PROPERTY = settings(max_examples=300, deadline=None)
texts = st.one_of(
    near_misses, id_like, anything, grouped_cards(),
    st.from_regex(r"2026-0[1-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9](:[0-5][0-9](\.[0-9]{1,12})?)?(Z|[+-][0-9]{2}:?[0-9]{2})?", fullmatch=True),
    st.from_regex(r"[a-z0-9]{0,3}([-./]?[0-9]{1,5}){1,6}[a-z]?", fullmatch=True),
)


def python_text_verdict(redactor: Redactor, text: str) -> bool:
    """What values_clean says of one text."""
    return redactor.values_clean((text,))


def decide_every_key(redactor: Redactor, value: Any, where: str) -> None:
    """Fill the key caches for every key in `value`, so that the compiled screen never answers None."""
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is str:
                redactor.key_decision(key, where)
            decide_every_key(redactor, item, _NESTED)
    elif type(value) in (list, tuple):
        for item in value:
            decide_every_key(redactor, item, _NESTED)


def python_attributes_verdict(redactor: Redactor, attributes: dict[str, Any]) -> bool:
    """The reference: every key scanned or skipped, every scanned value clean by values_clean."""
    scanned = []
    for key, value in attributes.items():
        decision = redactor.key_decision(key)
        if decision == _SKIP:
            continue
        if decision != _SCAN:
            return False
        scanned.append(value)
    return redactor.values_clean(scanned)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(text=texts)
@example(text="12-34-56-78/123456789a")  # a nine-digit run and a chain, in different words
@example(text="123-456-789/123456789a")  # the smallest chain of several words that counts (9 digits)
@example(text="123-45678/123456789a")  # one digit fewer: it does not count
@example(text="123456789012")  # one word of 12 digits: no card, SSN or phone number
@example(text="1234567890123")  # one word of 13: a card's length
@example(text="0c6432fb-4582-4b72-9dcf-855180513969")  # a UUID whose last group is all digits
@example(text="12-34-")  # a chain ended by a trailing joiner
@example(text="a123456789-1")
@example(text="2026-01-01T00:00:08.500000+00:00")
@example(text="2026-01-01T00:00:08.123456789-0530")  # a 13-digit chain: not a timestamp shape
@example(text="prefix-xoxb-1234")
@example(text="ya29.abcdefghijklmnopqrstuvwxyz")
@example(text="hooks.slack.com/services/abcdefghijk")  # each token's fixed part, in a text without other punctuation
@example(text="call 415.555.0100")
@example(text="415.555.0100")
def test_text_verdict_equals_the_python_prescreen(name: str, text: str) -> None:
    compiled, reference = Redactor(CONFIGS[name]), Redactor(CONFIGS[name])
    compiled.key_decision("note")
    assert screen.attributes_clean({"note": text}, compiled._screen_config) is python_text_verdict(reference, text)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(attributes=records, body=trees)
def test_tree_verdicts_equal_values_clean(name: str, attributes: dict[str, Any], body: Any) -> None:
    compiled, reference = Redactor(CONFIGS[name]), Redactor(CONFIGS[name])
    decide_every_key(compiled, attributes, _ATTRIBUTE)
    decide_every_key(compiled, body, _NESTED)
    assert screen.attributes_clean(attributes, compiled._screen_config) is python_attributes_verdict(reference, attributes)
    assert screen.value_clean(body, compiled._screen_config) is reference.values_clean((body,))


def test_values_found_clean_by_the_detectors_are_remembered() -> None:
    """Text the pre-screen cannot clear (upper case, spaces) is clean once the detectors have cleared it."""
    redactor = Redactor()
    redactor.key_decision("agent")
    attributes = {"agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    assert screen.attributes_clean(attributes, redactor._screen_config) is False
    assert redactor.redact_text(attributes["agent"]) is None
    assert screen.attributes_clean(attributes, redactor._screen_config) is True


def test_a_key_without_a_cached_decision_is_left_to_the_python_path() -> None:
    redactor = Redactor()
    attributes = {"note": "fine", "meta": {"inner": "fine"}}
    assert screen.attributes_clean(attributes, redactor._screen_config) is None
    redactor.key_decision("note")
    redactor.key_decision("meta")
    assert screen.attributes_clean(attributes, redactor._screen_config) is None  # `inner` is not decided yet
    assert redactor.is_clean(attributes) is True  # the Python path decides it ...
    assert screen.attributes_clean(attributes, redactor._screen_config) is True  # ... and the screen reads that


@pytest.mark.parametrize(
    "value",
    [
        10**12, -(10**12), 2**70, 1e12, float("nan"), b"bytes", {1: "x"}, {"password": "x"},
        "x" * 70000, "naïve café", "\ud800 lone", object(),
    ],
    ids=repr,
)
def test_values_the_screen_refuses(value: Any) -> None:
    """Large numbers (card numbers), non-text keys, key rules, over-long and non-ASCII text, unknown types."""
    redactor = Redactor()
    redactor.key_decision("note")
    redactor.key_decision("password", _NESTED)
    assert screen.attributes_clean({"note": value}, redactor._screen_config) is False


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    redactor = Redactor()
    redactor.key_decision("note")
    value: Any = "fine"
    for _ in range(40):
        value = [value]
    assert screen.attributes_clean({"note": value}, redactor._screen_config) is False
    assert redactor.values_clean((value,)) is False


def test_bad_arguments_raise_type_errors() -> None:
    redactor = Redactor()
    with pytest.raises(TypeError):
        screen.attributes_clean([("note", "x")], redactor._screen_config)
    with pytest.raises(TypeError):
        screen.attributes_clean({}, redactor._screen_config[:-1])
    with pytest.raises(TypeError):
        screen.value_clean("x", (None,) * 9)
