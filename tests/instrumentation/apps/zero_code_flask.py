"""A Flask app with no audit code at all: `opentelemetry-instrument gunicorn zero_code_flask:app` audits it."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/documents/<document_id>")
def update_document(document_id: str) -> dict[str, str]:
    return {"id": document_id}
