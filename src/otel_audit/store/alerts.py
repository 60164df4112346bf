"""Alert rules of the store: validation, and sliding-window threshold evaluation at ingest, coordinated in the database.

A rule ("5 failed `user.login` by one `user.id` within 300 s") is evaluated on the events each ingest batch stored.
Every matching event becomes a row of `alert_hits` (rule, group, event time, event id); windows are counted over
those rows by *event* timestamp, so they are shared by every store process on the database and survive restarts
(on start, and when a rule is created or changed, the hits are rebuilt from the stored events).

Per (rule, group) a state row holds the time of the last firing. Evaluation locks that row (`SELECT ... FOR UPDATE`
on PostgreSQL; SQLite's write transaction is already exclusive) in the same transaction that records the alert and
queues its webhook deliveries, and `alerts` has a unique (rule, group, window end) key, so several processes never
fire the same alert twice. Semantics: the alert fires at the first event time T where the window (T - window, T]
holds `count` matching events not older than the previous firing, and T is at least `cooldown` after it.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import Outcome
from .events import EventQuery, StoredEvent, format_time
from .storage import Storage, by_tenant
from .webhooks import WebhookRegistry, dumps_body, new_id

_log = logging.getLogger(__name__)

RULE_TYPES = ("threshold",)
SEVERITIES = ("info", "low", "medium", "high", "critical")
MAX_WINDOW_SECONDS = 30 * 86_400
MAX_COUNT = 1_000_000
MAX_GROUP_BY = 8
MAX_FILTERS = 32
MAX_FILTER_VALUES = 100
MAX_NAME_LENGTH = 200
MAX_TEXT_LENGTH = 1024
MAX_WEBHOOKS_PER_RULE = 20
MAX_EVENT_IDS = 1000
_KEY_CHUNK = 500
_PARSED_RULES_CACHE = 10_000
NS = 1_000_000_000
RULE_FIELDS = ("name", "type", "condition", "severity", "webhook_ids", "cooldown_seconds", "enabled", "description")
CONDITION_FIELDS = ("action", "outcome", "attributes", "count", "window_seconds", "group_by")
Scalar = str | int | float | bool

MIGRATIONS: list[list[str]] = [[
    """CREATE TABLE alert_rules (
        rule_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        spec TEXT NOT NULL,
        created_unix_nano BIGINT NOT NULL,
        updated_unix_nano BIGINT NOT NULL
    )""",
    "CREATE INDEX alert_rules_tenant ON alert_rules (tenant_id, enabled)",
    """CREATE TABLE alert_hits (
        rule_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        group_key TEXT NOT NULL,
        time_unix_nano BIGINT NOT NULL,
        PRIMARY KEY (rule_id, uid)
    )""",
    "CREATE INDEX alert_hits_window ON alert_hits (rule_id, group_key, time_unix_nano)",
    """CREATE TABLE alert_state (
        rule_id TEXT NOT NULL,
        group_key TEXT NOT NULL,
        last_fired_unix_nano BIGINT NOT NULL,
        quiet_until_unix_nano BIGINT NOT NULL,
        PRIMARY KEY (rule_id, group_key)
    )""",
    """CREATE TABLE alerts (
        alert_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        rule_id TEXT NOT NULL,
        group_key TEXT NOT NULL,
        window_end_unix_nano BIGINT NOT NULL,
        created_unix_nano BIGINT NOT NULL,
        payload TEXT NOT NULL,
        UNIQUE (rule_id, group_key, window_end_unix_nano)
    )""",
    "CREATE INDEX alerts_tenant ON alerts (tenant_id, alert_id)",
]]


class RuleError(ValueError):
    """An alert rule is invalid; `field` names the offending field (dotted, e.g. `condition.count`)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any, name: str, max_length: int = MAX_TEXT_LENGTH, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise RuleError(name, "must be a non-empty string" if not allow_empty else "must be a string")
    if len(value) > max_length or "\x00" in value:
        raise RuleError(name, f"at most {max_length} characters, no NUL")
    return value


