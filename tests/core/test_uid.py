"""log.record.uid: UUIDv7 ids from the compiled generator and from its pure-Python reference."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest

from otel_audit import logger

try:
    from otel_audit._uid import new_uid as compiled_new_uid
except ImportError:  # built without a C compiler: only the reference is here
    compiled_new_uid = None

GENERATORS = {"python": logger.python_new_uid, "compiled": compiled_new_uid}


@pytest.fixture(params=sorted(GENERATORS))
def new_uid(request: pytest.FixtureRequest) -> Callable[[], str]:
    generator = GENERATORS[request.param]
    if generator is None:
        pytest.skip("the _uid extension is not built here")
    return generator


def test_the_logger_uses_the_compiled_generator_when_it_is_built() -> None:
    assert logger.new_uid is (compiled_new_uid or logger.python_new_uid)


def test_ids_are_uuid7_with_the_current_millisecond(new_uid: Callable[[], str]) -> None:
    before = time.time_ns() // 1_000_000
    text = new_uid()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(text)
    assert str(parsed) == text and len(text) == 36
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_are_unique_and_ordered_by_millisecond(new_uid: Callable[[], str]) -> None:
    ids = [new_uid() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    millis = [uuid.UUID(text).int >> 80 for text in ids]
    assert millis == sorted(millis)
    # the 74 random bits vary: no bit position is stuck across the sample
    randoms = [uuid.UUID(text).int & ((1 << 76) - 1) for text in ids[:2000]]  # rand_a (75..64), rand_b (61..0)
    assert all(any(value >> bit & 1 for value in randoms) for bit in [*range(62), *range(64, 76)])


def test_a_forked_child_never_repeats_its_parent(new_uid: Callable[[], str]) -> None:
    new_uid()  # the parent's generator is in use before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its ids and exits at once
        os.close(read)
        with os.fdopen(write, "w") as out:
            out.write("\n".join(new_uid() for _ in range(1000)))
        os._exit(0)
    os.close(write)
    parent = {new_uid() for _ in range(1000)}
    with os.fdopen(read) as source:
        child = set(source.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 1000
    assert not parent & child
