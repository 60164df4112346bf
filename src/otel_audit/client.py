"""AuditClient and AsyncAuditClient: the otel-audit store's REST API over httpx, as typed events.

    with AuditClient("http://127.0.0.1:8400", api_key="...") as client:
        for event in client.search_events(resource_id="doc-42"):
            print(event.time, event.action, event.actor_id, event.outcome)
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from . import semconv
from .model import AuditEvent, Outcome

DEFAULT_URL = "http://127.0.0.1:8400"
TimeFilter = _dt.datetime | _dt.timedelta | int | str | None


class AuditClientError(Exception):
    """The store answered with an error: HTTP `status`, its error `code`, `message`, and the `parameter` at fault."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter


@dataclass(frozen=True)
class StoredAuditEvent:
    """An audit event as the store returns it: indexed fields, the exported attributes, resource and scope."""

    uid: str
    tenant_id: str
    time: _dt.datetime
    time_unix_nano: int
    observed_time_unix_nano: int
    received_time_unix_nano: int
    event_name: str
    action: str
    outcome: str
    severity_number: int
    severity_text: str
    actor_id: str | None
    actor_type: str | None
    resource_type: str | None
    resource_id: str | None
    trace_id: str
    span_id: str
    attributes: dict[str, Any] = field(repr=False)
    resource: dict[str, Any] = field(repr=False)
    scope_name: str = ""
    scope_version: str = ""
    body: Any = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredAuditEvent:
        """Parse one event of the store's JSON."""
        scope = data.get("scope") or {}
        return cls(
            uid=data["uid"], tenant_id=data["tenant_id"],
            time=_dt.datetime.fromtimestamp(data["time_unix_nano"] // 1000 / 1_000_000, tz=_dt.timezone.utc),
            time_unix_nano=data["time_unix_nano"], observed_time_unix_nano=data["observed_time_unix_nano"],
            received_time_unix_nano=data["received_time_unix_nano"], event_name=data["event_name"],
            action=data["action"], outcome=data["outcome"], severity_number=data["severity_number"],
            severity_text=data["severity_text"], actor_id=data.get("actor_id"), actor_type=data.get("actor_type"),
            resource_type=data.get("resource_type"), resource_id=data.get("resource_id"),
            trace_id=data.get("trace_id", ""), span_id=data.get("span_id", ""),
            attributes=dict(data.get("attributes") or {}), resource=dict(data.get("resource") or {}),
            scope_name=scope.get("name", ""), scope_version=scope.get("version", ""), body=data.get("body"),
        )

    @property
    def event(self) -> AuditEvent:
        """The AuditEvent these attributes describe (validated)."""
        return semconv.attributes_to_event(self.attributes)


@dataclass(frozen=True)
class EventPage:
    """One page of search results (iterable); pass `next_cursor` back as `cursor=` for the next page."""

    events: list[StoredAuditEvent]
    next_cursor: str | None

    def __iter__(self) -> Iterator[StoredAuditEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> StoredAuditEvent:
        return self.events[index]


def _time_param(value: TimeFilter, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        value = _dt.datetime.now(_dt.timezone.utc) - value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: naive datetime (attach a timezone)")
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"{name}: expected datetime, timedelta, Unix nanoseconds or an RFC 3339 string")


def _filters(
    action: str | None = None, actor_id: str | None = None, resource_type: str | None = None,
    resource_id: str | None = None, outcome: Outcome | str | None = None, since: TimeFilter = None,
    until: TimeFilter = None, text: str | None = None,
) -> dict[str, str]:
    params = {
        "action": action, "actor_id": actor_id, "resource_type": resource_type, "resource_id": resource_id,
        "outcome": outcome.value if isinstance(outcome, Outcome) else outcome,
        "since": _time_param(since, "since"), "until": _time_param(until, "until"), "q": text,
    }
    return {name: value for name, value in params.items() if value is not None}


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            payload = response.json()
            raise AuditClientError(response.status_code, payload.get("error", "error"), payload.get("message", ""),
                                   payload.get("parameter"))
        except (ValueError, AttributeError):
            raise AuditClientError(response.status_code, "error", response.text[:500]) from None
    return response.json()


def _page(payload: Mapping[str, Any]) -> EventPage:
    return EventPage([StoredAuditEvent.from_json(item) for item in payload["events"]], payload.get("next_cursor"))


def _headers(api_key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}", "user-agent": "otel-audit-client"}


@dataclass(frozen=True)
class Webhook:
    """A webhook of the tenant; `secret` is set only in the answers of create and rotate (shown once)."""

    id: str
    url: str
    description: str
    created_unix_nano: int
    updated_unix_nano: int
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Webhook:
        return cls(data["id"], data["url"], data.get("description", ""), data["created_unix_nano"],
                   data["updated_unix_nano"], data.get("secret"))


@dataclass(frozen=True)
class AlertRule:
    """An alert rule as the store keeps it (condition as in the REST API: action, outcome, count, window...)."""

    id: str
    name: str
    type: str
    condition: dict[str, Any]
    severity: str
    webhook_ids: list[str]
    cooldown_seconds: float | None
    enabled: bool
    description: str
    created_unix_nano: int
    updated_unix_nano: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertRule:
        return cls(data["id"], data["name"], data["type"], dict(data["condition"]), data["severity"],
                   list(data["webhook_ids"]), data.get("cooldown_seconds"), data["enabled"],
                   data.get("description", ""), data["created_unix_nano"], data["updated_unix_nano"])


@dataclass(frozen=True)
class WebhookDelivery:
    """One alert's delivery to one webhook: status pending/delivered/failed, attempts, the last error."""

    id: str
    webhook_id: str
    alert_id: str
    status: str
    attempts: int
    max_attempts: int
    last_status_code: int | None
    last_error: str | None
    created_unix_nano: int
    delivered_unix_nano: int | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WebhookDelivery:
        return cls(data["id"], data["webhook_id"], data["alert_id"], data["status"], data["attempts"],
                   data["max_attempts"], data.get("last_status_code"), data.get("last_error"),
                   data["created_unix_nano"], data.get("delivered_unix_nano"))


@dataclass(frozen=True)
class Alert:
    """A fired alert: the rule, the group, how many events in which window, and their `log.record.uid`s."""

    id: str
    fired_at: str
    rule: dict[str, Any]
    group: dict[str, Any]
    count: int
    threshold: int
    window_seconds: float
    window_start: str
    window_end: str
    event_ids: list[str]
    deliveries: list[WebhookDelivery] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        deliveries = data.get("deliveries")
        return cls(data["id"], data["fired_at"], dict(data["rule"]), dict(data["group"]), data["count"],
                   data["threshold"], data["window_seconds"], data["window_start"], data["window_end"],
                   list(data["event_ids"]),
                   None if deliveries is None else [WebhookDelivery.from_json(item) for item in deliveries])


@dataclass(frozen=True)
class _Call:
    """One REST call of the alerting API, shared by the sync and async clients."""

    method: str
    path: str
    parse: Any
    params: dict[str, str] | None = None
    body: Any = None


def _rule_body(name: str, condition: Mapping[str, Any], severity: str, webhook_ids: list[str] | tuple[str, ...],
               cooldown_seconds: float | None, description: str, enabled: bool, type: str) -> dict[str, Any]:  # noqa: A002
    body: dict[str, Any] = {"name": name, "type": type, "condition": dict(condition), "severity": severity,
                            "webhook_ids": list(webhook_ids), "description": description, "enabled": enabled}
    if cooldown_seconds is not None:
        body["cooldown_seconds"] = cooldown_seconds
    return body


def _listing(params: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in params.items() if value is not None}


class _Alerting:
    """Builders of the alerting calls (rules, webhooks, alerts, deliveries)."""

    @staticmethod
    def create_webhook(url: str, secret: str | None, description: str) -> _Call:
        body = {"url": url, "description": description, **({"secret": secret} if secret is not None else {})}
        return _Call("POST", "/v1/webhooks", Webhook.from_json, body=body)

    @staticmethod
    def list_webhooks() -> _Call:
        return _Call("GET", "/v1/webhooks", lambda data: [Webhook.from_json(item) for item in data["webhooks"]])

    @staticmethod
    def delete_webhook(webhook_id: str) -> _Call:
        return _Call("DELETE", f"/v1/webhooks/{quote(webhook_id, safe='')}", lambda data: None)

    @staticmethod
    def rotate_webhook_secret(webhook_id: str, secret: str | None) -> _Call:
        return _Call("POST", f"/v1/webhooks/{quote(webhook_id, safe='')}/rotate-secret", Webhook.from_json,
                     body={"secret": secret} if secret is not None else {})

    @staticmethod
    def create_alert_rule(body: dict[str, Any]) -> _Call:
        return _Call("POST", "/v1/alert-rules", AlertRule.from_json, body=body)

    @staticmethod
    def list_alert_rules() -> _Call:
        return _Call("GET", "/v1/alert-rules", lambda data: [AlertRule.from_json(item) for item in data["rules"]])

    @staticmethod
    def get_alert_rule(rule_id: str) -> _Call:
        return _Call("GET", f"/v1/alert-rules/{quote(rule_id, safe='')}", AlertRule.from_json)

    @staticmethod
    def update_alert_rule(rule_id: str, changes: Mapping[str, Any]) -> _Call:
        return _Call("PATCH", f"/v1/alert-rules/{quote(rule_id, safe='')}", AlertRule.from_json, body=dict(changes))

    @staticmethod
    def delete_alert_rule(rule_id: str) -> _Call:
        return _Call("DELETE", f"/v1/alert-rules/{quote(rule_id, safe='')}", lambda data: None)

    @staticmethod
    def list_alerts(rule_id: str | None, limit: int, before: str | None) -> _Call:
        return _Call("GET", "/v1/alerts", lambda data: [Alert.from_json(item) for item in data["alerts"]],
                     params=_listing({"rule_id": rule_id, "limit": limit, "before": before}))

    @staticmethod
    def get_alert(alert_id: str) -> _Call:
        return _Call("GET", f"/v1/alerts/{quote(alert_id, safe='')}", Alert.from_json)

    @staticmethod
    def list_webhook_deliveries(webhook_id: str | None, alert_id: str | None, status: str | None, limit: int,
                                before: str | None) -> _Call:
        params = _listing({"webhook_id": webhook_id, "alert_id": alert_id, "status": status, "limit": limit,
                           "before": before})
        return _Call("GET", "/v1/webhook-deliveries",
                     lambda data: [WebhookDelivery.from_json(item) for item in data["deliveries"]], params=params)


class AuditClient:
    """Synchronous client of the store's REST API (use as a context manager, or call close())."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str = "", *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def search_events(
        self, *, action: str | None = None, actor_id: str | None = None, resource_type: str | None = None,
        resource_id: str | None = None, outcome: Outcome | str | None = None, since: TimeFilter = None,
        until: TimeFilter = None, text: str | None = None, limit: int = 100, cursor: str | None = None,
    ) -> EventPage:
        """One page of matching events, newest first; `action` may end in `*` (prefix), `since` may be a timedelta."""
        params = _filters(action, actor_id, resource_type, resource_id, outcome, since, until, text)
        params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        return _page(_check(self._http.get("/v1/events", params=params)))

    def iter_events(self, *, page_size: int = 500, **filters: Any) -> Iterator[StoredAuditEvent]:
        """Every matching event, newest first, following the cursor page by page."""
        cursor = None
        while True:
            page = self.search_events(limit=page_size, cursor=cursor, **filters)
            yield from page.events
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def count_events(self, **filters: Any) -> int:
        """How many events match the filters (same names as search_events)."""
        return int(_check(self._http.get("/v1/events/count", params=_filters(**filters)))["count"])

    def get_event(self, uid: str) -> StoredAuditEvent:
        """One event by its `log.record.uid` (AuditClientError 404 if the tenant has none)."""
        return StoredAuditEvent.from_json(_check(self._http.get(f"/v1/events/{quote(uid, safe='')}")))

    def export_events(self, format: str = "jsonl", **filters: Any) -> Iterator[str]:  # noqa: A002 - API name
        """Stream an export (csv, jsonl or ocsf) line by line."""
        params = {**_filters(**filters), "format": format}
        with self._http.stream("GET", "/v1/events/export", params=params) as response:
            if response.status_code >= 400:
                response.read()
                _check(response)
            yield from response.iter_lines()

    def tail(self, after: str | None = None, limit: int = 1000) -> tuple[list[StoredAuditEvent], str]:
        """Events stored since the token `after` (None: start from now), and the token to pass next time."""
        params = {"limit": str(limit), **({"after": after} if after is not None else {})}
        payload = _check(self._http.get("/v1/events/tail", params=params))
        return [StoredAuditEvent.from_json(item) for item in payload["events"]], payload["next"]

    def create_key(self, scopes: list[str], name: str = "") -> dict[str, Any]:
        """A new key of this key's tenant (admin scope); the result's `secret` is shown only this once."""
        return _check(self._http.post("/v1/keys", json={"scopes": scopes, "name": name}))

    def list_keys(self) -> list[dict[str, Any]]:
        """The tenant's keys (admin scope)."""
        return _check(self._http.get("/v1/keys"))["keys"]

    def revoke_key(self, key_id: str) -> None:
        """Revoke one of the tenant's keys (admin scope)."""
        _check(self._http.delete(f"/v1/keys/{quote(key_id, safe='')}"))

    # alerting ---------------------------------------------------------------------------------------------

    def _run(self, call: _Call) -> Any:
        return call.parse(_check(self._http.request(call.method, call.path, params=call.params, json=call.body)))

    def create_webhook(self, url: str, *, secret: str | None = None, description: str = "") -> Webhook:
        """Register a webhook (admin scope); the result's `secret` (generated unless given) is shown only now."""
        return self._run(_Alerting.create_webhook(url, secret, description))

    def list_webhooks(self) -> list[Webhook]:
        """The tenant's webhooks (never their secrets)."""
        return self._run(_Alerting.list_webhooks())

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete a webhook no rule uses any more."""
        self._run(_Alerting.delete_webhook(webhook_id))

    def rotate_webhook_secret(self, webhook_id: str, secret: str | None = None) -> Webhook:
        """A new signing secret (in the result, once); the old one keeps signing during the grace period."""
        return self._run(_Alerting.rotate_webhook_secret(webhook_id, secret))

    def create_alert_rule(
        self, name: str, condition: Mapping[str, Any], *, severity: str = "medium",
        webhook_ids: list[str] | tuple[str, ...] = (), cooldown_seconds: float | None = None, description: str = "",
        enabled: bool = True, type: str = "threshold",  # noqa: A002 - the REST field
    ) -> AlertRule:
        """Create a rule, e.g. condition={"action": "user.login", "outcome": "failure", "count": 5,
        "window_seconds": 300, "group_by": ["user.id"]}; invalid fields raise AuditClientError naming them."""
        body = _rule_body(name, condition, severity, webhook_ids, cooldown_seconds, description, enabled, type)
        return self._run(_Alerting.create_alert_rule(body))

    def list_alert_rules(self) -> list[AlertRule]:
        return self._run(_Alerting.list_alert_rules())

    def get_alert_rule(self, rule_id: str) -> AlertRule:
        return self._run(_Alerting.get_alert_rule(rule_id))

    def update_alert_rule(self, rule_id: str, **changes: Any) -> AlertRule:
        """Change some fields of a rule (PATCH), e.g. severity="critical" or enabled=False."""
        return self._run(_Alerting.update_alert_rule(rule_id, changes))

    def disable_alert_rule(self, rule_id: str) -> AlertRule:
        return self.update_alert_rule(rule_id, enabled=False)

    def enable_alert_rule(self, rule_id: str) -> AlertRule:
        return self.update_alert_rule(rule_id, enabled=True)

    def delete_alert_rule(self, rule_id: str) -> None:
        self._run(_Alerting.delete_alert_rule(rule_id))

    def list_alerts(self, *, rule_id: str | None = None, limit: int = 100, before: str | None = None) -> list[Alert]:
        """Fired alerts, newest first (`before`: the last id of the previous page)."""
        return self._run(_Alerting.list_alerts(rule_id, limit, before))

    def get_alert(self, alert_id: str) -> Alert:
        """One alert with its deliveries."""
        return self._run(_Alerting.get_alert(alert_id))

    def list_webhook_deliveries(self, *, webhook_id: str | None = None, alert_id: str | None = None,
                                status: str | None = None, limit: int = 100,
                                before: str | None = None) -> list[WebhookDelivery]:
        """The delivery log, newest first: status, attempts, last status code and error."""
        return self._run(_Alerting.list_webhook_deliveries(webhook_id, alert_id, status, limit, before))


class AsyncAuditClient:
    """The asyncio twin of AuditClient (same methods, awaited)."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: str = "", *, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncAuditClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def search_events(
        self, *, action: str | None = None, actor_id: str | None = None, resource_type: str | None = None,
        resource_id: str | None = None, outcome: Outcome | str | None = None, since: TimeFilter = None,
        until: TimeFilter = None, text: str | None = None, limit: int = 100, cursor: str | None = None,
    ) -> EventPage:
        """One page of matching events, newest first."""
        params = _filters(action, actor_id, resource_type, resource_id, outcome, since, until, text)
        params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        return _page(_check(await self._http.get("/v1/events", params=params)))

    async def iter_events(self, *, page_size: int = 500, **filters: Any) -> AsyncIterator[StoredAuditEvent]:
        """Every matching event, newest first, page by page."""
        cursor = None
        while True:
            page = await self.search_events(limit=page_size, cursor=cursor, **filters)
            for event in page.events:
                yield event
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def count_events(self, **filters: Any) -> int:
        """How many events match the filters."""
        return int(_check(await self._http.get("/v1/events/count", params=_filters(**filters)))["count"])

    async def get_event(self, uid: str) -> StoredAuditEvent:
        """One event by its `log.record.uid`."""
        return StoredAuditEvent.from_json(_check(await self._http.get(f"/v1/events/{quote(uid, safe='')}")))

    async def tail(self, after: str | None = None, limit: int = 1000) -> tuple[list[StoredAuditEvent], str]:
        """Events stored since `after`, and the next token."""
        params = {"limit": str(limit), **({"after": after} if after is not None else {})}
        payload = _check(await self._http.get("/v1/events/tail", params=params))
        return [StoredAuditEvent.from_json(item) for item in payload["events"]], payload["next"]

    # alerting ---------------------------------------------------------------------------------------------

    async def _run(self, call: _Call) -> Any:
        return call.parse(_check(await self._http.request(call.method, call.path, params=call.params, json=call.body)))

    async def create_webhook(self, url: str, *, secret: str | None = None, description: str = "") -> Webhook:
        """Register a webhook (admin scope); the result's `secret` (generated unless given) is shown only now."""
        return await self._run(_Alerting.create_webhook(url, secret, description))

    async def list_webhooks(self) -> list[Webhook]:
        """The tenant's webhooks (never their secrets)."""
        return await self._run(_Alerting.list_webhooks())

    async def delete_webhook(self, webhook_id: str) -> None:
        """Delete a webhook no rule uses any more."""
        await self._run(_Alerting.delete_webhook(webhook_id))

    async def rotate_webhook_secret(self, webhook_id: str, secret: str | None = None) -> Webhook:
        """A new signing secret (in the result, once); the old one keeps signing during the grace period."""
        return await self._run(_Alerting.rotate_webhook_secret(webhook_id, secret))

    async def create_alert_rule(
        self, name: str, condition: Mapping[str, Any], *, severity: str = "medium",
        webhook_ids: list[str] | tuple[str, ...] = (), cooldown_seconds: float | None = None, description: str = "",
        enabled: bool = True, type: str = "threshold",  # noqa: A002 - the REST field
    ) -> AlertRule:
        """Create a rule, e.g. condition={"action": "user.login", "outcome": "failure", "count": 5,
        "window_seconds": 300, "group_by": ["user.id"]}; invalid fields raise AuditClientError naming them."""
        body = _rule_body(name, condition, severity, webhook_ids, cooldown_seconds, description, enabled, type)
        return await self._run(_Alerting.create_alert_rule(body))

    async def list_alert_rules(self) -> list[AlertRule]:
        return await self._run(_Alerting.list_alert_rules())

    async def get_alert_rule(self, rule_id: str) -> AlertRule:
        return await self._run(_Alerting.get_alert_rule(rule_id))

    async def update_alert_rule(self, rule_id: str, **changes: Any) -> AlertRule:
        """Change some fields of a rule (PATCH), e.g. severity="critical" or enabled=False."""
        return await self._run(_Alerting.update_alert_rule(rule_id, changes))

    async def disable_alert_rule(self, rule_id: str) -> AlertRule:
        return await self.update_alert_rule(rule_id, enabled=False)

    async def enable_alert_rule(self, rule_id: str) -> AlertRule:
        return await self.update_alert_rule(rule_id, enabled=True)

    async def delete_alert_rule(self, rule_id: str) -> None:
        await self._run(_Alerting.delete_alert_rule(rule_id))

    async def list_alerts(self, *, rule_id: str | None = None, limit: int = 100,
                          before: str | None = None) -> list[Alert]:
        """Fired alerts, newest first (`before`: the last id of the previous page)."""
        return await self._run(_Alerting.list_alerts(rule_id, limit, before))

    async def get_alert(self, alert_id: str) -> Alert:
        """One alert with its deliveries."""
        return await self._run(_Alerting.get_alert(alert_id))

    async def list_webhook_deliveries(self, *, webhook_id: str | None = None, alert_id: str | None = None,
                                      status: str | None = None, limit: int = 100,
                                      before: str | None = None) -> list[WebhookDelivery]:
        """The delivery log, newest first: status, attempts, last status code and error."""
        return await self._run(_Alerting.list_webhook_deliveries(webhook_id, alert_id, status, limit, before))
