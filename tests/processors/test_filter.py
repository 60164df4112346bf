"""The audit policy filter: rule order, globs, levels, attribute predicates, non-audit records, policy files."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk._logs import LoggerProvider

import otel_audit
from otel_audit import semconv
from otel_audit.config import ConfigurationError
from otel_audit.processors import (
    AuditFilterProcessor,
    AuditPolicy,
    Level,
    PolicyError,
    Rule,
)
from otel_audit.testing import AuditCapture


def emit(action: str, outcome: str = "success", **kwargs) -> None:
    otel_audit.get_audit_logger("filter-test").emit(
        action, actor="u-1", outcome=outcome, metadata={"k": "v"}, changes={"title": {"old": "a", "new": "b"}}, **kwargs
    )


def actions(capture: AuditCapture) -> list[str]:
    return [attributes[semconv.AUDIT_ACTION] for attributes in capture.attributes]


def test_default_policy_keeps_every_audit_record_in_full(capture_pipeline) -> None:
    capture = capture_pipeline()
    emit("document.read")
    emit("user.delete", "failure")
    assert actions(capture) == ["document.read", "user.delete"]
    assert all(semconv.AUDIT_METADATA in attributes for attributes in capture.attributes)
    assert all(semconv.AUDIT_CHANGES in attributes for attributes in capture.attributes)


def test_first_matching_rule_wins(capture_pipeline) -> None:
    capture = capture_pipeline(
        policy=[
            {"level": "full", "actions": ["user.delete"]},
            {"level": "none", "actions": ["user.*"]},
            {"level": "metadata", "actions": ["*"]},
        ]
    )
    emit("user.delete")
    emit("user.login")
    emit("document.read")
    assert actions(capture) == ["user.delete", "document.read"]
    full, metadata_only = capture.attributes
    assert semconv.AUDIT_METADATA in full and semconv.AUDIT_CHANGES in full
    assert semconv.AUDIT_METADATA not in metadata_only and semconv.AUDIT_CHANGES not in metadata_only
    assert metadata_only[semconv.USER_ID] == "u-1" and metadata_only[semconv.AUDIT_OUTCOME] == "success"


def test_order_matters_same_rules_reversed(capture_pipeline) -> None:
    capture = capture_pipeline(
        policy=[{"level": "none", "actions": ["user.*"]}, {"level": "full", "actions": ["user.delete"]}]
    )
    emit("user.delete")
    emit("invoice.create")
    assert actions(capture) == ["invoice.create"]


def test_suffix_glob_outcomes_and_default(capture_pipeline) -> None:
    capture = capture_pipeline(
        policy={
            "rules": [
                {"level": "full", "actions": ["*.delete"], "outcomes": ["failure", "denied"]},
                {"level": "metadata", "actions": ["*.delete"]},
                {"level": "full", "actions": ["admin.*"]},
            ],
            "default": "none",
        }
    )
    emit("project.delete", "denied")
    emit("project.delete", "success")
    emit("admin.grant")
    emit("document.read")
    assert actions(capture) == ["project.delete", "project.delete", "admin.grant"]
    denied, succeeded, admin = capture.attributes
    assert semconv.AUDIT_METADATA in denied and semconv.AUDIT_METADATA not in succeeded
    assert semconv.AUDIT_METADATA in admin


def test_attribute_predicates_with_globs_and_list_attributes(capture_pipeline) -> None:
    capture = capture_pipeline(
        policy={
            "rules": [
                {"level": "full", "attributes": {"user.roles": "admin"}},
                {"level": "full", "attributes": {"audit.tenant.id": ["acme-*", "globex"]}},
            ],
            "default": "none",
        }
    )
    logger = otel_audit.get_audit_logger("filter-test")
    logger.emit("doc.read", actor={"id": "a", "roles": ["viewer", "admin"]})
    logger.emit("doc.read", actor={"id": "b", "roles": ["viewer"]})
    logger.emit("doc.read", actor="c", tenant="acme-eu")
    logger.emit("doc.read", actor="d", tenant="globex")
    logger.emit("doc.read", actor="e", tenant="initech")
    assert [attributes[semconv.USER_ID] for attributes in capture.attributes] == ["a", "c", "d"]


def test_non_audit_records_are_dropped_and_not_enabled() -> None:
    capture = AuditCapture()
    chain = AuditFilterProcessor(capture)
    provider = LoggerProvider()
    provider.add_log_record_processor(chain)
    plain = provider.get_logger("app")
    plain.emit(body="hello", attributes={"k": "v"})
    plain.emit(body="x", event_name="app.started", attributes={semconv.AUDIT_ACTION: "app.started"})
    plain.emit(body="y", event_name="audit.forged")  # audit-looking name without audit.action
    plain.emit(event_name="audit.user.login", attributes={semconv.AUDIT_ACTION: "user.login"})
    assert [attributes[semconv.AUDIT_ACTION] for attributes in capture.attributes] == ["user.login"]
    assert chain.enabled(event_name="app.started") is False
    assert chain.enabled(event_name="audit.user.login") is True
    provider.shutdown()


def test_metadata_level_also_drops_the_body() -> None:
    capture = AuditCapture()
    provider = LoggerProvider()
    provider.add_log_record_processor(AuditFilterProcessor(capture, AuditPolicy([Rule(Level.METADATA)])))
    provider.get_logger("app").emit(
        event_name="audit.user.login",
        body={"free": "text"},
        attributes={semconv.AUDIT_ACTION: "user.login", semconv.AUDIT_METADATA: {"a": 1}},
    )
    (record,) = capture.records
    assert record.log_record.body is None
    assert dict(record.log_record.attributes or {}) == {semconv.AUDIT_ACTION: "user.login"}
    provider.shutdown()


def test_python_rule_objects_and_caching_follow_rules() -> None:
    policy = AuditPolicy([Rule("none", actions=("health.*",)), Rule("metadata", outcomes=("success",))])
    assert policy.level_for("health.check", "success", {}) is Level.NONE
    assert policy.level_for("user.login", "success", {}) is Level.METADATA
    assert policy.level_for("user.login", "failure", {}) is Level.FULL
    assert policy.level_for("user.login", "success", {}) is Level.METADATA  # cached answer is the same


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"level": "verbose"}], "rules[0].level: unknown level 'verbose'"),
        ([{"level": "full", "actions": []}], "rules[0].actions: must be a non-empty string"),
        ([{"level": "full", "outcomes": ["ok"]}], "rules[0].outcomes: unknown outcome 'ok'"),
        ([{"level": "full", "action": "a.*", "verb": "get"}], "rules[0]: unknown key 'verb'"),
        ([{"actions": ["x.*"]}], "rules[0]: is missing `level`"),
        (["full"], "rules[0]: must be a mapping"),
        ({"rules": [], "default": "all"}, "default: unknown level 'all'"),
        ({"rulez": []}, "unknown top-level key 'rulez'"),
    ],
)
def test_bad_python_policy_fails_at_configure(rules, message) -> None:
    with pytest.raises(PolicyError) as info:
        otel_audit.configure(delivery_processor=AuditCapture(), policy=rules)
    assert message in str(info.value)
    assert isinstance(info.value, ConfigurationError)


GOOD_YAML = """\
# audit policy
rules:
  - level: none
    actions: ["health.*"]
  - level: metadata
    actions: ["*.read"]
