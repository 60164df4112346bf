"""A FastAPI app with no audit code at all: `opentelemetry-instrument uvicorn zero_code_app:app` audits it."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/documents/{document_id}/archive")
def archive(document_id: str) -> dict[str, str]:
    return {"archived": document_id}


@app.get("/admin")
def admin() -> dict[str, str]:
    raise HTTPException(status_code=403, detail="admins only")


@app.post("/probe/{name}")
def probe(name: str) -> dict[str, str]:
    """Emits a service-layer event itself, so a test can tell when everything before it was delivered."""
    import otel_audit

    otel_audit.get_audit_logger("zero_code_app").emit("probe.ping", metadata={"name": name})
    return {"probe": name}
