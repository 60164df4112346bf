"""Audit policy filter: decide per record whether it is audited, and at which detail level.

Rules are matched in order, first match wins, in the spirit of the Kubernetes audit policy:

    rules:
      - level: none                 # drop: health probes are not audit events
        actions: ["health.*"]
      - level: metadata             # who/what/outcome only: no audit.metadata, audit.changes or body
        actions: ["*.read", "*.list"]
        outcomes: [success]
      - level: full
        attributes: {audit.tenant.id: "acme-*"}
    default: full

Rules come from Python (dicts or `Rule` objects) or from a YAML, TOML or JSON policy file. A bad policy fails
when the policy is loaded (at configure()) with the file, the line and the reason, never at emit time.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from .. import semconv
from ..config import ConfigurationError


class Level(str, enum.Enum):
    """How much of a matching record is kept."""

    NONE = "none"
    METADATA = "metadata"
    FULL = "full"


class PolicyError(ConfigurationError):
    """An audit policy is invalid; the message names the source, the line when known, the rule path and the reason."""

    def __init__(self, reason: str, *, source: str = "policy", line: int | None = None, path: str = "") -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {path + ': ' if path else ''}{reason}")
        self.source = source
        self.line = line
        self.path = path
        self.reason = reason


# Attributes and fields a `metadata` level keeps out: free context, changes and the body.
_DETAIL_ATTRIBUTES = (semconv.AUDIT_METADATA, semconv.AUDIT_CHANGES)


def _glob_matcher(patterns: Sequence[str]) -> re.Pattern[str]:
    """One compiled regex for a list of shell-style globs (`user.*`, `*.delete`)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns))


def _as_str_list(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    raise PolicyError("must be a non-empty string or a non-empty list of strings", path=path)


@dataclass(frozen=True)
class Rule:
    """One policy rule: every given matcher must match (absent matchers match anything).

    `actions`: globs on `audit.action`; `outcomes`: allowed outcomes; `attributes`: attribute name -> glob or list
    of globs (a list-valued attribute such as `user.roles` matches when any element matches).
    """

    level: Level | str
    actions: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "level", Level(self.level))
        except ValueError:
            raise PolicyError(
                f"unknown level {self.level!r} (expected none, metadata or full)", path="level"
            ) from None
        # () is "not given"; an explicit empty list is a mistake (a rule that could never match), so it is rejected.
        object.__setattr__(self, "actions", _as_str_list(self.actions, "actions") if self.actions != () else ())
        outcomes = _as_str_list(self.outcomes, "outcomes") if self.outcomes != () else ()
        allowed = {"success", "failure", "denied", "unknown"}
        for outcome in outcomes:
            if outcome not in allowed:
                raise PolicyError(f"unknown outcome {outcome!r} (expected {', '.join(sorted(allowed))})", path="outcomes")
        object.__setattr__(self, "outcomes", outcomes)
        if not isinstance(self.attributes, Mapping):
            raise PolicyError("must be a mapping of attribute name -> glob or list of globs", path="attributes")
        object.__setattr__(
            self,
            "attributes",
            {str(name): _as_str_list(value, f"attributes.{name}") for name, value in self.attributes.items()},
        )
        object.__setattr__(self, "_action_re", _glob_matcher(self.actions) if self.actions else None)
        object.__setattr__(
            self, "_attribute_res", tuple((name, _glob_matcher(globs)) for name, globs in self.attributes.items())
        )

    @property
    def uses_attributes(self) -> bool:
        """Whether the rule looks at attributes beyond action and outcome (then decisions cannot be cached)."""
        return bool(self.attributes)

    def matches(self, action: str, outcome: str, attributes: Mapping[str, Any]) -> bool:
        """Whether this rule applies to a record with this action, outcome and attributes."""
        action_re: re.Pattern[str] | None = self._action_re  # type: ignore[attr-defined]
        if action_re is not None and not action_re.match(action):
            return False
        if self.outcomes and outcome not in self.outcomes:
            return False
        for name, pattern in self._attribute_res:  # type: ignore[attr-defined]
            value = attributes.get(name)
            if value is None:
                return False
            values = value if isinstance(value, (list, tuple)) else (value,)
            if not any(pattern.match(str(item)) for item in values):
                return False
        return True


_RULE_KEYS = {"level", "actions", "action", "outcomes", "outcome", "attributes"}


