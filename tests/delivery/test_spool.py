"""The spool on disk: replay after a restart, torn and corrupt bytes, lanes, acknowledgement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otel_audit import stats
from otel_audit.delivery.encoder import ScopeDef
from otel_audit.delivery.spool import HEADER, MAGIC, SpoolStage
from otel_audit.testing import OTLPReceiver

from .conftest import free_port, wait_until


def lanes(spool_dir: Path) -> list[Path]:
    return sorted(path for path in spool_dir.iterdir() if path.name.startswith("w-"))


def spool_records_without_receiver(make_pipeline, count: int, **attributes) -> tuple[Path, int]:
    """Emit `count` records while nothing listens, shut down (they stay spooled); returns the lane and the port."""
    port = free_port()
    pipeline = make_pipeline(endpoint=f"http://127.0.0.1:{port}/v1/logs", shutdown_timeout=0.5)
    for _ in range(count):
        pipeline.emit(**attributes)
    pipeline.shutdown()
    (lane,) = lanes(Path(pipeline.settings.spool_dir))
    return lane, port


def test_unacknowledged_records_are_replayed_by_the_next_process(receiver, make_pipeline, spool_dir) -> None:
    lane, _ = spool_records_without_receiver(make_pipeline, 50)
    assert (lane / "lock").exists() and list(lane.glob("seg-*.log"))
    pipeline = make_pipeline(endpoint=receiver.endpoint)
    assert pipeline.processor.force_flush(20_000)
    assert [record.attributes["seq"] for record in receiver.records] == list(range(1, 51))
    assert [record.attributes["log.record.uid"] for record in receiver.records] == [f"uid-{n}" for n in range(1, 51)]
    assert receiver.records[0].resource["service.name"] == "delivery-test"
    assert not lane.exists()  # replayed, acknowledged, removed


def test_acknowledged_records_are_not_sent_again(receiver, make_pipeline, spool_dir) -> None:
    first = make_pipeline(endpoint=receiver.endpoint)
    for _ in range(20):
        first.emit()
    assert first.processor.force_flush(20_000)
    first.shutdown()
    second = make_pipeline(endpoint=receiver.endpoint)
    second.emit()
    assert second.processor.force_flush(20_000)
    assert len(receiver.records) == 21


def test_segments_rotate_and_are_released_after_acknowledgement(receiver, make_pipeline, spool_dir) -> None:
    pipeline = make_pipeline(endpoint=f"http://127.0.0.1:{free_port()}/v1/logs", max_spool_bytes=1 << 20)
    pipeline.processor._source.segment_bytes = 4096
    for _ in range(200):
        pipeline.emit(text="z" * 100)
    (lane,) = lanes(spool_dir)
    assert len(list(lane.glob("seg-*.log"))) > 3
    pipeline.shutdown()
    replay = make_pipeline(endpoint=receiver.endpoint)
    assert replay.processor.force_flush(20_000)
    assert [record.attributes["seq"] for record in receiver.records] == list(range(1, 201))
    assert not lane.exists()


def test_torn_tail_and_flipped_bytes_keep_the_surrounding_records(receiver, make_pipeline, spool_dir) -> None:
    lane, _ = spool_records_without_receiver(make_pipeline, 30)
    (segment,) = lane.glob("seg-*.log")
    data = bytearray(segment.read_bytes())
    position = last = 0
    while position < len(data):
        last = position
        position += HEADER.size + HEADER.unpack_from(data, position)[2]
    assert data[last] == MAGIC
    damaged = data.index(b"uid-10")
    data[damaged + 4] ^= 0xFF  # "uid-10" -> a different byte: that frame's checksum no longer matches
    data[damaged + 2] ^= 0x01
    torn = bytes(data[last : last + HEADER.size + 7])  # a crash mid-write: header and the start of a payload
    segment.write_bytes(bytes(data) + torn)
    before = stats.delivery_stats()["corrupt_bytes"]

    pipeline = make_pipeline(endpoint=receiver.endpoint)
    assert pipeline.processor.force_flush(20_000)
    assert [record.attributes["seq"] for record in receiver.records] == [n for n in range(1, 31) if n != 10]
    moved = sorted((spool_dir / "corrupt").iterdir())
    assert len(moved) == 2
    assert torn.rstrip(b"\0") in [path.read_bytes() for path in moved]  # zeros at the very end: see below
    corrupt = stats.delivery_stats()["corrupt_bytes"] - before
    assert corrupt == sum(path.stat().st_size for path in moved)


@pytest.mark.parametrize("torn_frame", [False, True])
def test_a_zero_tail_left_by_a_mapped_writer_that_died_is_not_corruption(
    receiver, make_pipeline, spool_dir, torn_frame: bool
) -> None:
    """A process that dies while its segment is mapped leaves the rest of the allocated step as zero bytes, after
    its last frame or after a frame the crash tore: the records before are delivered, a torn frame's bytes are moved
    aside, the zeros are neither sent nor counted as corrupt."""
    lane, _ = spool_records_without_receiver(make_pipeline, 30)
    (segment,) = lane.glob("seg-*.log")
    data = segment.read_bytes()
    torn = data[: HEADER.size + 9].rstrip(b"\0") if torn_frame else b""  # a header and the start of a payload
    segment.write_bytes(data + torn + bytes(300_000))
    before = stats.delivery_stats()["corrupt_bytes"]

    pipeline = make_pipeline(endpoint=receiver.endpoint)
    assert pipeline.processor.force_flush(20_000)
    assert [record.attributes["seq"] for record in receiver.records] == list(range(1, 31))
    moved = sorted((spool_dir / "corrupt").glob("*")) if (spool_dir / "corrupt").exists() else []
    assert [path.read_bytes() for path in moved] == ([torn] if torn_frame else [])
    assert stats.delivery_stats()["corrupt_bytes"] - before == len(torn)
    assert not lane.exists()


def append_records(spool, count: int) -> None:
    """Append `count` records the way the delivery processor does: the compiled append, else the reference one."""
    scope = ScopeDef(b"\x0a\x01r", b"\x0a\x01s")
    for number in range(count):
        attributes = {"audit.action": "x.y", "seq": number, "text": "t" * (number % 9 * 60)}
        pending = spool.append_parts(1, scope, number, number, 9, "INFO", attributes, "audit.x.y", 0, 0, 0)
        if pending is not True:
            spool.append(1, scope, pending, number)


@pytest.mark.skipif(SpoolStage is None, reason="the mapped writer is compiled (_wire)")
def test_a_mapped_segment_is_allocated_ahead_and_cut_back_to_its_data(tmp_path, make_spool) -> None:
    """In `interval` mode appends are copied into the mapped segment, whose file is allocated a step ahead of the
    data; rotation and close cut each file back to exactly its frames."""
    spool = make_spool(tmp_path, max_bytes=1 << 24, segment_bytes=16 << 10)
    append_records(spool, 20)
    assert spool._lane.segment_path(spool._segment).stat().st_size > spool._segment_size  # room past the data
    append_records(spool, 280)
    spool.close()
    lane = spool._lane
    assert len(lane.segments()) > 3
    records = 0
    for number in lane.segments():
        size = lane.segment_path(number).stat().st_size
        parsed = lane._parse(number, 0, size, {}, 1 << 30, 1 << 30)
        assert parsed.consumed == size > 0  # whole frames, and nothing after them
        records += len(parsed.records)
    assert records == 300
    assert not (tmp_path / "corrupt").exists()


@pytest.mark.skipif(SpoolStage is None, reason="the mapped writer is compiled (_wire)")
def test_a_forked_child_leaves_the_parents_mapped_segment_alone(tmp_path, make_spool) -> None:
    """The child unmaps what it inherited without cutting the file: the parent goes on storing into its mapping
    (a cut file would end the parent with SIGBUS) and loses nothing."""
    spool = make_spool(tmp_path, max_bytes=1 << 24)
    append_records(spool, 20)
    segment = spool._lane.segment_path(spool._segment)
    allocated = segment.stat().st_size
    assert allocated > spool._segment_size
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the spool's at-fork handler has run in the child by now
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert segment.stat().st_size == allocated
    append_records(spool, 20)
    spool.close()
    parsed = spool._lane._parse(spool._segment, 0, segment.stat().st_size, {}, 1 << 30, 1 << 30)
    assert [emit_ns for _, _, emit_ns in parsed.records] == list(range(20)) * 2


MAP_STEP = 256 << 10  # _wire.c's step of allocation ahead of a mapped writer


@pytest.mark.skipif(SpoolStage is None, reason="the mapped writer is compiled (_wire)")
def test_room_is_prepared_a_step_ahead_of_the_writer_and_no_further(tmp_path, make_spool) -> None:
    spool = make_spool(tmp_path, max_bytes=1 << 24, segment_bytes=4 << 20)
    append_records(spool, 5)
    segment = spool._lane.segment_path(spool._segment)
    assert segment.stat().st_size - spool._segment_size < MAP_STEP  # the writer allocated its first step itself
    spool.prepare_room()
    prepared = segment.stat().st_size
    assert prepared - spool._segment_size >= MAP_STEP
    spool.prepare_room()
    assert segment.stat().st_size == prepared  # a step is left ahead: nothing more
    append_records(spool, 600)  # into the prepared room and past it
    spool.close()
    spool.prepare_room()  # closed: nothing to prepare
    size = segment.stat().st_size
    parsed = spool._lane._parse(spool._segment, 0, size, {}, 1 << 30, 1 << 30)
    assert len(parsed.records) == 605 and parsed.consumed == size


@pytest.mark.skipif(SpoolStage is None, reason="the mapped writer is compiled (_wire)")
def test_the_exporter_prepares_room_when_it_wakes(receiver, make_pipeline, spool_dir) -> None:
    pipeline = make_pipeline(endpoint=receiver.endpoint, flush_interval=30)
    spool = pipeline.processor._source
    append_records(spool, 3)
    pipeline.processor._appended()
    assert pipeline.processor.force_flush(20_000)
    segment = spool._lane.segment_path(spool._segment)
    assert wait_until(lambda: segment.stat().st_size - spool._segment_size >= MAP_STEP, 10)


def mapped_file_offsets(path: Path) -> list[int]:
    """The file offsets at which this process's mappings of `path` start (from /proc/self/maps)."""
    offsets = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            offsets.append(int(fields[2], 16))
    return offsets


