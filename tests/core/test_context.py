"""audit_context follows await, nests, and never bleeds between concurrent tasks or threads."""

from __future__ import annotations

import asyncio
import random
import threading

from otel_audit import Actor, audit_context, get_audit_logger


def test_nested_blocks_override_and_restore(audit_events) -> None:
    logger = get_audit_logger()
    with audit_context(actor="alice", tenant="acme", request_id="r1"):
        with audit_context(tenant="globex", session_id="s1"):
            logger.emit("report.view")
        logger.emit("report.export")
        with audit_context(request_id=None):
            logger.emit("report.delete")
    logger.emit("system.tick")
    inner, outer, cleared, bare = audit_events.attributes
    assert (inner["user.id"], inner["audit.tenant.id"], inner["session.id"], inner["audit.request.id"]) == (
        "alice", "globex", "s1", "r1")
    assert (outer["audit.tenant.id"], "session.id" in outer) == ("acme", False)
    assert "audit.request.id" not in cleared and cleared["user.id"] == "alice"
    assert "user.id" not in bare and "audit.tenant.id" not in bare


def test_explicit_arguments_win_over_context(audit_events) -> None:
    with audit_context(actor=Actor(id="alice"), tenant="acme", client_address="10.0.0.1"):
        get_audit_logger().emit("user.update", actor="root", tenant="other", client_address="192.0.2.1")
    audit_events.assert_emitted(actor_id="root", tenant_id="other", client_address="192.0.2.1")


def test_impersonation_from_context(audit_events) -> None:
    with audit_context(actor="customer-9", impersonator="support-1"):
        get_audit_logger().emit("account.view")
    audit_events.assert_emitted({"audit.actor.impersonator.id": "support-1"}, actor_id="customer-9")


def test_hundred_concurrent_tasks_keep_their_own_context(audit_events) -> None:
    logger = get_audit_logger()

    async def request(index: int) -> None:
        with audit_context(actor=f"user-{index}", tenant=f"tenant-{index % 7}", request_id=f"req-{index}"):
            for step in range(3):
                await asyncio.sleep(random.random() / 500)
                logger.emit("step.run", metadata={"index": index, "step": step})

    async def main() -> None:
        await asyncio.gather(*(request(index) for index in range(100)))

    asyncio.run(main())
    assert len(audit_events) == 300
    for attributes in audit_events.attributes:
        index = attributes["audit.metadata"]["index"]
        assert attributes["user.id"] == f"user-{index}"
        assert attributes["audit.tenant.id"] == f"tenant-{index % 7}"
        assert attributes["audit.request.id"] == f"req-{index}"


def test_threads_keep_their_own_context(audit_events) -> None:
    logger = get_audit_logger()
    barrier = threading.Barrier(16)

    def work(index: int) -> None:
        with audit_context(actor=f"worker-{index}"):
            barrier.wait(timeout=10)
            for _ in range(5):
                logger.emit("job.run", metadata={"index": index})

    threads = [threading.Thread(target=work, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(audit_events) == 80
    assert all(a["user.id"] == f"worker-{a['audit.metadata']['index']}" for a in audit_events.attributes)
