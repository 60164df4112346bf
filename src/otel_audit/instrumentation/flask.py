"""Flask: `instrument_flask(app, actor_resolver=...)` wraps `app.wsgi_app` in the WSGI audit middleware.

Flask signals fill in what only exists inside the request context: the route rule (`/documents/<int:id>`), view
arguments and the exception Flask turned into a 500. After the before_request hooks the actor (Flask-Login's
`current_user`, else `g.user`, or `actor_resolver()`) and tenant enter the audit context. Resolvers here are called
with no arguments inside the request context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import flask
from flask import Flask, g, request

from ..context import audit_context
from ._http import STATE_KEY, RequestState, resolve_actor, resolve_text
from .wsgi import WSGIAuditMiddleware

EXTENSION = "otel_audit"
_CONTEXT_KEY = "otel_audit.context"
_signals_lock = threading.Lock()
_signals_connected = False


def default_flask_actor() -> Any:
    """Flask-Login's `current_user` when Flask-Login is set up on the app, else `g.user`."""
    if getattr(flask.current_app, "login_manager", None) is not None:
        from flask_login import current_user  # type: ignore[import-untyped]

        return current_user._get_current_object()
    return g.get("user")


class _FlaskAudit:
    """Per-app settings the signal handlers read from `app.extensions["otel_audit"]`."""

    def __init__(self, middleware: WSGIAuditMiddleware, actor_resolver: Callable[[], Any] | None,
                 tenant_resolver: Callable[[], str | None] | None) -> None:
        self.middleware = middleware
        actor = actor_resolver or default_flask_actor
        self.actor_resolver: Callable[[Any], Any] = lambda _: actor()
        self.tenant_resolver: Callable[[Any], Any] | None = (lambda _: tenant_resolver()) if tenant_resolver else None


def instrument_flask(
    app: Flask,
    *,
    actor_resolver: Callable[[], Any] | None = None,
    tenant_resolver: Callable[[], str | None] | None = None,
    **options: Any,
) -> Flask:
    """Audit a Flask app; `options` are WSGIAuditMiddleware's (methods, excluded_urls, actions, trusted_proxies,
    session_resolver, session_cookie, request_id_header). Calling it twice is a no-op."""
    if EXTENSION in app.extensions:
        return app
    if actor_resolver is not None and not callable(actor_resolver):
        raise TypeError(f"actor_resolver: must be callable, got {type(actor_resolver).__name__}")
    if tenant_resolver is not None and not callable(tenant_resolver):
        raise TypeError(f"tenant_resolver: must be callable, got {type(tenant_resolver).__name__}")
    middleware = WSGIAuditMiddleware(app.wsgi_app, **options)
    audit = app.extensions[EXTENSION] = _FlaskAudit(middleware, actor_resolver, tenant_resolver)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    original_preprocess = app.preprocess_request

    def preprocess_request() -> Any:
        response = original_preprocess()
        if response is None:
            _enter_actor_context(audit)
        return response

    app.preprocess_request = preprocess_request  # type: ignore[method-assign]
    connect_signals()
    return app


def uninstrument_flask(app: Flask) -> None:
    """Remove what instrument_flask added."""
    audit = app.extensions.pop(EXTENSION, None)
    if audit is None:
        return
    middleware: WSGIAuditMiddleware = audit.middleware
    if app.wsgi_app is middleware:
        app.wsgi_app = middleware.app  # type: ignore[method-assign, assignment]
    app.__dict__.pop("preprocess_request", None)


def connect_signals() -> None:
    """Connect the request signal handlers once per process (they act only on audited requests)."""
    global _signals_connected
    with _signals_lock:
        if not _signals_connected:
            flask.request_started.connect(_on_request_started)
            flask.got_request_exception.connect(_on_exception)
            flask.request_tearing_down.connect(_on_teardown)
            _signals_connected = True


def _audited(sender: Any) -> tuple[_FlaskAudit, RequestState] | None:
    """The app's audit settings and the request's state, when this request is audited."""
    audit: _FlaskAudit | None = sender.extensions.get(EXTENSION) if hasattr(sender, "extensions") else None
    if audit is None:
        return None
    state: RequestState | None = request.environ.get(STATE_KEY)
    return None if state is None else (audit, state)


def _on_request_started(sender: Any, **extra: Any) -> None:
    audited = _audited(sender)
    if audited is None:
        return
    state = audited[1]
    rule = request.url_rule
    state.route_template = rule.rule if rule is not None else None
    state.path_params = request.view_args


def _enter_actor_context(audit: _FlaskAudit) -> None:
    """After the before_request hooks (where apps load `g.user`): put actor and tenant into the audit context."""
    state = request.environ.get(STATE_KEY)
    if state is None:
        return
    if state.actor is None:
        state.actor = resolve_actor(audit.actor_resolver, None)
    if state.tenant is None and audit.tenant_resolver is not None:
        state.tenant = resolve_text(audit.tenant_resolver, None, "tenant_resolver")
    context = audit_context(actor=state.actor, tenant=state.tenant)
    context.__enter__()
    request.environ[_CONTEXT_KEY] = context


def _on_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    audited = _audited(sender)
    if audited is not None:
        audited[1].error = exception


def _on_teardown(sender: Any, exc: BaseException | None = None, **extra: Any) -> None:
    audited = _audited(sender)
    if audited is None:
        return
    audit, state = audited
    context = request.environ.pop(_CONTEXT_KEY, None)
    try:
        if state.actor is None:
            state.actor = resolve_actor(audit.actor_resolver, None)
    finally:
        if context is not None:
            context.__exit__(None, None, None)