@pytest.mark.skipif(SpoolStage is None, reason="the mapped writer is compiled (_wire)")
def test_sync_unmaps_the_pages_the_writer_has_passed_and_loses_nothing(tmp_path, make_spool) -> None:
    """Before fdatasync the writer's passed pages leave the mapping (writing back a mapped page costs a TLB
    flush on every CPU running the process); the writer goes on storing after them, through rotations."""
    spool = make_spool(tmp_path, max_bytes=1 << 24, segment_bytes=64 << 10)
    append_records(spool, 60)
    segment = spool._lane.segment_path(spool._segment).resolve()
    assert mapped_file_offsets(segment) == [0]
    spool.sync()
    page = os.sysconf("SC_PAGE_SIZE")
    (start,) = mapped_file_offsets(segment)
    assert start == spool._segment_size // page * page > 0
    append_records(spool, 40)
    spool.sync()
    spool.prepare_room()
    assert mapped_file_offsets(segment)[0] > start
    append_records(spool, 300)  # past the rotation size: a partly released mapping is dropped whole
    spool.sync()
    spool.close()
    lane = spool._lane
    assert len(lane.segments()) > 2
    assert all(not mapped_file_offsets(lane.segment_path(number).resolve()) for number in lane.segments())
    emitted = []
    for number in lane.segments():
        size = lane.segment_path(number).stat().st_size
        parsed = lane._parse(number, 0, size, {}, 1 << 30, 1 << 30)
        assert parsed.consumed == size
        emitted += [emit_ns for _, _, emit_ns in parsed.records]
    assert emitted == list(range(60)) + list(range(40)) + list(range(300))


