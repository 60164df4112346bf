"""A FastAPI document API audited by otel-audit's middleware, with one service-layer event inside a request.

Run it:  uvicorn --app-dir examples fastapi_app:app   (exports to OTEL_AUDIT_ENDPOINT, default localhost:4318)
Try it:  curl -X POST -H 'Authorization: Bearer alice' -H 'X-Tenant: acme' localhost:8000/documents/d-1/share
         curl localhost:8000/documents/d-1        # 401 on GET: audited as `document.read`, outcome denied

Zero-code alternative: drop the instrument_app() call and run `opentelemetry-instrument uvicorn ...`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware

import otel_audit
from otel_audit.instrumentation.fastapi import instrument_app

audit = otel_audit.get_audit_logger("examples.fastapi_app")
TOKENS = {"alice": "alice", "bob": "bob"}  # token -> user id; stands in for a real identity provider


class BearerTokens(AuthenticationBackend):
    """`Authorization: Bearer <token>` -> scope["user"], which the audit middleware reads as the actor."""

    async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser] | None:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in TOKENS:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(TOKENS[token])


def tenant_of(scope: dict[str, Any]) -> str | None:
    """The tenant from the X-Tenant header (a real app would take it from the verified token)."""
    for name, value in scope["headers"]:
        if name == b"x-tenant":
            return value.decode("latin-1")
    return None


app = FastAPI(title="audited documents")


@app.get("/documents/{document_id}")
async def read_document(document_id: str, request: Request) -> dict[str, str]:
    if not request.user.is_authenticated:
        raise HTTPException(status_code=401, detail="login required")
    return {"id": document_id}


@app.post("/documents/{document_id}/share")
async def share_document(document_id: str, request: Request) -> dict[str, str]:
    if not request.user.is_authenticated:
        raise HTTPException(status_code=401, detail="login required")
    # A service-layer event: it inherits actor, tenant, request id and client address from the request.
    with audit.action("notification.send", resource=("document", document_id)) as block:
        block.add_metadata(channel="email")
    return {"shared": document_id}


instrument_app(app, tenant_resolver=tenant_of, excluded_urls=["^/health"])
app.add_middleware(AuthenticationMiddleware, backend=BearerTokens())
