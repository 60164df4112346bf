"""The seed's document-sharing service, written with otel-audit: emit, the action block and the decorator.

Run `python examples/demo.py` to see it export to a real receiver; import `DocumentService` to use it elsewhere.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace

from otel_audit import Actor, Resource, audit_context, changes, get_audit_logger

audit = get_audit_logger("examples.document_service")


class AccessDenied(Exception):
    """The acting user may not do this to the document."""


@dataclass(frozen=True)
class Document:
    id: str
    owner: str
    title: str
    shared_with: frozenset[str] = field(default_factory=frozenset)


class DocumentService:
    """An in-memory document store whose every state change is audited."""

    def __init__(self) -> None:
        self._documents: dict[str, Document] = {}
        self._passwords = {"alice": "correct horse", "bob": "battery staple"}

    def login(self, user_id: str, password: str) -> bool:
        """Plain emit(): one event per attempt, failure with a reason (never the password)."""
        ok = self._passwords.get(user_id) == password
        audit.emit(
            "user.login",
            actor=Actor(id=user_id),
            outcome="success" if ok else "failure",
            reason=None if ok else "invalid credentials",
        )
        return ok

    @audit.audited("document.create", resource_type="document", resource_id_from_result="id")
    def create(self, owner: str, title: str) -> Document:
        """The decorator: the resource id comes from the result once the document exists."""
        document = Document(id=f"doc_{secrets.token_hex(4)}", owner=owner, title=title)
        self._documents[document.id] = document
        return document

    def share(self, user_id: str, document_id: str, with_user: str) -> Document:
        """The action block: success on exit, `denied` when the check fails, failure if anything raises."""
        with audit.action("document.share", resource=("document", document_id)) as block:
            document = self._documents[document_id]
            if document.owner != user_id:
                block.set_outcome("denied", reason="only the owner may share")
                raise AccessDenied(document_id)
            updated = replace(document, shared_with=document.shared_with | {with_user})
            block.changes = changes({"shared_with": sorted(document.shared_with)}, {"shared_with": sorted(updated.shared_with)})
            block.add_metadata(permission="view")
            self._documents[document_id] = updated
            return updated

    def rename(self, user_id: str, document_id: str, title: str) -> Document:
        """emit() with changes computed by otel_audit.changes()."""
        before = self._documents[document_id]
        after = replace(before, title=title)
        self._documents[document_id] = after
        audit.emit(
            "document.update",
            resource=Resource("document", document_id, name=title),
            changes=changes(before, after, fields=["title"]),
        )
        return after


def run_sample_traffic(service: DocumentService) -> None:
    """The traffic the demo drives: logins (some failing), creation, sharing, a denied share, a rename."""
    for attempt in range(5):
        service.login("mallory", f"guess-{attempt}")
    service.login("alice", "correct horse")
    with audit_context(actor=Actor(id="alice", email="alice@example.com", roles=["editor"]), tenant="acme",
                       client_address="198.51.100.4", request_id="req-1"):
        document = service.create("alice", "Q3 plan")
        service.share("alice", document.id, "bob")
        service.rename("alice", document.id, "Q3 plan (final)")
    with audit_context(actor="bob", tenant="acme", request_id="req-2"):
        try:
            service.share("bob", document.id, "eve")
        except AccessDenied:
            pass