@pytest.mark.skipif(SpoolStage is None, reason="the mapped writer is compiled (_wire)")
def test_strict_mode_writes_each_record_without_allocating_ahead(tmp_path, make_spool) -> None:
    spool = make_spool(tmp_path, max_bytes=1 << 24, fsync="always")
    append_records(spool, 5)
    assert spool._lane.segment_path(spool._segment).stat().st_size == spool._segment_size


def test_lane_of_a_live_process_is_not_adopted(make_pipeline, spool_dir) -> None:
    port = free_port()
    first = make_pipeline(endpoint=f"http://127.0.0.1:{port}/v1/logs")
    first.emit()
    second = make_pipeline(endpoint=f"http://127.0.0.1:{port}/v1/logs")
    assert second.processor._source.adopt_orphans() == 0
    assert len(lanes(spool_dir)) == 2


def test_a_lane_left_half_created_is_cleaned_up(make_pipeline, spool_dir) -> None:
    spool_dir.mkdir(parents=True)
    unborn = spool_dir / ".w-999999-deadbeef"
    unborn.mkdir()
    (unborn / "lock").write_bytes(b"")
    make_pipeline(endpoint=f"http://127.0.0.1:{free_port()}/v1/logs")
    assert not unborn.exists()


def test_unusable_spool_dir_is_a_configuration_error_naming_it(tmp_path) -> None:
    import otel_audit
    from otel_audit.config import ConfigurationError

    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(ConfigurationError, match="spool_dir"):
        otel_audit.configure(endpoint="http://127.0.0.1:9/v1/logs", spool_dir=str(not_a_directory / "spool"))