def _same(left: Any, right: Any) -> bool:
    """Equality that does not confuse True with 1."""
    return isinstance(left, bool) == isinstance(right, bool) and left == right


@dataclass(frozen=True)
class Condition:
    """What a threshold rule counts: matching events (action glob, outcome, attribute equality) per group."""

    action: str
    outcome: str | None
    attributes: dict[str, tuple[Scalar, ...]]
    count: int
    window_seconds: float
    group_by: tuple[str, ...]
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def window_ns(self) -> int:
        return int(self.window_seconds * NS)

    def matches(self, event: StoredEvent) -> bool:
        if self._pattern is None:
            if event.action != self.action:
                return False
        elif not self._pattern.fullmatch(event.action):
            return False
        if self.outcome is not None and event.outcome != self.outcome:
            return False
        for name, allowed in self.attributes.items():
            value = event.attributes.get(name)
            if not any(_same(value, item) for item in allowed):
                return False
        return True

    def group_of(self, event: StoredEvent) -> dict[str, Any]:
        return {name: event.attributes.get(name) for name in self.group_by}

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"action": self.action, "count": self.count, "window_seconds": self.window_seconds,
                                  "group_by": list(self.group_by)}
        if self.outcome is not None:
            result["outcome"] = self.outcome
        if self.attributes:
            result["attributes"] = {name: list(values) if len(values) > 1 else values[0]
                                    for name, values in self.attributes.items()}
        return result

    @property
    def action_query(self) -> tuple[str | None, str | None]:
        """(exact action, action prefix) to narrow a stored-event scan; a glob narrows to its literal prefix."""
        if self._pattern is None:
            return self.action, None
        prefix = self.action.split("*", 1)[0]
        return None, prefix or None


