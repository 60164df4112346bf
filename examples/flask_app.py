"""A Flask document API audited by otel-audit's WSGI middleware, with one service-layer event inside a request.

Run it:  flask --app examples/flask_app.py run      (exports to OTEL_AUDIT_ENDPOINT, default localhost:4318)
Try it:  curl -X DELETE -H 'Authorization: Bearer alice' localhost:5000/documents/7
         curl -X DELETE localhost:5000/documents/7   # 401: audited as `document.delete`, outcome denied
"""

from __future__ import annotations

from flask import Flask, abort, g, request

import otel_audit
from otel_audit.instrumentation.flask import instrument_flask

audit = otel_audit.get_audit_logger("examples.flask_app")
TOKENS = {"alice": "alice", "bob": "bob"}  # token -> user id; stands in for a real identity provider

app = Flask(__name__)


@app.before_request
def authenticate() -> None:
    """Sets g.user, which the audit integration reads as the actor (Flask-Login's current_user works as well)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    g.user = {"id": TOKENS[token]} if scheme.lower() == "bearer" and token in TOKENS else None


@app.delete("/documents/<int:document_id>")
def delete_document(document_id: int) -> dict[str, int]:
    if g.user is None:
        abort(401)
    # A service-layer event: it inherits actor, request id and client address from the request.
    audit.emit("search.unindex", resource=("document", str(document_id)))
    return {"deleted": document_id}


# Behind a reverse proxy on this host, X-Forwarded-For from 127.0.0.1 is trusted; from anyone else it is ignored.
instrument_flask(app, trusted_proxies=["127.0.0.1"])