def test_records_beyond_the_memory_copy_are_read_back_from_disk_in_order(make_pipeline, spool_dir, monkeypatch) -> None:
    """The exporter sends what it still remembers from memory and the rest from the segment: all of it, once, in
    order, whichever way each record came."""
    monkeypatch.setattr("otel_audit.delivery.spool.TAIL_MAX_BYTES", 4096)
    port = free_port()
    pipeline = make_pipeline(endpoint=f"http://127.0.0.1:{port}/v1/logs", retry_initial=0.05, retry_max=0.1)
    for _ in range(300):  # far more than 4 KiB: the oldest records are only on disk
        pipeline.emit(text="y" * 40)
    spool = pipeline.processor._source
    assert 0 < len(spool._tail) < 300
    assert spool._tail[0][2] - spool._tail[0][1] < 4096
    with OTLPReceiver(port=port) as late:
        assert pipeline.processor.force_flush(20_000)
        assert [record.attributes["seq"] for record in late.records] == list(range(1, 301))
    assert not spool._tail  # acknowledged: nothing kept


def test_the_ack_log_resumes_from_its_last_intact_line(tmp_path) -> None:
    """The cursor is appended per batch; after a crash a torn or damaged last line is skipped, never trusted."""
    import zlib
    from types import SimpleNamespace

    from otel_audit.delivery.spool import Lane

    def line(segment: int, offset: int) -> bytes:
        position = b"%d %d" % (segment, offset)
        return b"%s %08x\n" % (position, zlib.crc32(position))

    lane = SimpleNamespace(path=tmp_path)
    (tmp_path / "ack").write_bytes(line(1, 100) + line(1, 250) + line(2, 40)[:-3])  # torn: no newline
    assert Lane._load_cursor(lane) == (1, 250)
    (tmp_path / "ack").write_bytes(line(1, 100) + line(1, 250).replace(b"250", b"950"))  # damaged: bad checksum
    assert Lane._load_cursor(lane) == (1, 100)
    (tmp_path / "ack").write_bytes(b"")
    assert Lane._load_cursor(lane) == (0, 0)

