"""Audit events as plain, validated data: who did what to which resource, with what outcome.

Everything here is checked once, when the event is built, so later stages (records, processors, the encoder)
can trust the values without validating them again. No I/O.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import math
import pathlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

AnyValue = Union[str, bool, int, float, bytes, None, "list[AnyValue]", "dict[str, AnyValue]"]

_ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
_MAX_ACTION_LEN = 128
_VALID_ACTIONS_CACHE = 4096
# Actions that passed validation once; AuditLogger.emit's fast path trusts them without the regular expression.
validated_actions: set[str] = set()
MAX_ID_LEN = 1024
MAX_TYPE_LEN = 128
MAX_REASON_LEN = 4096
MAX_DEPTH = 16
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class AuditEventError(ValueError):
    """An audit event is invalid: `field` names the offending field (dotted path) and `rule` what it broke."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"invalid audit event: {field}: {rule}")
        self.field = field
        self.rule = rule


class Outcome(str, enum.Enum):
    """How the audited operation ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"
    UNKNOWN = "unknown"


class ActorType(str, enum.Enum):
    """What kind of principal acted."""

    USER = "user"
    SERVICE = "service"
    API_KEY = "api_key"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"


def _enum_value(enum_cls: type[enum.Enum], value: Any, field_name: str) -> Any:
    if type(value) is enum_cls:
        return value
    member = enum_cls._value2member_map_.get(value) if isinstance(value, str) else None
    if member is not None:
        return member
    try:
        return enum_cls(value)
    except ValueError:
        allowed = "/".join(member.value for member in enum_cls)
        raise AuditEventError(field_name, f"must be one of {allowed}, got {value!r}") from None


def _check_str(value: Any, field_name: str, *, required: bool = False, max_len: int = MAX_ID_LEN) -> str | None:
    if value is None:
        if required:
            raise AuditEventError(field_name, "is required")
        return None
    if not isinstance(value, str):
        raise AuditEventError(field_name, f"must be a string, got {type(value).__name__}")
    if required and not value:
        raise AuditEventError(field_name, "must not be empty")
    if len(value) > max_len:
        raise AuditEventError(field_name, f"must be at most {max_len} characters")
    return value


@dataclass(frozen=True, slots=True)
class Actor:
    """The principal that acted; `impersonator_id` is set when someone acts on behalf of `id`."""

    id: str | None = None
    type: ActorType = ActorType.USER
    email: str | None = None
    name: str | None = None
    roles: tuple[str, ...] = ()
    impersonator_id: str | None = None

    def __post_init__(self) -> None:
        _check_str(self.id, "actor.id")
        _check_str(self.email, "actor.email")
        _check_str(self.name, "actor.name")
        _check_str(self.impersonator_id, "actor.impersonator_id")
        object.__setattr__(self, "type", _enum_value(ActorType, self.type, "actor.type"))
        if isinstance(self.roles, str) or not isinstance(self.roles, (list, tuple, set, frozenset)):
            raise AuditEventError("actor.roles", "must be a list of strings")
        roles = tuple(self.roles)
        for index, role in enumerate(roles):
            _check_str(role, f"actor.roles[{index}]", required=True)
        object.__setattr__(self, "roles", roles)

    @classmethod
    def anonymous(cls) -> Actor:
        """The actor of a request nobody authenticated."""
        return cls(type=ActorType.ANONYMOUS)


@dataclass(frozen=True, slots=True)
class Resource:
    """The target of the action, e.g. Resource("document", "doc-42")."""

    type: str
    id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        _check_str(self.type, "resource.type", required=True, max_len=MAX_TYPE_LEN)
        if self.id is not None and isinstance(self.id, int) and not isinstance(self.id, bool):
            raise AuditEventError("resource.id", "must be a string (convert numeric ids with str())")
        _check_str(self.id, "resource.id")
        _check_str(self.name, "resource.name")


@dataclass(frozen=True, slots=True)
class Change:
    """Old and new value of one changed field."""

    old: AnyValue = None
    new: AnyValue = None


def is_flat_and_plain(mapping: dict[Any, Any]) -> bool:
    """Whether a dict is already valid AnyValue with no nesting: the common metadata shape, checked cheaply."""
    for key, item in mapping.items():
        if type(key) is not str:
            return False
        item_type = type(item)
        if item_type is str or item_type is bool or item is None:
            continue
        if item_type is int and _INT64_MIN <= item <= _INT64_MAX:
            continue
        if item_type is float and math.isfinite(item):
            continue
        return False
    return True


def is_plain_any_value(value: Any, _depth: int = 0) -> bool:
    """Whether `value` is AnyValue that to_any_value only copies: exact str, bool, None, int64 or finite float, or an
    exact dict (string keys), list or tuple of such, containers fewer than MAX_DEPTH levels deep. emit's fast path
    takes these; anything else goes through to_any_value, which converts it or names what is wrong."""
    value_type = type(value)
    if value_type is str or value_type is bool or value is None:
        return True
    if value_type is int:
        return _INT64_MIN <= value <= _INT64_MAX
    if value_type is float:
        return math.isfinite(value)
    if _depth >= MAX_DEPTH:
        return False
    if value_type is dict:
        return all(type(key) is str and is_plain_any_value(item, _depth + 1) for key, item in value.items())
    if value_type is list or value_type is tuple:
        return all(is_plain_any_value(item, _depth + 1) for item in value)
    return False


def to_any_value(value: Any, field_name: str = "metadata", _depth: int = 0) -> AnyValue:
    """Reduce `value` to an OpenTelemetry AnyValue, predictably, or raise AuditEventError naming the path.

    Scalars pass through; mappings with string keys and sequences recurse; datetimes become ISO 8601 strings,
    enums their value, UUID/Decimal/Path their string form, sets sorted lists. Anything else is rejected rather
    than turned into an unreadable repr.
    """
    value_type = type(value)
    if value_type is str or value_type is bool or value is None:
        return value
    if value_type is dict and is_flat_and_plain(value):
        return dict(value)
    if isinstance(value, (str, bool, bytes)):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise AuditEventError(field_name, "integer does not fit in 64 bits (pass it as a string)")
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise AuditEventError(field_name, "NaN and infinity are not allowed")
        return value
    if _depth >= MAX_DEPTH:
        raise AuditEventError(field_name, f"nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        reduced: dict[str, AnyValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditEventError(f"{field_name}", f"keys must be strings, got {type(key).__name__} {key!r}")
            reduced[key] = to_any_value(item, f"{field_name}.{key}", _depth + 1)
        return reduced
    if isinstance(value, (list, tuple)):
        return [to_any_value(item, f"{field_name}[{index}]", _depth + 1) for index, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [to_any_value(item, f"{field_name}[]", _depth + 1) for item in value]
        try:
            return sorted(items)  # type: ignore[type-var]
        except TypeError:
            raise AuditEventError(field_name, "set items must be mutually comparable") from None
    if isinstance(value, enum.Enum):
        return to_any_value(value.value, field_name, _depth + 1)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise AuditEventError(field_name, "naive datetime (attach a timezone)")
        return value.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (uuid.UUID, decimal.Decimal, pathlib.PurePath)):
        return str(value)
    raise AuditEventError(field_name, f"unsupported type {type(value).__name__} (use str, number, bool, list or dict)")


def plain_change(change: Any) -> tuple[AnyValue, AnyValue] | None:
    """(old, new) of a change in a form emit's fast path takes, with plain values (is_plain_any_value): an exact
    Change, an exact dict with no keys but "old" and "new", or an exact (old, new) tuple or list. None for anything
    else, which _check_changes converts or refuses, naming the field."""
    change_type = type(change)
    if change_type is Change:
        old, new = change.old, change.new
    elif change_type is dict and all(type(key) is str and key in ("old", "new") for key in change):
        old, new = change.get("old"), change.get("new")
    elif (change_type is tuple or change_type is list) and len(change) == 2:
        old, new = change
    else:
        return None
    return (old, new) if is_plain_any_value(old) and is_plain_any_value(new) else None


def _check_changes(changes: Any) -> dict[str, Change]:
    if not isinstance(changes, Mapping):
        raise AuditEventError("changes", "must be a mapping of field -> Change or {'old', 'new'}")
    checked: dict[str, Change] = {}
    for name, change in changes.items():
        path = f"changes.{name}"
        if not isinstance(name, str) or not name:
            raise AuditEventError("changes", f"field names must be non-empty strings, got {name!r}")
        if isinstance(change, Change):
            old, new = change.old, change.new
        elif isinstance(change, Mapping) and set(change) <= {"old", "new"}:
            old, new = change.get("old"), change.get("new")
        elif isinstance(change, (tuple, list)) and len(change) == 2:
            old, new = change
        else:
            raise AuditEventError(path, "must be a Change, {'old': ..., 'new': ...} or an (old, new) pair")
        checked[name] = Change(to_any_value(old, f"{path}.old"), to_any_value(new, f"{path}.new"))
    return checked


_EVENT_STR_FIELDS = (
    "tenant_id", "client_address", "user_agent", "session_id", "request_id",
    "http_method", "http_route", "url_path", "error_type",
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit event. Construct it (or let AuditLogger.emit do it): invalid values raise AuditEventError."""

    action: str
    outcome: Outcome = Outcome.SUCCESS
    actor: Actor | None = None
    resource: Resource | None = None
    tenant_id: str | None = None
    client_address: str | None = None
    user_agent: str | None = None
    session_id: str | None = None
    request_id: str | None = None
    http_method: str | None = None
    http_route: str | None = None
    url_path: str | None = None
    http_status_code: int | None = None
    error_type: str | None = None
    reason: str | None = None
    changes: Mapping[str, Change] = field(default_factory=dict)
    metadata: Mapping[str, AnyValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.action, str):
            raise AuditEventError("action", f"must be a string, got {type(self.action).__name__}")
        if self.action not in validated_actions and (len(self.action) > _MAX_ACTION_LEN or not _ACTION_RE.match(self.action)):
            raise AuditEventError(
                "action", f"must be lower-case dotted words like 'document.share', got {self.action!r}"
            )
        if len(validated_actions) < _VALID_ACTIONS_CACHE:
            validated_actions.add(self.action)
        object.__setattr__(self, "outcome", _enum_value(Outcome, self.outcome, "outcome"))
        if self.actor is not None and not isinstance(self.actor, Actor):
            raise AuditEventError("actor", f"must be an Actor, got {type(self.actor).__name__}")
        if self.resource is not None and not isinstance(self.resource, Resource):
            raise AuditEventError("resource", f"must be a Resource, got {type(self.resource).__name__}")
        for name in _EVENT_STR_FIELDS:
            value = getattr(self, name)
            if value is not None and (type(value) is not str or len(value) > MAX_ID_LEN):
                _check_str(value, name)
        _check_str(self.reason, "reason", max_len=MAX_REASON_LEN)
        status = self.http_status_code
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
            raise AuditEventError("http_status_code", f"must be an integer 100-599, got {status!r}")
        object.__setattr__(self, "changes", _check_changes(self.changes) if self.changes else {})
        if self.metadata:
            if type(self.metadata) is not dict and not isinstance(self.metadata, Mapping):
                raise AuditEventError("metadata", f"must be a mapping, got {type(self.metadata).__name__}")
            object.__setattr__(self, "metadata", to_any_value(self.metadata, "metadata"))
        else:
            object.__setattr__(self, "metadata", {})
