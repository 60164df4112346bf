"""Pure ASGI audit middleware: one audit event per state-changing request and per access denial.

Pure ASGI (no BaseHTTPMiddleware, no Request objects) so the per-request cost stays a few microseconds. The
downstream app runs inside `audit_context(...)`, so events emitted by service code inherit actor, tenant,
request id, session id, client address and user agent.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from ..context import AuditContext, audit_context
from ..context import _current as _audit_context_var
from ..logger import SCOPE_VERSION, get_audit_logger
from ..model import Actor
from ._http import (
    STATE_KEY,
    ActorResolver,
    AuditOptions,
    RequestState,
    StringResolver,
    clip,
    emit_request_event,
    is_strict,
    report_failure,
    request_id_from,
    resolve_actor,
    resolve_text,
    session_id_from_cookie,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGGER_NAME = "otel_audit.instrumentation.asgi"

_get_context = _audit_context_var.get
_set_context = _audit_context_var.set
_reset_context = _audit_context_var.reset


def default_actor(scope: Scope) -> Any:
    """Starlette's `scope["user"]` (AuthenticationMiddleware) when authenticated, else `request.state.user`."""
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", True):
        return user
    state = scope.get("state")
    from_state = state.get("user") if state else None
    return user if from_state is None else from_state


def python_route_of(scope: Scope, root_path: str) -> tuple[str | None, Mapping[str, Any] | None]:
    """The matched route template (mount prefix included) and path parameters, once the router has run
    (`_request.route_of` is the same, compiled)."""
    route = scope.get("route")
    if route is None:
        return None, scope.get("path_params")
    path_format = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path_format, str):
        return None, scope.get("path_params")
    mount_prefix = scope.get("root_path", "")[len(root_path):]
    return (mount_prefix.rstrip("/") + path_format) or "/", scope.get("path_params")


