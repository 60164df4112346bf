"""HTTP routes of alert rules, webhooks, fired alerts and the delivery log, and their wiring into the store app.

`install_alerting(store_app)` (done by `create_app`) adds the tables, the routes, the ingest hook that evaluates
rules, and the delivery worker, which starts and stops with the app's lifespan. Managing rules and webhooks needs
the admin scope; reading rules, alerts and deliveries needs read. Everything is confined to the key's tenant:
another tenant's ids answer 404.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .alerts import AlertEngine, RuleError
from .app import ApiError, StoreApp
from .webhooks import DELIVERY_STATUSES, DeliveryWorker, DestinationError, WebhookRegistry, WebhookSettings

MAX_JSON_BYTES = 64 << 10
MAX_ID_LENGTH = 64
HOUSEKEEPING_SECONDS = 300.0
_log = logging.getLogger(__name__)


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise ApiError(413, "body_too_large", f"request body exceeds {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "body must be valid JSON") from None


def _object(payload: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ApiError(400, "malformed_json", "body must be a JSON object")
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise ApiError(400, "bad_parameter", f"{unknown[0]}: unknown field (allowed: {', '.join(allowed)})",
                         unknown[0])
    return payload


def _path_id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise ApiError(404, "not_found", f"no such {name.removesuffix('_id')}")
    return value


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    params = request.query_params
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ApiError(400, "bad_parameter", f"{unknown[0]}: unknown parameter (allowed: {', '.join(allowed)})",
                         unknown[0])
    values: dict[str, str] = {}
    for name in params:
        items = params.getlist(name)
        if len(items) > 1:
            raise ApiError(400, "bad_parameter", f"{name}: given more than once", name)
        if not items[0] or len(items[0]) > MAX_ID_LENGTH or not items[0].isprintable():
            raise ApiError(400, "bad_parameter", f"{name}: 1-{MAX_ID_LENGTH} printable characters", name)
        values[name] = items[0]
    limit = values.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise ApiError(400, "bad_parameter", "limit: must be an integer 1-1000", "limit")
    values["limit"] = limit
    return values


class Alerting:
    """Alert rules, webhooks and deliveries of one store app."""

    def __init__(self, store: StoreApp, settings: WebhookSettings) -> None:
        self.store = store
        self.webhooks = WebhookRegistry(store.storage, settings)
        self.worker = DeliveryWorker(self.webhooks)
        self.engine = AlertEngine(store.storage, self.webhooks, notify=self.worker.wake)
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None

    def migrate(self) -> None:
        self.webhooks.migrate()
        self.engine.migrate()

    def start(self) -> None:
        """Start delivering; rebuild windows from stored events and prune old hits in the background."""
        self._stop.clear()
        self.worker.start()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="otel-audit-alerts", daemon=True)
        self._housekeeper.start()

    def stop(self) -> None:
        self._stop.set()
        self.engine.rebuild_requested.set()
        if self._housekeeper is not None:
            self._housekeeper.join(10)
            self._housekeeper = None
        self.worker.stop()

    def _housekeeping(self) -> None:
        """Rebuild windows at start and whenever an evaluation failed; prune old hits every few minutes."""
        self._safely(self.engine.rebuild)
        next_prune = time.monotonic() + HOUSEKEEPING_SECONDS
        while not self._stop.is_set():
            requested = self.engine.rebuild_requested.wait(max(next_prune - time.monotonic(), 0))
            if self._stop.is_set():
                return
            if requested:
                self.engine.rebuild_requested.clear()
                self._safely(self.engine.rebuild)
            if time.monotonic() >= next_prune:
                self._safely(self.engine.prune)
                next_prune = time.monotonic() + HOUSEKEEPING_SECONDS

    @staticmethod
    def _safely(task: Callable[[], Any]) -> None:
        try:
            task()
        except Exception:  # noqa: BLE001 - retried on the next occasion
            _log.exception("otel-audit alerts: %s failed", getattr(task, "__name__", task))

    def routes(self) -> list[Route]:
        return [
            Route("/v1/webhooks", self.create_webhook, methods=["POST"]),
            Route("/v1/webhooks", self.list_webhooks, methods=["GET"]),
            Route("/v1/webhooks/{webhook_id}", self.get_webhook, methods=["GET"]),
            Route("/v1/webhooks/{webhook_id}", self.delete_webhook, methods=["DELETE"]),
            Route("/v1/webhooks/{webhook_id}/rotate-secret", self.rotate_secret, methods=["POST"]),
            Route("/v1/webhook-deliveries", self.list_deliveries, methods=["GET"]),
            Route("/v1/alert-rules", self.create_rule, methods=["POST"]),
            Route("/v1/alert-rules", self.list_rules, methods=["GET"]),
            Route("/v1/alert-rules/{rule_id}", self.get_rule, methods=["GET"]),
            Route("/v1/alert-rules/{rule_id}", self.replace_rule, methods=["PUT"]),
            Route("/v1/alert-rules/{rule_id}", self.patch_rule, methods=["PATCH"]),
            Route("/v1/alert-rules/{rule_id}", self.delete_rule, methods=["DELETE"]),
            Route("/v1/alerts", self.list_alerts, methods=["GET"]),
            Route("/v1/alerts/{alert_id}", self.get_alert, methods=["GET"]),
        ]

    # webhooks ---------------------------------------------------------------------------------------------

    async def create_webhook(self, request: Request) -> Response:
        """POST /v1/webhooks {url, secret?, description?}: the secret is in this answer only."""
        key = await self.store._authorize(request, "admin")
        payload = _object(await _json_body(request), ("url", "secret", "description"))
        if "url" not in payload:
            raise ApiError(400, "bad_parameter", "url: is required", "url")
        try:
            webhook, secret = await self.store._call(
                self.webhooks.create, key.tenant_id, payload["url"], payload.get("secret"),
                payload.get("description", ""),
            )
        except DestinationError as exc:
            raise ApiError(400, "bad_destination", str(exc), "url") from None
        except ValueError as exc:
            raise ApiError(400, "bad_parameter", str(exc), str(exc).split(":", 1)[0]) from None
        return JSONResponse({**webhook.to_json(), "secret": secret}, status_code=201)

    async def list_webhooks(self, request: Request) -> Response:
        key = await self.store._authorize(request, "admin")
        found = await self.store._call(self.webhooks.list_webhooks, key.tenant_id)
        return JSONResponse({"webhooks": [item.to_json() for item in found]})

    async def get_webhook(self, request: Request) -> Response:
        key = await self.store._authorize(request, "admin")
        webhook = await self.store._call(self.webhooks.get, key.tenant_id, _path_id(request, "webhook_id"))
        if webhook is None:
            raise ApiError(404, "not_found", "no such webhook")
        return JSONResponse(webhook.to_json())

    async def delete_webhook(self, request: Request) -> Response:
        """DELETE /v1/webhooks/{id}: refused (409) while a rule still notifies it."""
        key = await self.store._authorize(request, "admin")
        webhook_id = _path_id(request, "webhook_id")
        users = await self.store._call(self.engine.rules_using_webhook, key.tenant_id, webhook_id)
        if users:
            names = ", ".join(rule.rule_id for rule in users[:5])
            raise ApiError(409, "in_use", f"webhook is used by alert rules {names}; remove it from them first")
        if not await self.store._call(self.webhooks.delete, key.tenant_id, webhook_id):
            raise ApiError(404, "not_found", "no such webhook")
        return JSONResponse({"id": webhook_id, "deleted": True})

    async def rotate_secret(self, request: Request) -> Response:
        """POST /v1/webhooks/{id}/rotate-secret {secret?}: a new secret, returned once; the old one keeps
        signing alongside during the grace period."""
        key = await self.store._authorize(request, "admin")
        payload = _object(await _json_body(request) or {}, ("secret",))
        try:
            rotated = await self.store._call(self.webhooks.rotate_secret, key.tenant_id,
                                             _path_id(request, "webhook_id"), payload.get("secret"))
        except ValueError as exc:
            raise ApiError(400, "bad_parameter", str(exc), "secret") from None
        if rotated is None:
            raise ApiError(404, "not_found", "no such webhook")
        webhook, secret = rotated
        grace = self.webhooks.settings.secret_grace_seconds
        return JSONResponse({**webhook.to_json(), "secret": secret, "previous_secret_valid_seconds": grace})

    async def list_deliveries(self, request: Request) -> Response:
        """GET /v1/webhook-deliveries?webhook_id=&alert_id=&status=&limit=&before=: the delivery log, newest first."""
        key = await self.store._authorize(request, "read")
        params = _query(request, ("webhook_id", "alert_id", "status", "limit", "before"))
        if params.get("status") not in (None, *DELIVERY_STATUSES):
            raise ApiError(400, "bad_parameter", f"status: one of {', '.join(DELIVERY_STATUSES)}", "status")
        limit = int(params["limit"])
        found = await self.store._call(lambda: self.webhooks.deliveries(
            key.tenant_id, webhook_id=params.get("webhook_id"), alert_id=params.get("alert_id"),
            status=params.get("status"), limit=limit, before=params.get("before")))
        next_before = found[-1].delivery_id if len(found) == limit else None
        return JSONResponse({"deliveries": [item.to_json() for item in found], "next_before": next_before})

    # rules ------------------------------------------------------------------------------------------------

    def _rule_error(self, exc: RuleError) -> ApiError:
        return ApiError(400, "invalid_rule", str(exc), exc.field)

    async def create_rule(self, request: Request) -> Response:
        """POST /v1/alert-rules: validate (400 naming the field) and store a rule."""
        key = await self.store._authorize(request, "admin")
        payload = await _json_body(request)
        try:
            rule = await self.store._call(self.engine.create_rule, key.tenant_id, payload)
        except RuleError as exc:
            raise self._rule_error(exc) from None
        return JSONResponse(rule.to_json(), status_code=201)

    async def list_rules(self, request: Request) -> Response:
        key = await self.store._authorize(request, "read")
        rules = await self.store._call(self.engine.list_rules, key.tenant_id)
        return JSONResponse({"rules": [rule.to_json() for rule in rules]})

    async def get_rule(self, request: Request) -> Response:
        key = await self.store._authorize(request, "read")
        rule = await self.store._call(self.engine.get_rule, key.tenant_id, _path_id(request, "rule_id"))
        if rule is None:
            raise ApiError(404, "not_found", "no such rule")
        return JSONResponse(rule.to_json())

    async def _update(self, request: Request, partial: bool) -> Response:
        key = await self.store._authorize(request, "admin")
        rule_id = _path_id(request, "rule_id")
        payload = await _json_body(request)
        try:
            rule = await self.store._call(
                lambda: self.engine.update_rule(key.tenant_id, rule_id, payload, partial=partial))
        except RuleError as exc:
            raise self._rule_error(exc) from None
        if rule is None:
            raise ApiError(404, "not_found", "no such rule")
        return JSONResponse(rule.to_json())

    async def replace_rule(self, request: Request) -> Response:
        """PUT /v1/alert-rules/{id}: replace the definition."""
        return await self._update(request, partial=False)

    async def patch_rule(self, request: Request) -> Response:
        """PATCH /v1/alert-rules/{id}: change some fields, e.g. {"enabled": false} to disable."""
        return await self._update(request, partial=True)

    async def delete_rule(self, request: Request) -> Response:
        key = await self.store._authorize(request, "admin")
        rule_id = _path_id(request, "rule_id")
        if not await self.store._call(self.engine.delete_rule, key.tenant_id, rule_id):
            raise ApiError(404, "not_found", "no such rule")
        return JSONResponse({"id": rule_id, "deleted": True})

    # alerts -----------------------------------------------------------------------------------------------

    async def list_alerts(self, request: Request) -> Response:
        """GET /v1/alerts?rule_id=&limit=&before=: fired alerts, newest first."""
        key = await self.store._authorize(request, "read")
        params = _query(request, ("rule_id", "limit", "before"))
        limit = int(params["limit"])
        found = await self.store._call(lambda: self.engine.list_alerts(
            key.tenant_id, rule_id=params.get("rule_id"), limit=limit, before=params.get("before")))
        next_before = found[-1]["id"] if len(found) == limit else None
        return JSONResponse({"alerts": found, "next_before": next_before})

    async def get_alert(self, request: Request) -> Response:
        """GET /v1/alerts/{id}: one alert with its deliveries."""
        key = await self.store._authorize(request, "read")
        alert_id = _path_id(request, "alert_id")
        alert = await self.store._call(self.engine.get_alert, key.tenant_id, alert_id)
        if alert is None:
            raise ApiError(404, "not_found", "no such alert")
        deliveries = await self.store._call(lambda: self.webhooks.deliveries(key.tenant_id, alert_id=alert_id))
        return JSONResponse({**alert, "deliveries": [item.to_json() for item in deliveries]})


def install_alerting(store: StoreApp, settings: WebhookSettings | None = None) -> Alerting:
    """Add alert rules and webhooks to a store app: tables, routes, ingest hook; returns the Alerting."""
    alerting = Alerting(store, settings or WebhookSettings.from_env())
    alerting.migrate()
    store.asgi.router.routes.extend(alerting.routes())
    store.add_ingest_hook(alerting.engine.on_ingest)
    return alerting