def _parse_condition(raw: Any) -> Condition:
    if not isinstance(raw, Mapping):
        raise RuleError("condition", "must be an object with action, count and window_seconds")
    unknown = sorted(set(raw) - set(CONDITION_FIELDS))
    if unknown:
        raise RuleError(f"condition.{unknown[0]}", f"unknown field (allowed: {', '.join(CONDITION_FIELDS)})")
    for required in ("action", "count", "window_seconds"):
        if required not in raw:
            raise RuleError(f"condition.{required}", "is required")
    action = _text(raw["action"], "condition.action", 256)
    if not re.fullmatch(r"[A-Za-z0-9_.\-*]+", action):
        raise RuleError("condition.action", "letters, digits, '.', '_', '-' and '*' (any characters) only")
    pattern = re.compile(".*".join(re.escape(part) for part in action.split("*"))) if "*" in action else None
    outcome = raw.get("outcome")
    outcomes = [member.value for member in Outcome]
    if outcome is not None and outcome not in outcomes:
        raise RuleError("condition.outcome", f"must be one of {', '.join(outcomes)}")
    count = raw["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise RuleError("condition.count", f"must be an integer from 1 to {MAX_COUNT}")
    window = raw["window_seconds"]
    if not _is_number(window) or not 0 < window <= MAX_WINDOW_SECONDS:
        raise RuleError("condition.window_seconds",
                        f"must be a number of seconds, above 0 and at most {MAX_WINDOW_SECONDS}")
    group_by_raw = raw.get("group_by") or []
    if not isinstance(group_by_raw, list) or len(group_by_raw) > MAX_GROUP_BY:
        raise RuleError("condition.group_by", f"must be a list of at most {MAX_GROUP_BY} attribute names")
    group_by = tuple(_text(name, "condition.group_by", 256) for name in group_by_raw)
    if len(set(group_by)) != len(group_by):
        raise RuleError("condition.group_by", "lists an attribute twice")
    filters_raw = raw.get("attributes") or {}
    if not isinstance(filters_raw, Mapping) or len(filters_raw) > MAX_FILTERS:
        raise RuleError("condition.attributes", f"must be an object of at most {MAX_FILTERS} attribute -> value(s)")
    filters: dict[str, tuple[Scalar, ...]] = {}
    for name, value in filters_raw.items():
        where = f"condition.attributes.{name}"
        _text(name, "condition.attributes", 256)
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > MAX_FILTER_VALUES:
            raise RuleError(where, f"give a value or a list of 1-{MAX_FILTER_VALUES} values")
        for item in values:
            if not (isinstance(item, str) and len(item) <= MAX_TEXT_LENGTH) and not _is_number(item) \
                    and not isinstance(item, bool):
                raise RuleError(where, "values must be strings, numbers or booleans")
        filters[name] = tuple(values)
    return Condition(action, outcome, filters, count, float(window), group_by, pattern)


@dataclass(frozen=True)
class AlertRule:
    """A tenant's validated alert rule."""

    rule_id: str
    tenant_id: str
    name: str
    type: str
    condition: Condition
    severity: str
    webhook_ids: tuple[str, ...]
    cooldown_seconds: float | None
    enabled: bool
    description: str
    created_unix_nano: int = 0
    updated_unix_nano: int = 0

    @property
    def cooldown_ns(self) -> int:
        """The quiet period after a firing (default: the window)."""
        seconds = self.condition.window_seconds if self.cooldown_seconds is None else self.cooldown_seconds
        return int(seconds * NS)

    def spec(self) -> dict[str, Any]:
        """The user-facing definition (what POST/PUT accept)."""
        return {
            "name": self.name, "type": self.type, "condition": self.condition.to_json(), "severity": self.severity,
            "webhook_ids": list(self.webhook_ids), "cooldown_seconds": self.cooldown_seconds, "enabled": self.enabled,
            "description": self.description,
        }

    def to_json(self) -> dict[str, Any]:
        return {"id": self.rule_id, **self.spec(), "created_unix_nano": self.created_unix_nano,
                "updated_unix_nano": self.updated_unix_nano}


def parse_rule(payload: Any, rule_id: str, tenant_id: str, created: int = 0, updated: int = 0) -> AlertRule:
    """Validate a rule definition (the JSON of POST/PUT) into an AlertRule, or raise RuleError naming the field."""
    if not isinstance(payload, Mapping):
        raise RuleError("body", "must be a JSON object")
    unknown = sorted(set(payload) - set(RULE_FIELDS))
    if unknown:
        raise RuleError(unknown[0], f"unknown field (allowed: {', '.join(RULE_FIELDS)})")
    for required in ("name", "condition"):
        if required not in payload:
            raise RuleError(required, "is required")
    name = _text(payload["name"], "name", MAX_NAME_LENGTH)
    rule_type = payload.get("type", "threshold")
    if rule_type not in RULE_TYPES:
        raise RuleError("type", f"must be one of {', '.join(RULE_TYPES)}")
    condition = _parse_condition(payload["condition"])
    severity = payload.get("severity", "medium")
    if severity not in SEVERITIES:
        raise RuleError("severity", f"must be one of {', '.join(SEVERITIES)}")
    webhook_ids = payload.get("webhook_ids") or []
    if not isinstance(webhook_ids, list) or len(webhook_ids) > MAX_WEBHOOKS_PER_RULE \
            or not all(isinstance(item, str) and 0 < len(item) <= 64 for item in webhook_ids):
        raise RuleError("webhook_ids", f"must be a list of at most {MAX_WEBHOOKS_PER_RULE} webhook ids")
    cooldown = payload.get("cooldown_seconds")
    if cooldown is not None and (not _is_number(cooldown) or not 0 <= cooldown <= MAX_WINDOW_SECONDS):
        raise RuleError("cooldown_seconds", f"must be a number of seconds from 0 to {MAX_WINDOW_SECONDS}")
    enabled = payload.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError("enabled", "must be true or false")
    description = _text(payload.get("description", ""), "description", allow_empty=True)
    return AlertRule(rule_id, tenant_id, name, rule_type, condition, severity, tuple(dict.fromkeys(webhook_ids)),
                     None if cooldown is None else float(cooldown), enabled, description, created, updated)


def _group_key(group: Mapping[str, Any]) -> str:
    return json.dumps(list(group.values()), ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def _rfc3339(unix_nano: int) -> str:
    return format_time(unix_nano)


@dataclass
class _Hit:
    rule: AlertRule
    uid: str
    group: dict[str, Any]
    group_key: str
    time_unix_nano: int


def _insert_hits(conn: Any, p: str, hits: Sequence[_Hit]) -> None:
    """Record hits (in key order, so concurrent writers never deadlock); already recorded ones are skipped."""
    conn.cursor().executemany(
        f"INSERT INTO alert_hits (rule_id, uid, group_key, time_unix_nano) VALUES ({p}, {p}, {p}, {p})"
        " ON CONFLICT (rule_id, uid) DO NOTHING",
        sorted((hit.rule.rule_id, hit.uid, hit.group_key, hit.time_unix_nano) for hit in hits),
    )


def _hit_time(hit: _Hit) -> int:
    return hit.time_unix_nano


def find_firings(hits: Sequence[tuple[int, str]], threshold: int, window_ns: int, last_fired: int, quiet_until: int,
                 cooldown_ns: int) -> list[tuple[int, list[tuple[int, str]]]]:
    """The firings within time-sorted (time, uid) hits: [(window end T, hits in (T - window, T])]."""
    firings: list[tuple[int, list[tuple[int, str]]]] = []
    start = 0
    index = 0
    while index < len(hits):
        end_time = hits[index][0]
        end = index
        while end + 1 < len(hits) and hits[end + 1][0] == end_time:
            end += 1
        if end_time > last_fired and end_time >= quiet_until:
            while start <= end and (hits[start][0] <= end_time - window_ns or hits[start][0] <= last_fired):
                start += 1
            if end - start + 1 >= threshold:
                firings.append((end_time, list(hits[start : end + 1])))
                last_fired = end_time
                quiet_until = end_time + cooldown_ns
                start = end + 1
        index = end + 1
    return firings


class AlertEngine:
    """Rules CRUD, the ingest hook that evaluates them, fired alerts, and the window rebuild."""

    def __init__(self, storage: Storage, webhooks: WebhookRegistry, *, notify: Callable[[], None] | None = None,
                 hit_retention_seconds: float = 86_400.0) -> None:
        self.storage = storage
        self.webhooks = webhooks
        self.notify = notify
        self.hit_retention_ns = int(hit_retention_seconds * NS)
        self.rebuild_requested = threading.Event()
        self._parsed: dict[tuple[str, str, int], AlertRule] = {}

    def migrate(self) -> None:
        self.storage.apply_migrations("alerts", MIGRATIONS)

    # rules ------------------------------------------------------------------------------------------------

    def _check_webhooks(self, conn: Any, rule: AlertRule) -> None:
        missing = [item for item in rule.webhook_ids
                   if item not in self.webhooks.existing_ids(conn, rule.tenant_id, rule.webhook_ids)]
        if missing:
            raise RuleError("webhook_ids", f"no webhook {missing[0]!r} in this tenant")

    def create_rule(self, tenant_id: str, payload: Any) -> AlertRule:
        """Validate and store a rule, then build its windows from recent stored events."""
        now = time.time_ns()
        rule = parse_rule(payload, new_id("rul_"), tenant_id, now, now)
        p = self.storage.placeholder
        with self.storage.transaction() as conn:
            self._check_webhooks(conn, rule)
            conn.execute(
                "INSERT INTO alert_rules (rule_id, tenant_id, enabled, spec, created_unix_nano, updated_unix_nano)"
                f" VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
                (rule.rule_id, tenant_id, int(rule.enabled), json.dumps(rule.spec()), now, now),
            )
        if rule.enabled:
            self.rebuild_rule(rule)
        return rule

    def _rule_from_row(self, row: Sequence[Any]) -> AlertRule:
        """The parsed rule of a row (cached by id and spec text: ingest reads the rules on every batch)."""
        rule_id, tenant_id, _, spec, created, updated = row
        key = (rule_id, spec, updated)
        rule = self._parsed.get(key)
        if rule is None:
            if len(self._parsed) >= _PARSED_RULES_CACHE:
                self._parsed.clear()
            rule = self._parsed[key] = parse_rule(json.loads(spec), rule_id, tenant_id, created, updated)
        return rule

    def _rules(self, where: str, params: Sequence[Any]) -> list[AlertRule]:
        with self.storage.read() as conn:
            rows = conn.execute(
                "SELECT rule_id, tenant_id, enabled, spec, created_unix_nano, updated_unix_nano FROM alert_rules"
                f" WHERE {where} ORDER BY rule_id",
                params,
            ).fetchall()
        return [self._rule_from_row(row) for row in rows]

    def list_rules(self, tenant_id: str) -> list[AlertRule]:
        return self._rules(f"tenant_id = {self.storage.placeholder}", (tenant_id,))

    def get_rule(self, tenant_id: str, rule_id: str) -> AlertRule | None:
        p = self.storage.placeholder
        found = self._rules(f"tenant_id = {p} AND rule_id = {p}", (tenant_id, rule_id))
        return found[0] if found else None

    def rules_using_webhook(self, tenant_id: str, webhook_id: str) -> list[AlertRule]:
        return [rule for rule in self.list_rules(tenant_id) if webhook_id in rule.webhook_ids]

    def update_rule(self, tenant_id: str, rule_id: str, payload: Any, *, partial: bool) -> AlertRule | None:
        """Replace (PUT) or merge into (PATCH) a rule; a changed condition restarts its windows from stored events."""
        current = self.get_rule(tenant_id, rule_id)
        if current is None:
            return None
        if partial:
            if not isinstance(payload, Mapping):
                raise RuleError("body", "must be a JSON object")
            merged = current.spec()
            if isinstance(payload.get("condition"), Mapping):
                payload = {**payload, "condition": {**merged["condition"], **payload["condition"]}}
            payload = {**merged, **payload}
        now = time.time_ns()
        rule = parse_rule(payload, rule_id, tenant_id, current.created_unix_nano, now)
        p = self.storage.placeholder
        restart = rule.condition != current.condition or (rule.enabled and not current.enabled)
        with self.storage.transaction() as conn:
            self._check_webhooks(conn, rule)
            conn.execute(
                f"UPDATE alert_rules SET enabled = {p}, spec = {p}, updated_unix_nano = {p}"
                f" WHERE tenant_id = {p} AND rule_id = {p}",
                (int(rule.enabled), json.dumps(rule.spec()), now, tenant_id, rule_id),
            )
            if rule.condition != current.condition:
                conn.execute(f"DELETE FROM alert_hits WHERE rule_id = {p}", (rule_id,))
        if restart and rule.enabled:
            self.rebuild_rule(rule)
        return rule

    def delete_rule(self, tenant_id: str, rule_id: str) -> bool:
        """Delete a rule with its windows and state (fired alerts and their deliveries stay)."""
        p = self.storage.placeholder
        with self.storage.transaction() as conn:
            deleted = conn.execute(
                f"DELETE FROM alert_rules WHERE tenant_id = {p} AND rule_id = {p}", (tenant_id, rule_id)
            ).rowcount
            if deleted:
                conn.execute(f"DELETE FROM alert_hits WHERE rule_id = {p}", (rule_id,))
                conn.execute(f"DELETE FROM alert_state WHERE rule_id = {p}", (rule_id,))
        return bool(deleted)

    # evaluation -------------------------------------------------------------------------------------------

    def on_ingest(self, events: Sequence[StoredEvent]) -> None:
        """The store's ingest hook: evaluate the tenants' enabled rules over the events just stored."""
        for tenant_id, tenant_events in by_tenant(events).items():
            p = self.storage.placeholder
            try:
                rules = self._rules(f"tenant_id = {p} AND enabled = 1", (tenant_id,))
                if rules:
                    self.evaluate(tenant_id, self._hits(rules, tenant_events))
            except Exception:
                self.rebuild_requested.set()  # the events are stored: a rebuild from them catches up
                raise

    @staticmethod
    def _hits(rules: Iterable[AlertRule], events: Iterable[StoredEvent]) -> list[_Hit]:
        hits = []
        event_list = list(events)
        for rule in rules:
            for event in event_list:
                if rule.condition.matches(event):
                    group = rule.condition.group_of(event)
                    hits.append(_Hit(rule, event.uid, group, _group_key(group), event.time_unix_nano))
        return hits

    def evaluate(self, tenant_id: str, hits: Sequence[_Hit]) -> int:
        """Record hits and fire what they complete, in one transaction; returns how many alerts fired.

        Per rule: the state rows of every touched group are locked (in key order, so concurrent evaluations never
        deadlock), one aggregate count picks the groups that may have reached the threshold, and only those are
        examined event by event.
        """
        if not hits:
            return 0
        by_rule: dict[str, tuple[AlertRule, dict[str, list[_Hit]]]] = {}
        for hit in hits:
            by_rule.setdefault(hit.rule.rule_id, (hit.rule, {}))[1].setdefault(hit.group_key, []).append(hit)
        fired = queued = 0
        p = self.storage.placeholder
        with self.storage.transaction() as conn:
            _insert_hits(conn, p, hits)
            for rule_id in sorted(by_rule):
                rule, groups = by_rule[rule_id]
                for rule_fired, rule_queued in self._evaluate_rule(conn, rule, groups):
                    fired += rule_fired
                    queued += rule_queued
        if queued and self.notify is not None:
            self.notify()
        return fired

    def _evaluate_rule(self, conn: Any, rule: AlertRule,
                       groups: Mapping[str, list[_Hit]]) -> Iterator[tuple[int, int]]:
        """(alerts fired, deliveries queued) per group of one rule that fired."""
        p = self.storage.placeholder
        lock = " FOR UPDATE" if self.storage.dialect == "postgresql" else ""
        rule_id, window = rule.rule_id, rule.condition.window_ns
        keys = sorted(groups)
        conn.cursor().executemany(
            "INSERT INTO alert_state (rule_id, group_key, last_fired_unix_nano, quiet_until_unix_nano)"
            f" VALUES ({p}, {p}, -1, -1) ON CONFLICT (rule_id, group_key) DO NOTHING",
            [(rule_id, key) for key in keys],
        )
        states: dict[str, tuple[int, int]] = {}
        counts: dict[str, int] = {}
        for start in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[start : start + _KEY_CHUNK]
            marks = ", ".join([p] * len(chunk))
            for key, last_fired, quiet_until in conn.execute(
                "SELECT group_key, last_fired_unix_nano, quiet_until_unix_nano FROM alert_state"
                f" WHERE rule_id = {p} AND group_key IN ({marks}) ORDER BY group_key{lock}",
                (rule_id, *chunk),
            ).fetchall():
                states[key] = (int(last_fired), int(quiet_until))
            low = min(max(states[key][0], min(hit.time_unix_nano for hit in groups[key]) - window) for key in chunk)
            high = max(hit.time_unix_nano for key in chunk for hit in groups[key]) + window
            for key, count in conn.execute(
                f"SELECT group_key, COUNT(*) FROM alert_hits WHERE rule_id = {p} AND group_key IN ({marks})"
                f" AND time_unix_nano > {p} AND time_unix_nano < {p} GROUP BY group_key",
                (rule_id, *chunk, low, high),
            ).fetchall():
                counts[key] = int(count)
        for key in keys:
            if counts.get(key, 0) < rule.condition.count:
                continue
            last_fired, quiet_until = states[key]
            group_hits = groups[key]
            earliest = min(hit.time_unix_nano for hit in group_hits)
            latest = max(hit.time_unix_nano for hit in group_hits)
            rows = conn.execute(
                f"SELECT time_unix_nano, uid FROM alert_hits WHERE rule_id = {p} AND group_key = {p}"
                f" AND time_unix_nano > {p} AND time_unix_nano < {p} ORDER BY time_unix_nano, uid",
                (rule_id, key, max(last_fired, earliest - window), latest + window),
            ).fetchall()
            firings = find_firings([(int(t), u) for t, u in rows], rule.condition.count, window, last_fired,
                                   quiet_until, rule.cooldown_ns)
            if not firings:
                continue
            queued = sum(self._fire(conn, rule, group_hits[0].group, key, end_time, window_hits)
                         for end_time, window_hits in firings)
            end_time = firings[-1][0]
            conn.execute(
                f"UPDATE alert_state SET last_fired_unix_nano = {p}, quiet_until_unix_nano = {p}"
                f" WHERE rule_id = {p} AND group_key = {p}",
                (end_time, end_time + rule.cooldown_ns, rule_id, key),
            )
            yield len(firings), queued

    def _fire(self, conn: Any, rule: AlertRule, group: dict[str, Any], group_key: str, end_time: int,
              window_hits: Sequence[tuple[int, str]]) -> int:
        """Store one alert and queue its deliveries; returns how many deliveries were queued."""
        p = self.storage.placeholder
        now = time.time_ns()
        alert_id = new_id("alr_")
        condition = rule.condition
        group_text = ", ".join(f"{name}={value}" for name, value in group.items())
        payload = {
            "type": "alert.fired",
            "alert": {
                "id": alert_id,
                "tenant_id": rule.tenant_id,
                "fired_at": _rfc3339(now),
                "rule": {"id": rule.rule_id, "name": rule.name, "type": rule.type, "severity": rule.severity,
                         "condition": condition.to_json()},
                "group": group,
                "count": len(window_hits),
                "threshold": condition.count,
                "window_seconds": condition.window_seconds,
                "window_start": _rfc3339(max(end_time - condition.window_ns, 0)),
                "window_end": _rfc3339(end_time),
                "first_event_time": _rfc3339(window_hits[0][0]),
                "event_ids": [uid for _, uid in window_hits[:MAX_EVENT_IDS]],
            },
            "text": (f"[{rule.severity}] {rule.name}: {len(window_hits)} {condition.action} events within "
                     f"{condition.window_seconds:g} s" + (f" ({group_text})" if group_text else "")),
        }
        body = dumps_body(payload)
        inserted = conn.execute(
            "INSERT INTO alerts (alert_id, tenant_id, rule_id, group_key, window_end_unix_nano, created_unix_nano,"
            f" payload) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT (rule_id, group_key, window_end_unix_nano) DO NOTHING",
            (alert_id, rule.tenant_id, rule.rule_id, group_key, end_time, now, body),
        ).rowcount
        if not inserted:
            return 0
        webhook_ids = [item for item in rule.webhook_ids
                       if item in self.webhooks.existing_ids(conn, rule.tenant_id, rule.webhook_ids)]
        _log.info("otel-audit alerts: %s fired for %s (%s)", rule.name, rule.tenant_id, group_text)
        return self.webhooks.enqueue(conn, rule.tenant_id, webhook_ids, alert_id, body)

    def rebuild_rule(self, rule: AlertRule, now_unix_nano: int | None = None) -> int:
        """Rebuild a rule's windows from stored events of the last window + retention, firing what they complete.

        All hits are recorded first, then each group is evaluated once over its whole span, so the alert fires at
        the first qualifying window whatever order the events are read in.
        """
        now = time.time_ns() if now_unix_nano is None else now_unix_nano
        since = now - max(rule.condition.window_ns, rule.cooldown_ns) - self.hit_retention_ns
        action, prefix = rule.condition.action_query
        query = EventQuery(action=action, action_prefix=prefix, outcome=rule.condition.outcome, since=max(since, 0))
        bounds: dict[str, tuple[_Hit, _Hit]] = {}
        batch: list[StoredEvent] = []
        for event in itertools.chain(self.storage.iterate(rule.tenant_id, query), [None]):
            if event is not None:
                batch.append(event)
            if len(batch) >= 1000 or (event is None and batch):
                hits = self._hits([rule], batch)
                self._record(hits)
                for hit in hits:
                    first, last = bounds.get(hit.group_key, (hit, hit))
                    bounds[hit.group_key] = (min(first, hit, key=_hit_time), max(last, hit, key=_hit_time))
                batch = []
        return self.evaluate(rule.tenant_id, [hit for pair in bounds.values() for hit in pair])

    def _record(self, hits: Sequence[_Hit]) -> None:
        p = self.storage.placeholder
        with self.storage.transaction() as conn:
            _insert_hits(conn, p, hits)

    def rebuild(self) -> int:
        """Rebuild every enabled rule's windows (at startup: nothing ingested before a crash is forgotten)."""
        fired = 0
        for rule in self._rules("enabled = 1", ()):
            try:
                fired += self.rebuild_rule(rule)
            except Exception:  # noqa: BLE001 - one broken rule must not stop the others
                _log.exception("otel-audit alerts: rebuilding rule %s failed", rule.rule_id)
        return fired

    def prune(self, now_unix_nano: int | None = None) -> int:
        """Forget hits too old to matter (older than window/cooldown + retention); returns how many."""
        now = time.time_ns() if now_unix_nano is None else now_unix_nano
        p = self.storage.placeholder
        removed = 0
        for rule in self._rules("1 = 1", ()):
            cutoff = now - max(rule.condition.window_ns, rule.cooldown_ns) - self.hit_retention_ns
            with self.storage.transaction() as conn:
                removed += conn.execute(
                    f"DELETE FROM alert_hits WHERE rule_id = {p} AND time_unix_nano < {p}", (rule.rule_id, cutoff)
                ).rowcount
        return removed

    # alerts -----------------------------------------------------------------------------------------------

    def list_alerts(self, tenant_id: str, *, rule_id: str | None = None, limit: int = 100,
                    before: str | None = None) -> list[dict[str, Any]]:
        """The tenant's fired alerts, newest first (`before`: an alert id from the previous page)."""
        p = self.storage.placeholder
        clauses, params = [f"tenant_id = {p}"], [tenant_id]
        if rule_id is not None:
            clauses.append(f"rule_id = {p}")
            params.append(rule_id)
        if before is not None:
            clauses.append(f"alert_id < {p}")
            params.append(before)
        with self.storage.read() as conn:
            rows = conn.execute(
                f"SELECT payload FROM alerts WHERE {' AND '.join(clauses)} ORDER BY alert_id DESC LIMIT {int(limit)}",
                params,
            ).fetchall()
        return [json.loads(row[0])["alert"] for row in rows]

    def get_alert(self, tenant_id: str, alert_id: str) -> dict[str, Any] | None:
        p = self.storage.placeholder
        with self.storage.read() as conn:
            row = conn.execute(
                f"SELECT payload FROM alerts WHERE tenant_id = {p} AND alert_id = {p}", (tenant_id, alert_id)
            ).fetchone()
        return json.loads(row[0])["alert"] if row else None