def rule_from_mapping(data: Any, path: str = "rule") -> Rule:
    """A Rule from its dict form (singular `action`/`outcome` are accepted as aliases)."""
    if isinstance(data, Rule):
        return data
    if not isinstance(data, Mapping):
        raise PolicyError(f"must be a mapping with a `level`, got {type(data).__name__}", path=path)
    unknown = sorted(set(map(str, data)) - _RULE_KEYS)
    if unknown:
        raise PolicyError(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_RULE_KEYS))})", path=path)
    if "level" not in data:
        raise PolicyError("is missing `level` (none, metadata or full)", path=path)
    try:
        return Rule(
            level=data["level"],
            actions=data.get("actions", data.get("action", ())),
            outcomes=data.get("outcomes", data.get("outcome", ())),
            attributes=data.get("attributes", {}),
        )
    except PolicyError as exc:
        raise PolicyError(exc.reason, path=f"{path}.{exc.path}") from None


class AuditPolicy:
    """An ordered list of rules plus the level of records no rule matches; `level_for` is the decision."""

    def __init__(self, rules: Iterable[Rule | Mapping[str, Any]] = (), default: Level | str = Level.FULL) -> None:
        self.rules = tuple(rule_from_mapping(rule, f"rules[{index}]") for index, rule in enumerate(rules))
        try:
            self.default = Level(default)
        except ValueError:
            raise PolicyError(f"unknown level {default!r} (expected none, metadata or full)", path="default") from None
        self._cacheable = not any(rule.uses_attributes for rule in self.rules)
        self._cache: dict[tuple[str, str], Level] = {}

    def level_for(self, action: str, outcome: str, attributes: Mapping[str, Any]) -> Level:
        """The level of the first matching rule, or the default; cached per (action, outcome) when possible."""
        if self._cacheable:
            key = (action, outcome)
            level = self._cache.get(key)
            if level is None:
                level = self._decide(action, outcome, attributes)
                if len(self._cache) >= 4096:
                    self._cache.clear()
                self._cache[key] = level
            return level
        return self._decide(action, outcome, attributes)

    def _decide(self, action: str, outcome: str, attributes: Mapping[str, Any]) -> Level:
        for rule in self.rules:
            if rule.matches(action, outcome, attributes):
                return rule.level  # type: ignore[return-value]
        return self.default

    @property
    def keeps_everything(self) -> bool:
        """True for the default policy (every audit record kept in full): the filter then skips matching."""
        return not self.rules and self.default is Level.FULL

    @classmethod
    def from_data(cls, data: Any, source: str = "policy", lines: Mapping[str, int] | None = None) -> AuditPolicy:
        """A policy from parsed data: a list of rules, or {"rules": [...], "default": level}."""
        lines = lines or {}

        def fail(exc: PolicyError) -> PolicyError:
            line = None
            path = exc.path
            while path and line is None:
                line = lines.get(path)
                path = path.rpartition(".")[0] if "." in path else ""
            if line is None:
                line = lines.get("")
            return PolicyError(exc.reason, source=source, line=line, path=exc.path)

        if isinstance(data, Mapping):
            unknown = sorted(set(map(str, data)) - {"rules", "default"})
            if unknown:
                raise fail(PolicyError(f"unknown top-level key {unknown[0]!r} (allowed: default, rules)", path=unknown[0]))
            rules, default = data.get("rules", []), data.get("default", Level.FULL.value)
        else:
            rules, default = data, Level.FULL.value
        if not isinstance(rules, list):
            raise fail(PolicyError("must be a list of rules", path="rules"))
        try:
            return cls(rules, default)
        except PolicyError as exc:
            raise fail(exc) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> AuditPolicy:
        """Load a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) policy file; errors name the file and line."""
        file = Path(path)
        source = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot read policy file: {exc.strerror or exc}", source=source) from None
        suffix = file.suffix.lower()
        if suffix in (".yaml", ".yml"):
            data = _parse_yaml(text, source)
            return cls.from_data(data, source, _yaml_lines(text))
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise PolicyError("TOML policy files need Python 3.11 or later (use YAML or JSON)", source=source) from None
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                line_match = re.search(r"line (\d+)", str(exc))
                line = int(line_match.group(1)) if line_match else None
                if line is None and "end of document" in str(exc):
                    line = max(1, len(text.splitlines()))
                raise PolicyError(f"invalid TOML: {str(exc).split(' (at')[0]}", source=source, line=line) from None
            return cls.from_data(data, source, _toml_lines(text))
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PolicyError(f"invalid JSON: {exc.msg}", source=source, line=exc.lineno) from None
            return cls.from_data(data, source, _yaml_lines(text))
        raise PolicyError(f"unknown policy file type {suffix!r} (use .yaml, .yml, .toml or .json)", source=source)

    @classmethod
    def from_setting(cls, setting: Any) -> AuditPolicy:
        """The policy for AuditSettings.policy: None (default), an AuditPolicy, a list of rules, a dict, or a path."""
        if setting is None:
            return cls()
        if isinstance(setting, AuditPolicy):
            return setting
        if isinstance(setting, (str, os.PathLike)):
            return cls.from_file(setting)
        return cls.from_data(setting)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PolicyError(
            f"invalid YAML: {exc.problem or exc.context}", source=source, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"invalid YAML: {exc}", source=source) from None


