"""FastAPI / Starlette: `instrument_app(app, actor_resolver=...)` adds the audit middleware to an app.

AuditMiddleware goes outermost among the user middleware (it sees every response, including a 401 sent by an
auth middleware) and ActorContextMiddleware innermost (after auth middleware has set `scope["user"]`), so the
endpoint's audit context carries the authenticated actor.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from .asgi import ActorContextMiddleware, AuditMiddleware

_MARK = "_otel_audit_middleware"


def audit_middleware(**options: Any) -> tuple[Middleware, Middleware]:
    """The (outer, inner) Middleware entries for a Starlette middleware list, built from AuditMiddleware options.

    Options are checked here, once, so a bad argument fails at setup rather than on the first request.
    """
    AuditMiddleware(_unused_app, **options)
    inner_options = {key: options[key] for key in ("actor_resolver", "tenant_resolver") if key in options}
    return Middleware(AuditMiddleware, **options), Middleware(ActorContextMiddleware, **inner_options)


async def _unused_app(scope: Any, receive: Any, send: Any) -> None:
    """Placeholder downstream app used only to validate options."""


def instrument_app(app: Starlette, **options: Any) -> Starlette:
    """Audit a FastAPI or Starlette app; takes AuditMiddleware's options. Calling it twice is a no-op.

    Works before or after the app has served requests (the middleware stack is rebuilt on the next request).
    """
    if getattr(app, _MARK, None) is not None:
        return app
    outer, inner = audit_middleware(**options)
    app.user_middleware.insert(0, outer)
    app.user_middleware.append(inner)
    setattr(app, _MARK, (outer, inner))
    app.middleware_stack = None
    return app


def uninstrument_app(app: Starlette) -> None:
    """Remove what instrument_app added (effective from the next request)."""
    added = getattr(app, _MARK, None)
    if added is None:
        return
    app.user_middleware[:] = [entry for entry in app.user_middleware if all(entry is not item for item in added)]
    setattr(app, _MARK, None)
    app.middleware_stack = None


def is_instrumented(app: Starlette) -> bool:
    """Whether instrument_app() audits this app."""
    return getattr(app, _MARK, None) is not None
