"""The action() block and the audited() decorator record success, failure (re-raised) and resource ids."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from otel_audit import AuditEventError, get_audit_logger

audit = get_audit_logger("tests.actions")


class QuotaExceeded(Exception):
    pass


def test_block_success_with_metadata_and_late_resource_id(audit_events) -> None:
    with audit.action("document.create", resource="document", actor="alice") as block:
        block.add_metadata(title_length=12)
        block.set_resource_id("doc-7")
    attributes = audit_events.assert_emitted(action="document.create", outcome="success", resource_id="doc-7")
    assert attributes["audit.metadata"] == {"title_length": 12}
    assert block.uid == attributes["log.record.uid"]


def test_block_failure_records_error_and_reraises_unchanged(audit_events) -> None:
    error = QuotaExceeded("quota of 10 documents reached")
    with pytest.raises(QuotaExceeded) as raised:
        with audit.action("document.create", resource=("document", "doc-8")):
            raise error
    assert raised.value is error
    audit_events.assert_emitted(
        action="document.create",
        outcome="failure",
        resource_id="doc-8",
        error_type=f"{__name__}.QuotaExceeded",
        reason="quota of 10 documents reached",
    )


def test_block_builtin_exception_type_and_set_outcome(audit_events) -> None:
    with pytest.raises(KeyError):
        with audit.action("cache.read"):
            raise KeyError("k")
    with audit.action("document.delete", resource=("document", "d1")) as block:
        block.set_outcome("denied", reason="not the owner")
    audit_events.assert_emitted(action="cache.read", outcome="failure", error_type="KeyError")
    audit_events.assert_emitted(action="document.delete", outcome="denied", reason="not the owner")


def test_outcome_set_before_raising_stands(audit_events) -> None:
    with pytest.raises(PermissionError):
        with audit.action("document.share", resource=("document", "d2")) as block:
            block.set_outcome("denied", reason="only the owner may share")
            raise PermissionError("d2")
    audit_events.assert_emitted(
        action="document.share", outcome="denied", error_type="PermissionError", reason="only the owner may share"
    )


def test_async_block(audit_events) -> None:
    async def work() -> None:
        async with audit.action("export.run") as block:
            await asyncio.sleep(0)
            block.add_metadata(rows=3)
        with pytest.raises(RuntimeError):
            async with audit.action("export.run"):
                raise RuntimeError("disk full")

    asyncio.run(work())
    audit_events.assert_emitted(action="export.run", outcome="success")
    audit_events.assert_emitted(action="export.run", outcome="failure", error_type="RuntimeError")


def test_cancellation_is_unknown_not_failure(audit_events) -> None:
    async def work() -> None:
        async with audit.action("report.build"):
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(work())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    audit_events.assert_emitted(action="report.build", outcome="unknown", error_type="asyncio.exceptions.CancelledError")


@dataclass
class Document:
    id: int
    title: str


@audit.audited("document.update", resource_type="document", resource_id="document_id")
def update_document(document_id: str, title: str) -> None:
    if not title:
        raise ValueError("title must not be empty")


@audit.audited("document.create", resource_type="document", resource_id_from_result="id")
def create_document(title: str) -> Document:
    return Document(id=41, title=title)


@audit.audited("document.share", resource_type="document", resource_id=lambda doc, **_: doc.id)
async def share_document(doc: Document, with_user: str) -> str:
    await asyncio.sleep(0)
    if with_user == "mallory":
        raise PermissionError("blocked user")
    return "ok"


def test_decorator_resource_id_from_argument(audit_events) -> None:
    update_document("doc-1", title="New")
    with pytest.raises(ValueError):
        update_document(document_id="doc-2", title="")
    audit_events.assert_emitted(action="document.update", outcome="success", resource_id="doc-1")
    audit_events.assert_emitted(action="document.update", outcome="failure", resource_id="doc-2", error_type="ValueError")


def test_decorator_resource_id_from_result(audit_events) -> None:
    document = create_document("Plan")
    assert document.title == "Plan"
    audit_events.assert_emitted(action="document.create", resource_type="document", resource_id="41")


def test_async_decorator_with_callable_id(audit_events) -> None:
    assert asyncio.run(share_document(Document(5, "x"), with_user="bob")) == "ok"
    with pytest.raises(PermissionError):
        asyncio.run(share_document(Document(6, "y"), with_user="mallory"))
    audit_events.assert_emitted(action="document.share", outcome="success", resource_id="5")
    audit_events.assert_emitted(action="document.share", outcome="failure", resource_id="6", error_type="PermissionError")
    assert share_document.__name__ == "share_document"


def test_decorator_naming_a_missing_parameter_is_an_error(audit_events) -> None:
    @audit.audited("x.y", resource_type="thing", resource_id="nope")
    def f(a: int) -> int:
        return a

    with pytest.raises(AuditEventError, match="resource_id"):
        f(1)
