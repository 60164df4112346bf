"""Attribute conventions, version 1: every attribute name, and AuditEvent <-> attributes in both directions.

This module is the single source of attribute names (see docs/conventions.md). OpenTelemetry semantic
conventions are used where they exist; `audit.*` holds the rest. The reverse mapping is what the store uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from opentelemetry._logs import SeverityNumber

from .model import (
    Actor,
    ActorType,
    AnyValue,
    AuditEvent,
    AuditEventError,
    Change,
    Outcome,
    Resource,
)

SCHEMA_VERSION = "1"

EVENT_NAME_PREFIX = "audit."

AUDIT_ACTION = "audit.action"
AUDIT_OUTCOME = "audit.outcome"
LOG_RECORD_UID = "log.record.uid"

USER_ID = "user.id"
USER_EMAIL = "user.email"
USER_NAME = "user.name"
USER_ROLES = "user.roles"
AUDIT_ACTOR_TYPE = "audit.actor.type"
AUDIT_ACTOR_IMPERSONATOR_ID = "audit.actor.impersonator.id"

CLIENT_ADDRESS = "client.address"
USER_AGENT_ORIGINAL = "user_agent.original"
SESSION_ID = "session.id"

AUDIT_RESOURCE_TYPE = "audit.resource.type"
AUDIT_RESOURCE_ID = "audit.resource.id"
AUDIT_RESOURCE_NAME = "audit.resource.name"

AUDIT_TENANT_ID = "audit.tenant.id"

HTTP_REQUEST_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
AUDIT_REQUEST_ID = "audit.request.id"

ERROR_TYPE = "error.type"
AUDIT_REASON = "audit.reason"

AUDIT_CHANGES = "audit.changes"
AUDIT_METADATA = "audit.metadata"
AUDIT_REDACTED = "audit.redacted"

AUDIT_CHAIN_ID = "audit.chain.id"
AUDIT_CHAIN_SEQ = "audit.chain.seq"
AUDIT_CHAIN_PREV = "audit.chain.prev"
AUDIT_CHAIN_HASH = "audit.chain.hash"

# AuditEvent string fields that map one-to-one onto an attribute.
_EVENT_STR_FIELDS: tuple[tuple[str, str], ...] = (
    ("tenant_id", AUDIT_TENANT_ID),
    ("client_address", CLIENT_ADDRESS),
    ("user_agent", USER_AGENT_ORIGINAL),
    ("session_id", SESSION_ID),
    ("request_id", AUDIT_REQUEST_ID),
    ("http_method", HTTP_REQUEST_METHOD),
    ("http_route", HTTP_ROUTE),
    ("url_path", URL_PATH),
    ("error_type", ERROR_TYPE),
    ("reason", AUDIT_REASON),
)

_SEVERITY_BY_OUTCOME = {
    Outcome.SUCCESS: SeverityNumber.INFO,
    Outcome.UNKNOWN: SeverityNumber.INFO,
    Outcome.FAILURE: SeverityNumber.WARN,
    Outcome.DENIED: SeverityNumber.WARN,
}


def event_name(action: str) -> str:
    """The LogRecord event_name of an audit action: `audit.` + action."""
    return EVENT_NAME_PREFIX + action


def default_severity(outcome: Outcome) -> SeverityNumber:
    """INFO for success/unknown, WARN for failure/denied."""
    return _SEVERITY_BY_OUTCOME[outcome]


def is_audit_record(event_name_value: str | None, attributes: Mapping[str, Any] | None) -> bool:
    """Whether a log record is an audit record: event_name `audit.*` and `audit.action` present."""
    return bool(
        event_name_value
        and event_name_value.startswith(EVENT_NAME_PREFIX)
        and attributes
        and AUDIT_ACTION in attributes
    )


def event_to_attributes(event: AuditEvent, uid: str | None = None) -> dict[str, AnyValue]:
    """The log record attributes of a validated event (absent values are left out, never sent as empty)."""
    attributes: dict[str, AnyValue] = {AUDIT_ACTION: event.action, AUDIT_OUTCOME: event.outcome.value}
    if uid is not None:
        attributes[LOG_RECORD_UID] = uid
    if event.actor is not None:
        add_actor_attributes(attributes, event.actor)
    resource = event.resource
    if resource is not None:
        attributes[AUDIT_RESOURCE_TYPE] = resource.type
        if resource.id is not None:
            attributes[AUDIT_RESOURCE_ID] = resource.id
        if resource.name is not None:
            attributes[AUDIT_RESOURCE_NAME] = resource.name
    for field_name, attribute in _EVENT_STR_FIELDS:
        value = getattr(event, field_name)
        if value is not None:
            attributes[attribute] = value
    if event.http_status_code is not None:
        attributes[HTTP_RESPONSE_STATUS_CODE] = event.http_status_code
    if event.changes:
        attributes[AUDIT_CHANGES] = {
            name: {"old": change.old, "new": change.new} for name, change in event.changes.items()
        }
    if event.metadata:
        attributes[AUDIT_METADATA] = dict(event.metadata)
    return attributes


def add_actor_attributes(
    attributes: dict[str, AnyValue], actor: Actor, ambient_impersonator_id: str | None = None
) -> None:
    """Add the attributes of `actor`; an ambient impersonator (from audit_context) applies when the actor names
    none. Shared by event_to_attributes and AuditLogger.emit's fast path."""
    attributes[AUDIT_ACTOR_TYPE] = actor.type._value_  # the member's value, without the `.value` property's cost
    if actor.id is not None:
        attributes[USER_ID] = actor.id
    if actor.email is not None:
        attributes[USER_EMAIL] = actor.email
    if actor.name is not None:
        attributes[USER_NAME] = actor.name
    if actor.roles:
        attributes[USER_ROLES] = list(actor.roles)
    impersonator_id = actor.impersonator_id
    if impersonator_id is None:
        impersonator_id = ambient_impersonator_id or None
    if impersonator_id is not None:
        attributes[AUDIT_ACTOR_IMPERSONATOR_ID] = impersonator_id