class AuditMiddleware:
    """`app = AuditMiddleware(app, actor_resolver=..., tenant_resolver=..., trusted_proxies=[...])`.

    Audits POST/PUT/PATCH/DELETE (configurable with `methods`) and every 401/403; `excluded_urls` (regexes,
    default OTEL_PYTHON_EXCLUDED_URLS) are not audited; `actions` maps "METHOD /template" or "/template" to an
    action name (None: not audited). Resolvers get the ASGI scope.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        methods: Iterable[str] | None = None,
        excluded_urls: Iterable[str] | str | None = None,
        actions: Mapping[str, str | None] | None = None,
        actor_resolver: ActorResolver | None = None,
        tenant_resolver: StringResolver | None = None,
        session_resolver: StringResolver | None = None,
        session_cookie: str | None = None,
        trusted_proxies: Iterable[str] | str | None = None,
        request_id_header: str = "x-request-id",
    ) -> None:
        self.app = app
        self.options = options = AuditOptions.build(
            methods=methods,
            excluded_urls=excluded_urls,
            actions=actions,
            actor_resolver=actor_resolver,
            tenant_resolver=tenant_resolver,
            session_resolver=session_resolver,
            session_cookie=session_cookie,
            trusted_proxies=trusted_proxies,
            request_id_header=request_id_header,
        )
        self._actor_resolver = actor_resolver or default_actor
        self._request_id_header = options.request_id_header.encode("latin-1")
        self._trusted_proxies = options.trusted_proxies if options.trusted_proxies else None
        self._resolves_more = self._trusted_proxies is not None or any(
            value is not None for value in (options.session_resolver, options.session_cookie, options.tenant_resolver)
        )
        self._excluded = options.excluded.search if options.excluded is not None else None
        self._logger = get_audit_logger(LOGGER_NAME, SCOPE_VERSION)
        self._start = self._python_start if RequestStarter is None else RequestStarter(
            self._request_id_header, STATE_KEY, self._resolve, self._strict_send,
            self._resolves_more or self._actor_resolver is not default_actor,
        )
        self._finish = self._python_finish if RequestFinisher is None else RequestFinisher(
            self._logger, options, options.methods, self._python_finish, report_event_failure,
            self._actor_resolver is not default_actor or options.tenant_resolver is not None,
        )
        if (
            isinstance(app, ActorContextMiddleware)
            and app.actor_resolver is self._actor_resolver
            and app.tenant_resolver is options.tenant_resolver
        ):
            # The inner layer directly inside this one (no middleware between them, e.g. instrument_app on an app
            # without middleware of its own) would see the very scope _begin already resolved: skip it.
            self.app = app.app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or STATE_KEY in scope:
            await self.app(scope, receive, send)
            return
        excluded = self._excluded
        if excluded is not None and excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            state, send_with_status, token = self._start(scope, send, is_strict())
        except Exception as exc:
            if is_strict():
                raise
            report_failure(exc, "reading the request")
            await self.app(scope, receive, send)
            return
        try:
            try:
                await self.app(scope, receive, send_with_status)
            except BaseException as exc:
                state.error = exc
                try:
                    self._finish(scope, state)
                except Exception:  # noqa: BLE001, S110 - reported by _finish (strict re-raises); the app's error wins
                    pass
                raise
            self._finish(scope, state)
        finally:
            _reset_context(token)

    def _python_start(self, scope: Scope, send: Send, strict: bool) -> tuple[RequestState, Send, Any]:
        """The request's state, its status-noting `send` and the token of its audit context; the state goes into the
        scope. `_start` is this, or `_request.RequestStarter`, the same in C (which calls `_resolve` only when the
        options or the scope give a resolver work)."""
        state = begin_request(scope, self._request_id_header)
        self._resolve(scope, state)
        send_with_status = self._strict_send(scope, state, send) if strict else status_recorder(send, state)
        token = enter_request_context(state)
        scope[STATE_KEY] = state
        return state, send_with_status, token

    def _resolve(self, scope: Scope, state: RequestState) -> None:
        """What the options add to the state: the client behind trusted proxies, the session id, the tenant and
        the actor."""
        if self._resolves_more:
            self._resolve_more(scope, state)
        state.actor = actor_of(self._actor_resolver, scope)

    def _resolve_more(self, scope: Scope, state: RequestState) -> None:
        options = self.options
        if self._trusted_proxies is not None:
            state.client_address = clip(self._client_behind_proxies(scope, state.client_address))
        if options.session_resolver is not None:
            state.session_id = resolve_text(options.session_resolver, scope, "session_resolver")
        elif options.session_cookie is not None:
            state.session_id = session_id_from_cookie(_last_header(scope, b"cookie"), options.session_cookie)
        if options.tenant_resolver is not None:
            state.tenant = resolve_text(options.tenant_resolver, scope, "tenant_resolver")

    def _strict_send(self, scope: Scope, state: RequestState, send: Send) -> Send:
        """The strict mode's send: the event is persisted before the status line leaves, so a request that cannot
        be audited fails."""

        def send_with_status(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                state.status = message["status"]
                self._finish(scope, state)
            return send(message)

        return send_with_status

    def _client_behind_proxies(self, scope: Scope, peer: str | None) -> str | None:
        """The client address when the peer is a trusted proxy (read from its forwarding headers), else the peer."""
        trusted = self._trusted_proxies
        if peer is None or trusted is None or not trusted.is_trusted(peer):
            return peer
        forwarded_for: list[str] = []
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"forwarded":
                forwarded.append(value.decode("latin-1"))
        return trusted.client_address(peer, forwarded_for, forwarded)

    def _python_finish(self, scope: Scope, state: RequestState) -> None:
        """Emit the request's event (once); errors are reported, and raised only in strict mode. `_finish` is this,
        or `_request.RequestFinisher`, which does the same in C and calls this where a resolver has work to do."""
        if state.emitted or not self.options.wants(state.method, state.status or 500):
            return
        try:
            state.route_template, state.path_params = route_of(scope, state.root_path)
            if state.actor is None:
                state.actor = actor_of(self._actor_resolver, scope)
            if state.tenant is None and self.options.tenant_resolver is not None:
                state.tenant = resolve_text(self.options.tenant_resolver, scope, "tenant_resolver")
            emit_request_event(self._logger, self.options, state)
        except Exception as exc:  # noqa: BLE001 - auditing must not break the request
            report_event_failure(exc, state)


class ActorContextMiddleware:
    """Innermost companion of AuditMiddleware: once inner auth middleware has set `scope["user"]`, put that
    actor (and tenant) into the audit context for the endpoint and service code."""

    def __init__(self, app: ASGIApp, *, actor_resolver: ActorResolver | None = None,
                 tenant_resolver: StringResolver | None = None) -> None:
        self.app = app
        self.actor_resolver = actor_resolver or default_actor
        self.tenant_resolver = tenant_resolver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get(STATE_KEY)
        if state is None or (state.actor is not None and (state.tenant is not None or self.tenant_resolver is None)):
            await self.app(scope, receive, send)
            return
        actor, tenant = state.actor, state.tenant
        if actor is None:
            actor = state.actor = actor_of(self.actor_resolver, scope)
        if tenant is None and self.tenant_resolver is not None:
            tenant = state.tenant = resolve_text(self.tenant_resolver, scope, "tenant_resolver")
        if actor is None and tenant is None:
            await self.app(scope, receive, send)
            return
        with audit_context(actor=actor, tenant=tenant):
            await self.app(scope, receive, send)


def python_begin_request(scope: Scope, request_id_header: bytes) -> RequestState:
    """An ASGI request's method, path, request id, peer address, user agent and start time; the middleware adds
    what its resolvers say. `_request.begin_request` is the same, compiled."""
    request_id = user_agent = None
    for name, value in scope["headers"]:
        if name == request_id_header:
            request_id = value
        elif name == b"user-agent":
            user_agent = value
    client = scope.get("client")
    return RequestState(
        scope["method"],
        scope["path"],
        request_id_from(None if request_id is None else request_id.decode("latin-1")),
        clip(client[0] if client else None),
        clip(None if user_agent is None else user_agent.decode("latin-1")),
        None,
        None,
        None,
        time.perf_counter_ns(),
        scope.get("root_path", ""),
    )


def python_enter_request_context(state: RequestState) -> contextvars.Token[AuditContext]:
    """Make the request's values the audit context, as `audit_context(...)` would (the impersonator is inherited);
    reset it with the token. `_request.enter_request_context` is the same, compiled.

    The values were built and checked by begin_request and the resolvers (strings, an Actor), so audit_context's
    per-value validation is skipped. Positional, in AuditContext's field order (a test checks every field): half
    the cost of keywords.
    """
    return _set_context(AuditContext(
        state.actor, state.tenant, state.request_id, state.session_id, _get_context().impersonator_id,
        state.client_address, state.user_agent,
    ))


def python_status_recorder(send: Send, state: RequestState) -> Send:
    """The app's `send`, noting the response status in the state on the way out. A plain function handing back the
    server's own awaitable: no extra coroutine per message. `_request.StatusRecorder` is the same, compiled."""

    def send_with_status(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            state.status = message["status"]
        return send(message)

    return send_with_status


def report_event_failure(exc: Exception, state: RequestState) -> None:
    """A request whose event failed: marked emitted (it is not tried again), reported, raised in strict mode."""
    state.emitted = True
    report_failure(exc, f"auditing {state.method} {state.path}")


def _last_header(scope: Scope, wanted: bytes) -> str | None:
    """The last value of one request header, as text."""
    found = None
    for name, value in scope["headers"]:
        if name == wanted:
            found = value
    return None if found is None else found.decode("latin-1")


try:  # compiled (optional, see _request.c)
    from ._request import RequestFinisher, RequestStarter
    from ._request import StatusRecorder as status_recorder
    from ._request import begin_request, configure_request_context, enter_request_context, route_of
except ImportError:  # built without a C compiler
    RequestFinisher = RequestStarter = None
    begin_request = python_begin_request
    route_of = python_route_of
    enter_request_context = python_enter_request_context
    status_recorder = python_status_recorder
else:
    configure_request_context(_audit_context_var, AuditContext)


def actor_of(resolver: ActorResolver, scope: Scope) -> Actor | None:
    """The request's actor from the resolver (see to_actor); the default resolver on a scope without a user or
    request state answers None without a call."""
    if resolver is default_actor and scope.get("user") is None and not scope.get("state"):
        return None
    return resolve_actor(resolver, scope)
