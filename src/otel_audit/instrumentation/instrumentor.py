"""AuditInstrumentor: zero-code auditing for `opentelemetry-instrument uvicorn app:app` (and Flask apps).

Registered under the `opentelemetry_instrumentor` entry point as `otel_audit`, so
`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_audit` turns it off. instrument() patches how Starlette/FastAPI
build their middleware stack (apps created before or after instrument() get the audit middleware on their first
request) and how Flask apps are called; uninstrument() removes it again from the next request on. The audit
pipeline is configured (from the environment, unless the app did it) when the first app is audited, in the
process that serves it: a script that serves nothing gets no spool directory and no threads, and a pre-forking
server configures it in each worker rather than in the master.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
import weakref
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.dependencies import (
    DependencyConflict,
    get_dependency_conflicts,
)
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from ..pipeline import configure, current_pipeline
from ..stats import STATS

_log = logging.getLogger(__name__)

INSTRUMENTS_ANY = ("starlette >= 0.37", "flask >= 3.0")
OPTION_NAMES = frozenset(
    {"methods", "excluded_urls", "actions", "trusted_proxies", "session_cookie", "request_id_header"}
)


def ensure_pipeline() -> None:
    """opentelemetry-instrument sets up the OTel SDK, not the dedicated audit provider: configure it from the
    environment (OTEL_AUDIT_* / OTEL_EXPORTER_OTLP_*) unless the application already did."""
    if current_pipeline() is not None:
        return
    try:
        configure()
    except Exception:  # noqa: BLE001 - a bad setting must not stop the app; emits will report it again
        STATS.increment("instrumentation_errors")
        _log.exception("otel-audit: could not configure the audit pipeline from the environment")


class AuditInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """`AuditInstrumentor().instrument(methods=..., excluded_urls=..., actions=..., trusted_proxies=...)`."""

    def __init__(self) -> None:
        if not hasattr(self, "_lock"):
            self._lock = threading.Lock()
            self._patches: list[tuple[type, str, Any]] = []
            self._starlette_apps: weakref.WeakSet[Any] = weakref.WeakSet()
            self._flask_apps: weakref.WeakSet[Any] = weakref.WeakSet()
            self._options: dict[str, Any] = {}

    def instrumentation_dependencies(self) -> Collection[str]:
        """Nothing is required by itself; any one of INSTRUMENTS_ANY is (see _check_dependency_conflicts)."""
        return ()

    def _check_dependency_conflicts(self) -> DependencyConflict | None:
        return get_dependency_conflicts((), INSTRUMENTS_ANY)

    def _instrument(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - OPTION_NAMES)
        if unknown:
            raise TypeError(f"AuditInstrumentor.instrument: unknown option {unknown[0]!r} (use {sorted(OPTION_NAMES)})")
        self._options = dict(kwargs)
        if importlib.util.find_spec("starlette") is not None:
            self._patch_starlette()
        if importlib.util.find_spec("flask") is not None:
            self._patch_flask()

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls, name, original in reversed(self._patches):
            setattr(cls, name, original)
        self._patches.clear()
        for app in list(self._starlette_apps):
            app.middleware_stack = None
        self._starlette_apps.clear()
        if self._flask_apps:
            from .flask import uninstrument_flask

            for app in list(self._flask_apps):
                uninstrument_flask(app)
            self._flask_apps.clear()

    def _patch_starlette(self) -> None:
        from starlette.applications import Starlette

        from .fastapi import audit_middleware, is_instrumented

        outer, inner = audit_middleware(**self._options)
        classes: list[type] = [Starlette]
        if importlib.util.find_spec("fastapi") is not None:
            from fastapi import FastAPI

            classes.append(FastAPI)
        for cls in classes:
            original = cls.__dict__["build_middleware_stack"]

            def build_middleware_stack(app: Any, _original: Any = original) -> Any:
                if is_instrumented(app):
                    return _original(app)
                ensure_pipeline()
                user_middleware = app.user_middleware
                app.user_middleware = [outer, *user_middleware, inner]
                try:
                    stack = _original(app)
                finally:
                    app.user_middleware = user_middleware
                self._starlette_apps.add(app)
                return stack

            self._patches.append((cls, "build_middleware_stack", original))
            cls.build_middleware_stack = functools.wraps(original)(build_middleware_stack)  # type: ignore[attr-defined]

    def _patch_flask(self) -> None:
        from flask import Flask

        from .flask import EXTENSION, instrument_flask

        original = Flask.__dict__["__call__"]
        options = self._options
        lock = self._lock

        def __call__(app: Any, environ: Any, start_response: Any) -> Any:
            if EXTENSION not in app.extensions:
                with lock:
                    if EXTENSION not in app.extensions:
                        ensure_pipeline()
                        instrument_flask(app, **options)
                        self._flask_apps.add(app)
            return original(app, environ, start_response)

        self._patches.append((Flask, "__call__", original))
        Flask.__call__ = functools.wraps(original)(__call__)  # type: ignore[method-assign, assignment]
