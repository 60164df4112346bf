"""Who is acting, for which tenant, in which request: ambient audit context on contextvars.

`audit_context(...)` nests (inner values override outer ones, unset values are inherited), follows `await`,
and is isolated between concurrent tasks and threads, exactly like OpenTelemetry's own context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from .model import Actor, AuditEventError

_UNSET = object()


@dataclass(frozen=True, slots=True)
class AuditContext:
    """The ambient values an event inherits when emit() is not given them."""

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


@contextmanager
def audit_context(
    *,
    actor: Actor | str | None = _UNSET,  # type: ignore[assignment]
    tenant: str | None = _UNSET,  # type: ignore[assignment]
    request_id: str | None = _UNSET,  # type: ignore[assignment]
    session_id: str | None = _UNSET,  # type: ignore[assignment]
    impersonator: str | None = _UNSET,  # type: ignore[assignment]
    client_address: str | None = _UNSET,  # type: ignore[assignment]
    user_agent: str | None = _UNSET,  # type: ignore[assignment]
) -> Iterator[AuditContext]:
    """Set audit context for the block; a string actor means Actor(id=...). Pass None to clear an inherited value."""
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("actor", Actor(id=actor) if isinstance(actor, str) else actor),
            ("tenant_id", tenant),
            ("request_id", request_id),
            ("session_id", session_id),
            ("impersonator_id", impersonator),
            ("client_address", client_address),
            ("user_agent", user_agent),
        )
        if value is not _UNSET
    }
    for name, value in changes.items():
        if name == "actor":
            if value is not None and not isinstance(value, Actor):
                raise AuditEventError("actor", f"must be an Actor or a string id, got {type(value).__name__}")
        elif value is not None and not isinstance(value, str):
            raise AuditEventError(name, f"must be a string, got {type(value).__name__}")
    new_context = replace(_current.get(), **changes)
    token = _current.set(new_context)
    try:
        yield new_context
    finally:
        _current.reset(token)