def _plain(value: Any) -> AnyValue:
    """Undo the SDK's container types (tuples for lists, read-only mappings) so values compare as plain data."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _roles(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise AuditEventError(USER_ROLES, "must be a list of strings")


def attributes_to_event(attributes: Mapping[str, Any]) -> AuditEvent:
    """Rebuild the AuditEvent from a record's attributes (the inverse of event_to_attributes).

    Raises AuditEventError when the attributes do not describe a valid audit event, naming the field.
    """
    get = attributes.get
    actor = None
    if AUDIT_ACTOR_TYPE in attributes or USER_ID in attributes:
        actor = Actor(
            id=get(USER_ID),
            type=get(AUDIT_ACTOR_TYPE, ActorType.USER.value),
            email=get(USER_EMAIL),
            name=get(USER_NAME),
            roles=_roles(get(USER_ROLES)),
            impersonator_id=get(AUDIT_ACTOR_IMPERSONATOR_ID),
        )
    resource = None
    if AUDIT_RESOURCE_TYPE in attributes:
        resource = Resource(
            type=attributes[AUDIT_RESOURCE_TYPE], id=get(AUDIT_RESOURCE_ID), name=get(AUDIT_RESOURCE_NAME)
        )
    raw_changes = get(AUDIT_CHANGES) or {}
    if not isinstance(raw_changes, Mapping):
        raise AuditEventError(AUDIT_CHANGES, "must be a map of field -> {old, new}")
    changes = {}
    for name, change in raw_changes.items():
        if not isinstance(change, Mapping):
            raise AuditEventError(f"{AUDIT_CHANGES}.{name}", "must be a map with 'old' and 'new'")
        changes[name] = Change(_plain(change.get("old")), _plain(change.get("new")))
    metadata = get(AUDIT_METADATA) or {}
    if not isinstance(metadata, Mapping):
        raise AuditEventError(AUDIT_METADATA, "must be a map")
    return AuditEvent(
        action=cast(str, get(AUDIT_ACTION)),
        outcome=cast(Outcome, get(AUDIT_OUTCOME, Outcome.UNKNOWN.value)),
        actor=actor,
        resource=resource,
        http_status_code=get(HTTP_RESPONSE_STATUS_CODE),
        changes=changes,
        metadata=cast(Mapping[str, AnyValue], _plain(metadata)),
        **{field_name: get(attribute) for field_name, attribute in _EVENT_STR_FIELDS},
    )
