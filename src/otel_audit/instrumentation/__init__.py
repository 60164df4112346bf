"""Web framework auto-instrumentation: audit events for HTTP requests (ASGI/FastAPI, WSGI/Flask, zero-code).

`AuditMiddleware` (pure ASGI) and `WSGIAuditMiddleware` work with any framework; `fastapi.instrument_app` and
`flask.instrument_flask` add framework details; `instrumentor.AuditInstrumentor` is the `opentelemetry-instrument`
entry point.
"""

from .asgi import ActorContextMiddleware, AuditMiddleware
from .wsgi import WSGIAuditMiddleware

__all__ = ["ActorContextMiddleware", "AuditMiddleware", "WSGIAuditMiddleware"]
