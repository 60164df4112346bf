"""The store's HTTP app (Starlette, served by uvicorn): OTLP/HTTP ingest, search, export, keys, health.

Every request except the health checks carries an API key (`Authorization: Bearer <key>` or `x-api-key`); the
key decides the tenant, and every query is confined to it. Errors are JSON: {"error": code, "message": ...,
"parameter"?: name}. Ingest hooks (e.g. alert evaluation) are called, after commit, with the events each batch
actually stored (duplicates excluded).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import export, otlp
from .events import EventQuery, QueryError, StoredEvent
from .keys import ApiKeyError, Authenticator, create_key
from .storage import ApiKey, Storage

if TYPE_CHECKING:
    from .webhooks import WebhookSettings

_log = logging.getLogger(__name__)

IngestHook = Callable[[Sequence[StoredEvent]], None]
MAX_KEY_LENGTH = 512


@dataclass(frozen=True)
class StoreSettings:
    """Limits of the HTTP app."""

    max_body_bytes: int = 16 << 20
    max_decompressed_bytes: int = 64 << 20
    key_cache_ttl: float = 5.0


class ApiError(Exception):
    """An error answered as JSON with `status`."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter
        self.headers = headers


class IngestStats:
    """Per-tenant ingest counters: received, stored, duplicate, rejected records and ignored non-audit records."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_tenant: dict[str, Counter[str]] = {}

    def add(self, tenant_id: str, **counts: int) -> None:
        with self._lock:
            self._by_tenant.setdefault(tenant_id, Counter()).update(counts)

    def of(self, tenant_id: str) -> dict[str, int]:
        with self._lock:
            counter = self._by_tenant.get(tenant_id, Counter())
            return {name: counter[name] for name in ("received", "stored", "duplicate", "rejected", "ignored")}


def _error_response(exc: ApiError) -> JSONResponse:
    content: dict[str, Any] = {"error": exc.code, "message": exc.message}
    if exc.parameter is not None:
        content["parameter"] = exc.parameter
    return JSONResponse(content, status_code=exc.status, headers=exc.headers)


def _storage_unavailable(exc: Exception) -> ApiError:
    _log.warning("otel-audit store: database unavailable: %s", exc)
    return ApiError(503, "storage_unavailable", "the database is unavailable, retry later", headers={"Retry-After": "1"})


def _transient_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [sqlite3.OperationalError]
    try:
        import psycopg
        import psycopg_pool

        # A server that turned read-only (a standby, a failover in progress) refuses writes until it is promoted.
        errors += [psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction, psycopg_pool.PoolTimeout]
    except ImportError:
        pass
    return tuple(errors)


class StoreApp:
    """Build with `create_app(storage)`; `.asgi` is the Starlette application."""

    def __init__(self, storage: Storage, settings: StoreSettings, ingest_hooks: Sequence[IngestHook],
                 webhook_settings: WebhookSettings | None = None, owns_storage: bool = False) -> None:
        self.storage = storage
        self.owns_storage = owns_storage
        self.settings = settings
        self.ingest_hooks = list(ingest_hooks)
        self.authenticator = Authenticator(storage, settings.key_cache_ttl)
        self.tokens = storage.tokens
        self.stats = IngestStats()
        self._transient = _transient_errors()
        storage.add_stored_listener(self._on_stored)
        routes = [
            Route("/v1/logs", self.ingest, methods=["POST"]),
            Route("/v1/events", self.search, methods=["GET"]),
            Route("/v1/events/count", self.count, methods=["GET"]),
            Route("/v1/events/export", self.export, methods=["GET"]),
            Route("/v1/events/tail", self.tail, methods=["GET"]),
            Route("/v1/events/{uid:path}", self.get_event, methods=["GET"]),
            Route("/v1/keys", self.list_keys, methods=["GET"]),
            Route("/v1/keys", self.create_key, methods=["POST"]),
            Route("/v1/keys/{key_id}", self.revoke_key, methods=["DELETE"]),
            Route("/v1/stats", self.tenant_stats, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]
        self.asgi = Starlette(
            routes=routes,
            exception_handlers={ApiError: self._on_api_error, HTTPException: self._on_http_error, Exception: self._on_crash},
            lifespan=self._lifespan,
        )
        self.asgi.state.store = self
        from .alert_routes import install_alerting

        self.alerting = install_alerting(self, webhook_settings)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Background work of the app (webhook deliveries) runs while it is served."""
        self.alerting.start()
        try:
            yield
        finally:
            self.storage.remove_stored_listener(self._on_stored)
            await run_in_threadpool(self.alerting.stop)
            if self.owns_storage:
                await run_in_threadpool(self.storage.close)

    def add_ingest_hook(self, hook: IngestHook) -> None:
        """Call `hook(stored_events)` after every batch that stored something (exceptions are logged). It runs
        once the batch is stored, which with SQLite can be after ingest answered, in the merging thread."""
        self.ingest_hooks.append(hook)

    def _on_stored(self, tenant_id: str, stored: list[StoredEvent], duplicates: int) -> None:
        self.stats.add(tenant_id, stored=len(stored), duplicate=duplicates)
        if stored:
            for hook in self.ingest_hooks:
                try:
                    hook(stored)
                except Exception:  # noqa: BLE001 - the events are stored; a hook failure must not fail ingest
                    _log.exception("otel-audit store: ingest hook %r failed", hook)

    # errors -----------------------------------------------------------------------------------------------

    async def _on_api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    async def _on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def _on_crash(self, request: Request, exc: Exception) -> Response:
        _log.exception("otel-audit store: unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "message": "internal error (logged by the server)"}, status_code=500)

    async def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run blocking storage work in the thread pool; a database outage becomes 503 + Retry-After."""
        try:
            return await run_in_threadpool(func, *args)
        except self._transient as exc:
            raise _storage_unavailable(exc) from None

    # auth -------------------------------------------------------------------------------------------------

    async def _authorize(self, request: Request, scope: str) -> ApiKey:
        header = request.headers.get("authorization")
        secret = None
        if header is not None:
            kind, _, value = header.partition(" ")
            if kind.lower() != "bearer" or not value.strip():
                raise ApiError(401, "unauthorized", "Authorization header must be 'Bearer <key>'",
                               headers={"WWW-Authenticate": "Bearer"})
            secret = value.strip()
        else:
            secret = request.headers.get("x-api-key")
        if not secret:
            raise ApiError(401, "unauthorized", "missing API key (Authorization: Bearer <key> or x-api-key header)",
                           headers={"WWW-Authenticate": "Bearer"})
        if len(secret) > MAX_KEY_LENGTH:
            raise ApiError(401, "unauthorized", "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        key = await self._call(self.authenticator.authenticate, secret)
        if key is None:
            raise ApiError(401, "unauthorized", "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if scope not in key.scopes:
            raise ApiError(403, "forbidden", f"this API key lacks the '{scope}' scope")
        if scope != "ingest":
            # Every call but ingest sees each batch accepted before it: stored, and heard by the ingest hooks.
            await self._call(self.storage.settle)
        return key

    # ingest -----------------------------------------------------------------------------------------------

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "bad_content_length", "Content-Length must be a non-negative integer")
            if int(declared) > limit:
                raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "client_disconnected", "the client went away before sending the whole body") from None
        return b"".join(chunks)

    def _ingest_batch(self, body: bytes, content_encoding: str | None, encoding: str, tenant_id: str) -> otlp.IngestBatch:
        data = otlp.decompress(body, content_encoding, self.settings.max_decompressed_bytes)
        batch = otlp.ingest_request(data, encoding, tenant_id)
        self.storage.submit_events(batch.events)
        received = len(batch.events) + batch.rejected + batch.ignored
        self.stats.add(tenant_id, received=received, rejected=batch.rejected, ignored=batch.ignored)
        return batch

    async def ingest(self, request: Request) -> Response:
        """OTLP/HTTP logs: protobuf or JSON, optionally gzip/deflate; partial_success names rejected records."""
        key = await self._authorize(request, "ingest")
        try:
            encoding = otlp.media_type(request.headers.get("content-type"))
        except otlp.IngestError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        body = await self._read_body(request)
        try:
            batch = await self._call(
                self._ingest_batch, body, request.headers.get("content-encoding"), encoding, key.tenant_id
            )
        except otlp.IngestError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        payload = otlp.encode_response(batch.rejected, batch.message(), encoding)
        return Response(payload, media_type=encoding)

    # search -----------------------------------------------------------------------------------------------

    def _query(
        self,
        request: Request, allowed: tuple[str, ...] = EventQuery.PARAMETERS, exclude: tuple[str, ...] = ()
    ) -> EventQuery:
        items = [(name, value) for name, value in request.query_params.multi_items() if name not in exclude]
        repeated = [name for name, times in Counter(name for name, _ in items).items() if times > 1]
        if repeated:
            raise ApiError(400, "bad_parameter", f"{repeated[0]}: given more than once", parameter=repeated[0])
        try:
            return EventQuery.from_params(dict(items), allowed=allowed, tokens=self.tokens)
        except QueryError as exc:
            raise ApiError(400, "bad_parameter", str(exc), parameter=exc.parameter) from None

    async def search(self, request: Request) -> Response:
        """GET /v1/events: filters, newest first, `limit`, opaque `cursor` (the previous page's next_cursor)."""
        key = await self._authorize(request, "read")
        query = self._query(request)
        page = await self._call(self.storage.search, key.tenant_id, query)
        return JSONResponse({
            "events": [event.to_json() for event in page.events],
            "next_cursor": page.next_cursor.encode(self.tokens) if page.next_cursor else None,
        })

    async def count(self, request: Request) -> Response:
        """GET /v1/events/count: how many of the tenant's events match the filters."""
        key = await self._authorize(request, "read")
        query = self._query(request, EventQuery.FILTER_PARAMETERS)
        return JSONResponse({"count": await self._call(self.storage.count, key.tenant_id, query)})

    async def get_event(self, request: Request) -> Response:
        """GET /v1/events/{uid}: one event by its log.record.uid (404 if it is not the tenant's)."""
        key = await self._authorize(request, "read")
        uid = request.path_params["uid"]
        if not uid or len(uid) > 1024 or "\x00" in uid:
            raise ApiError(400, "bad_parameter", "uid: 1-1024 characters, no NUL", parameter="uid")
        event = await self._call(self.storage.get_event, key.tenant_id, uid)
        if event is None:
            raise ApiError(404, "not_found", "no such event")
        return JSONResponse(event.to_json())

    async def export(self, request: Request) -> Response:
        """GET /v1/events/export?format=csv|jsonl|ocsf&filters...: every match, streamed newest first."""
        key = await self._authorize(request, "read")
        formats = request.query_params.getlist("format") or ["jsonl"]
        fmt = formats[0]
        if len(formats) > 1 or fmt not in export.FORMATS:
            raise ApiError(400, "bad_parameter", f"format: must be one of {', '.join(export.FORMATS)}", parameter="format")
        query = self._query(request, EventQuery.FILTER_PARAMETERS, exclude=("format",))
        writer = {"csv": export.csv_lines, "jsonl": export.jsonl_lines, "ocsf": export.ocsf_lines}[fmt]
        events: Iterator[StoredEvent] = self.storage.iterate(key.tenant_id, query)
        extension = "csv" if fmt == "csv" else "jsonl"
        return StreamingResponse(
            writer(events), media_type=export.MEDIA_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="audit-events.{fmt}.{extension}"'},
        )

    async def tail(self, request: Request) -> Response:
        """GET /v1/events/tail?after=TOKEN: events stored since the token, oldest first, and the next token.

        Without `after` it returns no events and the current position, so a follower starts "from now".
        """
        key = await self._authorize(request, "read")
        params = request.query_params
        unknown = sorted(set(params) - {"after", "limit"})
        if unknown:
            raise ApiError(400, "bad_parameter", f"{unknown[0]}: unknown parameter (allowed: after, limit)", parameter=unknown[0])
        limit_text = params.get("limit", "1000")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            raise ApiError(400, "bad_parameter", "limit: must be an integer 1-1000", parameter="limit")
        after = params.get("after")
        if after is None:
            position = await self._call(self.storage.last_seq)
            return JSONResponse({"events": [], "next": self.tokens.seal(0, position)})
        try:
            _, seq = self.tokens.open(after, "after")
        except QueryError as exc:
            raise ApiError(400, "bad_parameter", str(exc), parameter="after") from None
        events = await self._call(self.storage.events_after, key.tenant_id, seq, int(limit_text))
        next_token = self.tokens.seal(0, events[-1].seq) if events else after
        return JSONResponse({"events": [event.to_json() for event in events], "next": next_token})

    # keys -------------------------------------------------------------------------------------------------

    async def list_keys(self, request: Request) -> Response:
        """GET /v1/keys: the tenant's keys (never secrets). Needs the admin scope."""
        key = await self._authorize(request, "admin")
        keys = await self._call(self.storage.list_keys, key.tenant_id)
        return JSONResponse({"keys": [item.to_json() for item in keys]})

    async def create_key(self, request: Request) -> Response:
        """POST /v1/keys {"scopes": [...], "name": ...}: a new key of the caller's tenant; the secret is shown once."""
        key = await self._authorize(request, "admin")
        try:
            payload = await request.json()
        except ValueError:
            raise ApiError(400, "malformed_json", "body must be a JSON object like {\"scopes\": [\"read\"]}") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "malformed_json", "body must be a JSON object")
        unknown = sorted(set(payload) - {"scopes", "name"})
        if unknown:
            raise ApiError(400, "bad_parameter", f"{unknown[0]}: unknown field (allowed: scopes, name)", parameter=unknown[0])
        scopes = payload.get("scopes")
        name = payload.get("name", "")
        if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
            raise ApiError(400, "bad_parameter", "scopes: must be a list of strings", parameter="scopes")
        if not isinstance(name, str):
            raise ApiError(400, "bad_parameter", "name: must be a string", parameter="name")
        try:
            created, secret = await self._call(create_key, self.storage, key.tenant_id, scopes, name)
        except ApiKeyError as exc:
            parameter = str(exc).split(":", 1)[0]
            raise ApiError(400, "bad_parameter", str(exc), parameter=parameter) from None
        return JSONResponse({**created.to_json(), "secret": secret}, status_code=201)

    async def revoke_key(self, request: Request) -> Response:
        """DELETE /v1/keys/{key_id}: revoke one of the tenant's keys."""
        key = await self._authorize(request, "admin")
        key_id = request.path_params["key_id"]
        revoked = await self._call(self.storage.revoke_key, key_id[:200], time.time_ns(), key.tenant_id)
        if not revoked:
            raise ApiError(404, "not_found", "no such active key")
        self.authenticator.forget()
        return JSONResponse({"key_id": key_id, "revoked": True})

    # health -----------------------------------------------------------------------------------------------

    async def tenant_stats(self, request: Request) -> Response:
        """GET /v1/stats: this process's ingest counters for the caller's tenant (stored and duplicate count
        the batches this process stored, which with SQLite includes other workers' batches it merged)."""
        key = await self._authorize(request, "read")
        return JSONResponse({"tenant_id": key.tenant_id, "ingest": self.stats.of(key.tenant_id)})

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the database answers a query."""
        try:
            await run_in_threadpool(self.storage.last_seq)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "unavailable", "message": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ready"})


def create_app(
    storage: Storage, *, settings: StoreSettings | None = None, ingest_hooks: Sequence[IngestHook] = (),
    webhooks: WebhookSettings | None = None, owns_storage: bool = False,
) -> Starlette:
    """The store's ASGI app over `storage`; `app.state.store` is the StoreApp (for add_ingest_hook).
    `webhooks` (default: from OTEL_AUDIT_WEBHOOK_* variables) sets the webhook allowlist and retry policy;
    `owns_storage`: close the storage when the app shuts down (with SQLite that merges the ingest journal)."""
    return StoreApp(storage, settings or StoreSettings(), ingest_hooks, webhooks, owns_storage).asgi


# Ingest keeps each accepted batch's events until the journal merge has stored them (the ingest hooks get them),
# and with CPython's default thresholds the cyclic collector walks them again and again: the store's server
# processes collect less often (measured with benchmarks/bench_store.py's OTLP/HTTP ingest at 100,000 stored
# events: 14.8k -> 18.0k events/s; collection switched off: 18.5k). An application embedding create_app keeps
# its own settings.
SERVER_GC_THRESHOLDS = (100_000, 50, 1_000)


def tune_server_gc() -> None:
    """Set the cyclic garbage collector's thresholds for a process that only serves the store."""
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


def app_from_environment() -> Starlette:
    """uvicorn factory used by `otel-audit serve --workers N`: each worker process opens its own storage from
    OTEL_AUDIT_STORE_DB and limits from OTEL_AUDIT_STORE_MAX_BODY_BYTES / _MAX_DECOMPRESSED_BYTES."""
    from .storage import open_storage

    tune_server_gc()
    defaults = StoreSettings()
    settings = StoreSettings(
        max_body_bytes=int(os.environ.get("OTEL_AUDIT_STORE_MAX_BODY_BYTES", defaults.max_body_bytes)),
        max_decompressed_bytes=int(
            os.environ.get("OTEL_AUDIT_STORE_MAX_DECOMPRESSED_BYTES", defaults.max_decompressed_bytes)
        ),
    )
    return create_app(open_storage(os.environ.get("OTEL_AUDIT_STORE_DB"), migrate=False), settings=settings,
                      owns_storage=True)