def _yaml_lines(text: str) -> dict[str, int]:
    """Line numbers of every node by its rule path (`rules[2].level`), from the YAML node tree (JSON parses too)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = f"{path}.{key_node.value}" if path else str(key_node.value)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    if root is not None:
        if isinstance(root, yaml.SequenceNode):
            for index, item in enumerate(root.value):
                walk(item, f"rules[{index}]")
        else:
            walk(root, "")
    return lines


_TOML_TABLE = re.compile(r"^\s*\[\[\s*rules\s*\]\]\s*(#.*)?$")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"-]+)\s*=")


def _toml_lines(text: str) -> dict[str, int]:
    """Line numbers of `[[rules]]` tables and their keys (the form policy files use)."""
    lines: dict[str, int] = {}
    index = -1
    for number, line in enumerate(text.splitlines(), start=1):
        if _TOML_TABLE.match(line):
            index += 1
            lines[f"rules[{index}]"] = number
            continue
        key = _TOML_KEY.match(line)
        if key:
            name = key.group(1).strip('"')
            lines[f"rules[{index}].{name}" if index >= 0 else name] = number
    return lines


class AuditFilterProcessor(LogRecordProcessor):
    """Apply an AuditPolicy and pass kept records to `next_processor`; everything else never reaches it.

    The filter *wraps* the rest of the chain instead of sitting beside it on the provider: the SDK calls every
    registered processor with the same record and offers no way for one of them to drop it, so the only way to
    keep a record out of redaction and delivery is to not hand it on. Non-audit records that pass through the same
    provider are dropped from the audit pipeline the same way.
    """

    def __init__(self, next_processor: LogRecordProcessor, policy: AuditPolicy | None = None) -> None:
        self.next_processor = next_processor
        self.policy = policy or AuditPolicy()
        self._keep_all = self.policy.keeps_everything

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        name = record.event_name
        if not name or not name.startswith(semconv.EVENT_NAME_PREFIX):
            return
        attributes: Any = record.attributes  # BoundedAttributes or a plain dict, both writable
        # BoundedAttributes answers get/len through Python-level methods; its backing dict (when present) is the
        # measured hot path.
        readable = getattr(attributes, "_dict", attributes)
        action = readable.get(semconv.AUDIT_ACTION) if readable else None
        if action is None:
            return
        if not self._keep_all:
            level = self.policy.level_for(action, readable.get(semconv.AUDIT_OUTCOME, "unknown"), readable)
            if level is Level.NONE:
                return
            if level is Level.METADATA:
                for detail in _DETAIL_ATTRIBUTES:
                    if detail in attributes:
                        del attributes[detail]
                record.body = None
        self.next_processor.on_emit(log_record)

    def direct_stage(self, logger: Any) -> Callable[..., bool] | None:
        """This stage of the chain's direct path (see AuditLogger._emit_record): a policy that keeps every record
        whole leaves the filter nothing to do, so the path starts at the next stage; any other policy has none."""
        if not self._keep_all:
            return None
        following = getattr(self.next_processor, "direct_stage", None)
        return None if following is None else following(logger)

    def enabled(self, **kwargs: Any) -> bool:
        """Non-audit event names are never enabled; the rest depends on the next processor."""
        event_name = kwargs.get("event_name")
        if event_name is not None and not event_name.startswith(semconv.EVENT_NAME_PREFIX):
            return False
        return self.next_processor.enabled(**kwargs)

    def shutdown(self) -> None:
        self.next_processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.next_processor.force_flush(timeout_millis)
