"""The redaction corpus through the real pipeline: every positive redacted, at most 1% of negatives touched."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

import otel_audit
from otel_audit import semconv

from .conftest import NEGATIVES, POSITIVES

PII: dict[str, Any] = {"detectors": {"email": True, "phone": True}}


def emit_everywhere(value: str) -> None:
    """One event carrying `value` as the reason, a metadata value, inside a nested list and in a change."""
    otel_audit.get_audit_logger("corpus").emit(
        "corpus.check",
        actor="u-1",
        reason=value,
        metadata={"note": value, "nested": {"items": ["first", value], "depth": {"x": value}}},
        changes={"comment": {"old": "before", "new": value}},
    )


def exported_text(attributes: dict) -> str:
    return json.dumps(attributes, sort_keys=True)


def test_corpus_sizes() -> None:
    assert len(POSITIVES) >= 200
    assert len(NEGATIVES) >= 200
    assert {entry["kind"] for entry in POSITIVES} >= {
        "jwt", "bearer", "basic", "aws", "gcp", "github", "slack", "stripe", "pem", "card", "ssn", "iban",
        "url_password", "query_secret", "key_value", "email", "phone",
    }


def test_corpus_confusion(capture_pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    default = capture_pipeline()
    for entry in NEGATIVES:
        emit_everywhere(entry["value"])
    positives_default = [entry for entry in POSITIVES if entry["config"] == "default"]
    for entry in positives_default:
        emit_everywhere(entry["value"])
    records = default.attributes
    pii = capture_pipeline(redaction=PII)
    positives_pii = [entry for entry in POSITIVES if entry["config"] == "pii"]
    for entry in positives_pii:
        emit_everywhere(entry["value"])
    records_pii = pii.attributes
    assert len(records) == len(NEGATIVES) + len(positives_default)
    assert len(records_pii) == len(positives_pii)

    true_positive: Counter[str] = Counter()
    false_negative: list[dict[str, str]] = []
    for entry, attributes in zip(positives_default + positives_pii, records[len(NEGATIVES):] + records_pii):
        text = exported_text(attributes)
        if entry["secret"] in text or json.dumps(entry["secret"])[1:-1] in text:
            false_negative.append(entry)
        else:
            true_positive[entry["kind"]] += 1
            assert attributes[semconv.AUDIT_REDACTED], entry
    false_positive, true_negative = [], 0
    for entry, attributes in zip(NEGATIVES, records[: len(NEGATIVES)]):
        touched = semconv.AUDIT_REDACTED in attributes or attributes[semconv.AUDIT_REASON] != entry["value"]
        if touched:
            false_positive.append((entry, attributes.get(semconv.AUDIT_REDACTED)))
        else:
            true_negative += 1
            assert attributes[semconv.AUDIT_METADATA]["nested"]["items"][1] == entry["value"]

    with capsys.disabled():
        print(
            f"\nredaction corpus: TP={sum(true_positive.values())} FN={len(false_negative)} "
            f"TN={true_negative} FP={len(false_positive)} "
            f"(recall {sum(true_positive.values()) / len(POSITIVES):.1%}, "
            f"false-positive rate {len(false_positive) / len(NEGATIVES):.1%})"
        )
        print("  positives by detector: " + ", ".join(f"{kind}={count}" for kind, count in sorted(true_positive.items())))
    assert not false_negative, false_negative[:5]
    assert len(false_positive) <= len(NEGATIVES) // 100, false_positive


def test_negatives_with_pii_detectors(capsys: pytest.CaptureFixture[str]) -> None:
    """With email and phone detection on, only userinfo-bearing URLs (`https://user@host`) read as emails."""
    from otel_audit.processors.redact import RedactionConfig, Redactor

    redactor = Redactor(RedactionConfig(**PII))
    touched = [entry for entry in NEGATIVES if redactor.redact_text(entry["value"]) is not None]
    with capsys.disabled():
        print(f"\nnegatives touched with email+phone on: {len(touched)}/{len(NEGATIVES)}")
    assert all(entry["kind"] == "url" and "@" in entry["value"] for entry in touched), touched
