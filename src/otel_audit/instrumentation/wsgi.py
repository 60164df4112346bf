"""WSGI audit middleware: one audit event per state-changing request and per access denial.

The event is emitted when the response body is finished (or the app raised), so streamed bodies and errors while
streaming are covered. The app call and every body chunk run inside `audit_context(...)`, and the context is
reset each time, so nothing can leak into the next request a server thread handles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..context import audit_context
from ..logger import SCOPE_VERSION, get_audit_logger
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

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteResolver = Callable[[Environ], "tuple[str | None, Mapping[str, Any] | None]"]

LOGGER_NAME = "otel_audit.instrumentation.wsgi"


def _wsgi_text(value: str) -> str:
    """PEP 3333 strings are latin-1 decoded bytes; URLs are UTF-8."""
    return value.encode("latin-1").decode("utf-8", "replace")


class WSGIAuditMiddleware:
    """`app.wsgi_app = WSGIAuditMiddleware(app.wsgi_app, ...)`; options as for the ASGI AuditMiddleware.

    Resolvers get the WSGI environ. `route_resolver(environ)` may return (template, path params) once the app
    ran; framework integrations (see flask.py) fill the route and actor into the request state instead.
    """

    def __init__(
        self,
        app: WSGIApp,
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
        route_resolver: RouteResolver | None = None,
    ) -> None:
        self.app = app
        self.options = AuditOptions.build(
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
        self._request_id_key = "HTTP_" + self.options.request_id_header.upper().replace("-", "_")
        self._route_resolver = route_resolver
        self._logger = get_audit_logger(LOGGER_NAME, SCOPE_VERSION)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if STATE_KEY in environ:
            return self.app(environ, start_response)
        path = _wsgi_text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        excluded = self.options.excluded
        if excluded is not None and excluded.search(path):
            return self.app(environ, start_response)
        try:
            state = self._begin(environ, path)
        except Exception as exc:
            if is_strict():
                raise
            report_failure(exc, "reading the request")
            return self.app(environ, start_response)
        environ[STATE_KEY] = state
        strict = is_strict()

        def start_response_with_status(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            state.status = int(status[:3])
            if strict:
                # Persist the event before the status line leaves: a request that cannot be audited fails.
                self.finish(environ, state)
            return start_response(status, headers, exc_info)

        try:
            with self.context(state):
                body = self.app(environ, start_response_with_status)
        except BaseException as exc:
            state.error = exc
            self._finish_quietly(environ, state)
            raise
        return _AuditedBody(body, self, environ, state)

    def context(self, state: RequestState) -> Any:
        """The request's audit context (entered around the app call and around each body chunk)."""
        return audit_context(
            actor=state.actor,
            tenant=state.tenant,
            request_id=state.request_id,
            session_id=state.session_id,
            client_address=state.client_address,
            user_agent=state.user_agent,
        )

    def _begin(self, environ: Environ, path: str) -> RequestState:
        options = self.options
        peer = environ.get("REMOTE_ADDR") or None
        if options.trusted_proxies:
            forwarded_for = [environ["HTTP_X_FORWARDED_FOR"]] if "HTTP_X_FORWARDED_FOR" in environ else []
            forwarded = [environ["HTTP_FORWARDED"]] if "HTTP_FORWARDED" in environ else []
            client_address = options.trusted_proxies.client_address(peer, forwarded_for, forwarded)
        else:
            client_address = peer
        if options.session_resolver is not None:
            session_id = resolve_text(options.session_resolver, environ, "session_resolver")
        elif options.session_cookie is not None:
            session_id = session_id_from_cookie(environ.get("HTTP_COOKIE"), options.session_cookie)
        else:
            session_id = None
        tenant = None
        if options.tenant_resolver is not None:
            tenant = resolve_text(options.tenant_resolver, environ, "tenant_resolver")
        actor = resolve_actor(options.actor_resolver, environ) if options.actor_resolver is not None else None
        return RequestState(
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            path=path,
            request_id=request_id_from(environ.get(self._request_id_key)),
            client_address=clip(client_address),
            user_agent=clip(environ.get("HTTP_USER_AGENT")),
            session_id=session_id,
            actor=actor,
            tenant=tenant,
            started_ns=time.perf_counter_ns(),
        )

    def finish(self, environ: Environ, state: RequestState) -> None:
        """Emit the request's event (once); errors are reported, and raised only in strict mode."""
        if state.emitted:
            return
        try:
            if state.route_template is None and self._route_resolver is not None:
                state.route_template, state.path_params = self._route_resolver(environ)
            if state.actor is None and self.options.actor_resolver is not None:
                state.actor = resolve_actor(self.options.actor_resolver, environ)
            emit_request_event(self._logger, self.options, state)
        except Exception as exc:  # noqa: BLE001 - auditing must not break the request
            state.emitted = True
            report_failure(exc, f"auditing {state.method} {state.path}")

    def _finish_quietly(self, environ: Environ, state: RequestState) -> None:
        try:
            self.finish(environ, state)
        except Exception:  # noqa: BLE001, S110 - reported by finish (strict re-raises); the app's error wins
            pass


class _AuditedBody:
    """The app's response iterable, run chunk by chunk inside the audit context; emits the event at the end."""

    def __init__(self, body: Iterable[bytes], middleware: WSGIAuditMiddleware, environ: Environ,
                 state: RequestState) -> None:
        self._body = body
        self._middleware = middleware
        self._environ = environ
        self._state = state

    def __iter__(self) -> Iterator[bytes]:
        middleware, state = self._middleware, self._state
        iterator = iter(self._body)
        while True:
            try:
                with middleware.context(state):
                    chunk = next(iterator)
            except StopIteration:
                return
            except BaseException as exc:
                state.error = exc
                middleware._finish_quietly(self._environ, state)
                raise
            yield chunk

    def close(self) -> None:
        """Close the app's iterable (PEP 3333), then emit the event."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                with self._middleware.context(self._state):
                    close()
        except BaseException as exc:
            self._state.error = self._state.error or exc
            self._middleware._finish_quietly(self._environ, self._state)
            raise
        self._middleware.finish(self._environ, self._state)
