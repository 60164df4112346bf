"""Export formats for stored events: CSV (spreadsheet-safe), JSON Lines, and OCSF 1.1 events.

OCSF mapping: authentication actions (`*.login`, `*.logout`, `auth.*`, `session.*`...) become Authentication
(class 3002, category 3 Identity & Access Management); everything else API Activity (class 6003, category 6
Application Activity) with the activity taken from the action's verb. The full original attributes are kept in
`unmapped` so nothing is lost in translation.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from .. import semconv
from .events import StoredEvent, dumps

FORMATS = ("csv", "jsonl", "ocsf")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson", "ocsf": "application/x-ndjson"}
OCSF_VERSION = "1.1.0"

CSV_COLUMNS = (
    "time", "uid", "tenant_id", "action", "outcome", "actor_id", "actor_type", "resource_type", "resource_id",
    "client_address", "reason", "severity_text", "trace_id", "span_id", "attributes",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_AUTH_VERBS = {"login": 1, "logon": 1, "signin": 1, "sign_in": 1, "authenticate": 1, "logout": 2, "logoff": 2,
               "signout": 2, "sign_out": 2}
_AUTH_NAMESPACES = ("auth", "authn", "session", "login")
_API_VERBS = {
    "create": 1, "add": 1, "insert": 1, "upload": 1, "invite": 1, "register": 1,
    "read": 2, "get": 2, "view": 2, "list": 2, "download": 2, "export": 2, "search": 2,
    "update": 3, "edit": 3, "modify": 3, "change": 3, "share": 3, "rename": 3, "move": 3, "grant": 3, "revoke": 3,
    "delete": 4, "remove": 4, "destroy": 4, "purge": 4,
}
_ACTIVITY_NAMES = {3002: {1: "Logon", 2: "Logoff", 99: "Other"},
                   6003: {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}}


def _csv_cell(value: Any) -> str:
    """A cell that spreadsheets show as text: values starting like a formula get a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_lines(events: Iterable[StoredEvent]) -> Iterator[str]:
    """CSV with a header row; attributes as one JSON column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for event in events:
        buffer.seek(0)
        buffer.truncate()
        attributes = event.attributes
        writer.writerow([_csv_cell(value) for value in (
            event.to_json()["time"], event.uid, event.tenant_id, event.action, event.outcome, event.actor_id,
            event.actor_type, event.resource_type, event.resource_id, attributes.get(semconv.CLIENT_ADDRESS),
            attributes.get(semconv.AUDIT_REASON), event.severity_text, event.trace_id, event.span_id,
            dumps(attributes),
        )])
        yield buffer.getvalue()


def jsonl_lines(events: Iterable[StoredEvent]) -> Iterator[str]:
    """One API-shaped JSON event per line."""
    for event in events:
        yield dumps(event.to_json()) + "\n"


def ocsf_lines(events: Iterable[StoredEvent]) -> Iterator[str]:
    """One OCSF event per line."""
    for event in events:
        yield json.dumps(to_ocsf(event), ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


def _classify(action: str) -> tuple[int, int]:
    parts = action.split(".")
    verb = parts[-1]
    if verb in _AUTH_VERBS:
        return 3002, _AUTH_VERBS[verb]
    if parts[0] in _AUTH_NAMESPACES:
        return 3002, 99
    return 6003, _API_VERBS.get(verb, 99)


def _severity_id(severity_number: int) -> int:
    """OCSF severity_id from the OTel severity number (INFO 1, WARN 3 Medium, ERROR 4 High, FATAL 6)."""
    if severity_number >= 21:
        return 6
    if severity_number >= 17:
        return 4
    if severity_number >= 13:
        return 3
    if severity_number >= 1:
        return 1
    return 0


def to_ocsf(event: StoredEvent) -> dict[str, Any]:
    """The OCSF 1.1 representation of an audit event."""
    attributes = event.attributes
    get = attributes.get
    class_uid, activity_id = _classify(event.action)
    status_id = {"success": 1, "failure": 2, "denied": 2}.get(event.outcome, 0)
    user = {key: value for key, value in (
        ("uid", event.actor_id), ("email_addr", get(semconv.USER_EMAIL)), ("name", get(semconv.USER_NAME)),
        ("type", event.actor_type),
    ) if value is not None}
    ocsf: dict[str, Any] = {
        "category_uid": 3 if class_uid == 3002 else 6,
        "class_uid": class_uid,
        "activity_id": activity_id,
        "activity_name": _ACTIVITY_NAMES[class_uid][activity_id],
        "type_uid": class_uid * 100 + activity_id,
        "time": event.time_unix_nano // 1_000_000,
        "severity_id": _severity_id(event.severity_number),
        "status_id": status_id,
        "status": {1: "Success", 2: "Failure"}.get(status_id, "Unknown"),
        "message": event.action,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.uid,
            "tenant_uid": event.tenant_id,
            "product": {"name": "otel-audit", "vendor_name": "otel-audit"},
            "log_name": event.event_name,
        },
        "actor": {"user": user} if user else {},
        "src_endpoint": {key: value for key, value in (
            ("ip", get(semconv.CLIENT_ADDRESS)),) if value is not None},
        "unmapped": attributes,
    }
    if event.outcome == "denied":
        ocsf["status_detail"] = "denied"
    if get(semconv.AUDIT_REASON) is not None:
        ocsf.setdefault("status_detail", get(semconv.AUDIT_REASON))
    if get(semconv.ERROR_TYPE) is not None:
        ocsf["status_code"] = get(semconv.ERROR_TYPE)
    http_request = {key: value for key, value in (
        ("http_method", get(semconv.HTTP_REQUEST_METHOD)), ("user_agent", get(semconv.USER_AGENT_ORIGINAL)),
        ("uid", get(semconv.AUDIT_REQUEST_ID)),
    ) if value is not None}
    if get(semconv.URL_PATH) is not None:
        http_request["url"] = {"path": get(semconv.URL_PATH)}
    if http_request:
        ocsf["http_request"] = http_request
    if event.trace_id:
        ocsf["metadata"]["correlation_uid"] = event.trace_id
    if class_uid == 3002:
        ocsf["user"] = user
        ocsf["auth_protocol_id"] = 0
        if get(semconv.SESSION_ID) is not None:
            ocsf["session"] = {"uid": get(semconv.SESSION_ID)}
    else:
        ocsf["api"] = {"operation": event.action, "service": {"name": event.resource.get("service.name", "")}}
        if get(semconv.AUDIT_REQUEST_ID) is not None:
            ocsf["api"]["request"] = {"uid": get(semconv.AUDIT_REQUEST_ID)}
        if event.resource_type is not None:
            ocsf["resources"] = [{key: value for key, value in (
                ("type", event.resource_type), ("uid", event.resource_id), ("name", get(semconv.AUDIT_RESOURCE_NAME)),
            ) if value is not None}]
        ocsf["cloud"] = {"provider": event.resource.get("cloud.provider", "")}
    return ocsf
