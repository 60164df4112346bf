"""Who is acting, for which tenant, in which request: ambient audit context on contextvars.

`audit_context(...)` nests (inner values override outer ones, unset values are inherited), follows `await`,
and is isolated between concurrent tasks and threads, exactly like OpenTelemetry's own context.
"""

from __future__ import annotations

import contextvars
from typing import NamedTuple

from .model import Actor, AuditEventError

_UNSET = object()


class AuditContext(NamedTuple):
    """The ambient values an event inherits when emit() is not given them (a tuple: cheap to build per request)."""

    actor: Actor | None = None
    tenant_id: str | None = None
    request_id: str | None = None
    session_id: str | None = None
    impersonator_id: str | None = None
    client_address: str | None = None
    user_agent: str | None = None


EMPTY_CONTEXT = AuditContext()
_current: contextvars.ContextVar[AuditContext] = contextvars.ContextVar("otel_audit_context", default=EMPTY_CONTEXT)


def current_audit_context() -> AuditContext:
    """The audit context in effect here (EMPTY_CONTEXT outside any audit_context block)."""
    return _current.get()


_make_context = AuditContext._make
_FIELDS = ("actor", "tenant_id", "request_id", "session_id", "impersonator_id", "client_address", "user_agent")


class audit_context:  # noqa: N801 - used like a function: `with audit_context(actor=...):`
    """Set audit context for a `with` block; a string actor means Actor(id=...). Pass None to clear an inherited
    value. A class rather than a generator so entering it costs little on every request."""

    __slots__ = ("_changes", "_token", "context")

    def __init__(
        self,
        *,
        actor: Actor | str | None = _UNSET,  # type: ignore[assignment]
        tenant: str | None = _UNSET,  # type: ignore[assignment]
        request_id: str | None = _UNSET,  # type: ignore[assignment]
        session_id: str | None = _UNSET,  # type: ignore[assignment]
        impersonator: str | None = _UNSET,  # type: ignore[assignment]
        client_address: str | None = _UNSET,  # type: ignore[assignment]
        user_agent: str | None = _UNSET,  # type: ignore[assignment]
    ) -> None:
        if isinstance(actor, str):
            actor = Actor(id=actor)
        elif actor is not _UNSET and actor is not None and not isinstance(actor, Actor):
            raise AuditEventError("actor", f"must be an Actor or a string id, got {type(actor).__name__}")
        values = (actor, tenant, request_id, session_id, impersonator, client_address, user_agent)
        for name, value in zip(_FIELDS[1:], values[1:]):
            if value is not _UNSET and value is not None and type(value) is not str:
                raise AuditEventError(name, f"must be a string, got {type(value).__name__}")
        self._changes = values
        self._token: contextvars.Token[AuditContext] | None = None
        self.context = EMPTY_CONTEXT

    def __enter__(self) -> AuditContext:
        outer = _current.get()
        self.context = _make_context(
            [inherited if value is _UNSET else value for inherited, value in zip(outer, self._changes)]
        )
        self._token = _current.set(self.context)
        return self.context

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