default: full
"""


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("policy.yaml", GOOD_YAML),
        ("policy.toml", '[[rules]]\nlevel = "none"\nactions = ["health.*"]\n\n[[rules]]\nlevel = "metadata"\nactions = ["*.read"]\n'),
        ("policy.json", '{"rules": [{"level": "none", "actions": ["health.*"]}, {"level": "metadata", "actions": ["*.read"]}]}'),
    ],
)
def test_policy_files_load(tmp_path: Path, capture_pipeline, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    capture = capture_pipeline(policy=str(path))
    emit("health.check")
    emit("document.read")
    emit("document.share")
    assert actions(capture) == ["document.read", "document.share"]
    assert semconv.AUDIT_METADATA not in capture.attributes[0]
    assert semconv.AUDIT_METADATA in capture.attributes[1]


def test_policy_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capture_pipeline) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(GOOD_YAML)
    monkeypatch.setenv("OTEL_AUDIT_POLICY_FILE", str(path))
    capture = capture_pipeline()
    emit("health.ping")
    emit("user.login")
    assert actions(capture) == ["user.login"]


BAD_FILES = [
    # (file name, content, expected line, expected text)
    ("bad.yaml", "rules:\n  - level: full\n    actions: [\"a.*\"\n  - level: none\n", 4, "invalid YAML"),
    ("bad.yaml", "rules:\n  - level: full\n    actions: [\"a.*\"]\n  - level: loud\n    actions: [\"b.*\"]\n", 4,
     "rules[1].level: unknown level 'loud'"),
    ("bad.yaml", "rules:\n  - level: full\n  - level: none\n    outcomes: [maybe]\n", 4, "rules[1].outcomes: unknown outcome"),
    ("bad.toml", '[[rules]]\nlevel = "full"\n\n[[rules]]\nlevel = "none"\nactions = ["x.*"\n', 6, "invalid TOML"),
    ("bad.toml", '[[rules]]\nlevel = "full"\n\n[[rules]]\nlevel = "noisy"\n', 5, "rules[1].level: unknown level 'noisy'"),
    ("bad.json", '{\n  "rules": [\n    {"level": "full"},\n    {"level": "none",}\n  ]\n}\n', 4, "invalid JSON"),
    ("bad.json", '{\n  "rules": [\n    {"level": "full"},\n    {"level": "none",\n     "actions": 5}\n  ]\n}\n', 5,
     "rules[1].actions: must be a non-empty string"),
]


@pytest.mark.parametrize(("name", "text", "line", "reason"), BAD_FILES)
def test_bad_policy_file_names_file_line_and_reason(tmp_path: Path, name: str, text: str, line: int, reason: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        otel_audit.configure(delivery_processor=AuditCapture(), policy=str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert reason in message
    assert info.value.line == line


def test_unreadable_and_unknown_policy_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        AuditPolicy.from_file(tmp_path / "missing.yaml")
    other = tmp_path / "policy.ini"
    other.write_text("[rules]\n")
    with pytest.raises(PolicyError, match="unknown policy file type '.ini'"):
        AuditPolicy.from_file(other)


action_words = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
actions_strategy = st.lists(action_words, min_size=2, max_size=3).map(".".join)
globs = st.one_of(actions_strategy, action_words.map(lambda word: f"{word}.*"), action_words.map(lambda word: f"*.{word}"), st.just("*"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["none", "metadata", "full"]), st.lists(globs, min_size=1, max_size=3)), max_size=5),
    actions_strategy,
    st.sampled_from(["success", "failure", "denied", "unknown"]),
)
def test_policy_decision_is_the_first_rule_whose_glob_matches(rules, action: str, outcome: str) -> None:
    policy = AuditPolicy([{"level": level, "actions": patterns} for level, patterns in rules], default="full")
    expected = next(
        (Level(level) for level, patterns in rules if any(fnmatch.fnmatchcase(action, pattern) for pattern in patterns)),
        Level.FULL,
    )
    assert policy.level_for(action, outcome, {}) is expected
    assert policy.level_for(action, outcome, {}) is expected  # and the cached answer agrees
