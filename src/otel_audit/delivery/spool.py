"""The durable spool: encoded audit records on local disk until the receiver acknowledges them.

Layout under `spool_dir`:

    w-<pid>-<random>/           one lane per writing process (flock-ed `lock` file while the process lives)
        seg-000000000001.log    append-only segment files of frames
        ack                     lines "<segment> <offset> <crc32>": everything before the last intact one was acknowledged
    corrupt/                    bytes that failed their checksum, moved aside (counted, never resent)
    dead-letter.jsonl           records the receiver rejected, with its reason (see deadletter.py)

A frame is `magic, kind, length, crc32` (10 bytes) and a payload; a record frame's payload is the scope number, the
emit time and the OTLP LogRecord bytes; a scope frame defines a scope number (resource + instrumentation scope) for
the rest of its segment, so every segment can be read on its own. Each append is stored at the segment's end before
emit returns, so a record is in the OS and survives a crash of the process: in `interval` mode with the compiled
writer, copied into the segment's memory mapping (the file is allocated a step ahead of the data, so a process that
dies leaves zero bytes after its last frame, which readers skip; rotation and close cut the file back to its data);
otherwise with one `pwrite`.

A lane belongs to exactly one process: a forked child closes what it inherited and opens a lane of its own, so
two processes never append to one segment and a child never resends its parent's records. A lane whose `lock` is
free belongs to a process that is gone; the next process to notice (at start and then periodically) adopts it,
replays it and removes it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import struct
import threading
import time
import weakref
import zlib
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from .. import stats
from .encoder import ScopeDef
from .errors import AuditDeliveryError

_log = logging.getLogger(__name__)

MAGIC = 0xA7
KIND_SCOPE = 1
KIND_RECORD = 2
HEADER = struct.Struct("<BBII")
RECORD_HEAD = struct.Struct("<IQ")
SCOPE_HEAD = struct.Struct("<I")
MAX_PAYLOAD = 64 << 20
_READ_CHUNK = 1 << 20
LANE_PREFIX = "w-"
_SEGMENT_NAME = "seg-{:012d}.log"
_UNKNOWN_SCOPE = ScopeDef(b"", b"")
# Records this process appended, kept until acknowledged (up to this many bytes) so the exporter sends them
# without reading them back: (segment, start, end, scope, record bytes, emit ns); start..end covers the whole write.
TAIL_MAX_BYTES = 8 << 20
ACK_LOG_MAX_BYTES = 16 << 10
_TailEntry = tuple[int, int, int, ScopeDef, bytes, int]


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One spool frame: header (magic, kind, length, checksum over kind and payload) then the payload."""
    return HEADER.pack(MAGIC, kind, len(payload), zlib.crc32(payload, kind)) + payload


def python_record_frame(magic: int, kind: int, scope_number: int, emit_ns: int, record: bytes) -> bytes:
    """A record frame (the payload is RECORD_HEAD then the record); `_wire.record_frame` writes the same bytes."""
    head = RECORD_HEAD.pack(scope_number, emit_ns)
    checksum = zlib.crc32(record, zlib.crc32(head, kind))  # = crc32(head + record): one copy, not two
    return b"".join((HEADER.pack(magic, kind, len(head) + len(record), checksum), head, record))


def released_write(fd: int, data: bytes, offset: int, position: int) -> int:
    """os.pwrite(fd, data[offset:], position), which hands the GIL to other threads while the kernel copies."""
    return os.pwrite(fd, data[offset:] if offset else data, position)


def write_failed(exc: OSError) -> AuditDeliveryError:
    """The error emit raises when the spool's write failed (the record is not recorded)."""
    return AuditDeliveryError(f"could not write the audit event to the spool: {exc}")


try:  # compiled (optional, see _wire.c): one call instead of three packs, two checksums and a join on every emit
    from ._wire import SpoolStage, SpoolWriter
    from ._wire import record_frame
    from ._wire import write_held as small_write
except ImportError:
    SpoolStage = None
    record_frame = python_record_frame
    small_write = released_write

    class SpoolWriter:  # type: ignore[no-redef]
        """Without the compiled writer: the writer state is plain attributes and every append is written."""

        def _map_segment(self) -> bool:
            return False

        def _unmap_segment(self, truncate: bool) -> None:
            return None

        def _allocate_ahead(self) -> tuple[int, int] | None:
            return None

        def _release_written(self) -> None:
            return None


@dataclass
class Batch:
    """Records read from the spool for one export, and where acknowledging them moves the lane's cursor."""

    entries: list[tuple[ScopeDef, bytes]]
    first_emit_ns: int
    lane: Lane | None = None
    segment: int = 0
    start: int = 0
    end: int = 0
    memory_count: int = 0  # records taken from memory (the memory queue's, or the spool's copy of its own)


@dataclass
class _Parsed:
    """What one pass over a segment produced."""

    records: list[tuple[ScopeDef, bytes, int]] = field(default_factory=list)
    consumed: int = 0


def _segment_number(name: str) -> int | None:
    if name.startswith("seg-") and name.endswith(".log"):
        try:
            return int(name[4:-4])
        except ValueError:
            return None
    return None


class Lane:
    """One writer directory (lane): its segments and acknowledgement cursor."""

    def __init__(self, spool: Spool, path: Path, lock_fd: int) -> None:
        self.spool = spool
        self.path = path
        self.lock_fd = lock_fd
        self.cursor_segment, self.cursor_offset = self._load_cursor()
        self.scopes: dict[int, dict[int, ScopeDef]] = {}
        self._read_fds: dict[int, int] = {}
        self._ack_fd = -1
        self._ack_size = 0

    def _load_cursor(self) -> tuple[int, int]:
        """The last intact line of the `ack` log (a line torn by a crash fails its checksum and is skipped)."""
        try:
            lines = (self.path / "ack").read_bytes().split(b"\n")[:-1]  # a last line without its newline is torn
        except OSError:
            return 0, 0
        for line in reversed(lines):
            fields = line.split()
            if len(fields) == 3 and fields[2] == b"%08x" % zlib.crc32(fields[0] + b" " + fields[1]):
                try:
                    return int(fields[0]), int(fields[1])
                except ValueError:
                    continue
        return 0, 0

    def _save_cursor(self) -> None:
        """Append the cursor to the `ack` log: one small write per batch (replacing a file per batch made the
        filesystem flush it every time); the log is rewritten, atomically, once it holds ACK_LOG_MAX_BYTES."""
        position = b"%d %d" % (self.cursor_segment, self.cursor_offset)
        line = b"%s %08x\n" % (position, zlib.crc32(position))
        if self._ack_fd < 0 or self._ack_size >= ACK_LOG_MAX_BYTES:
            self._rewrite_ack_log(line)
            return
        self._ack_size += os.write(self._ack_fd, line)

    def _rewrite_ack_log(self, line: bytes) -> None:
        temporary = self.path / "ack.tmp"
        temporary.write_bytes(line)
        os.replace(temporary, self.path / "ack")
        if self._ack_fd >= 0:
            os.close(self._ack_fd)
        self._ack_fd = os.open(self.path / "ack", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._ack_size = len(line)

    def segments(self) -> list[int]:
        numbers = (_segment_number(name) for name in os.listdir(self.path))
        return sorted(number for number in numbers if number is not None)

    def segment_path(self, number: int) -> Path:
        return self.path / _SEGMENT_NAME.format(number)

    def pending_bytes(self) -> int:
        """Bytes in segments at or after the cursor that are not yet acknowledged."""
        total = 0
        for number in self.segments():
            if number < self.cursor_segment:
                continue
            try:
                size = self.segment_path(number).stat().st_size
            except FileNotFoundError:
                continue
            total += size - (self.cursor_offset if number == self.cursor_segment else 0)
        return max(total, 0)

    def _fd(self, number: int) -> int:
        fd = self._read_fds.get(number)
        if fd is None:
            fd = self._read_fds[number] = os.open(self.segment_path(number), os.O_RDONLY)
        return fd

    def _release_segment(self, number: int) -> None:
        fd = self._read_fds.pop(number, None)
        if fd is not None:
            os.close(fd)
        self.scopes.pop(number, None)
        try:
            os.unlink(self.segment_path(number))
        except FileNotFoundError:
            pass

    def read(self, max_records: int, max_bytes: int) -> Batch | None:
        """Up to `max_records` records from the cursor on (within one segment); None when nothing is pending."""
        while True:
            writing, committed = self.spool._writing_position(self)
            if self.cursor_segment == writing:
                # This process's newest segment: nothing to list. (A directory listing hands the GIL over once
                # per entry, and in a busy process each hand-over costs the exporter a wait; see docs/delivery.md.)
                limit = committed
                if self.cursor_offset >= limit:
                    return None
            else:
                segments = self.segments()
                later = [number for number in segments if number > self.cursor_segment]
                if self.cursor_segment not in segments:
                    if not later:
                        return None
                    self.cursor_segment, self.cursor_offset = later[0], 0
                    continue
                limit = os.fstat(self._fd(self.cursor_segment)).st_size
                if self.cursor_offset >= limit:
                    if not later:
                        return None
                    self._release_segment(self.cursor_segment)
                    self.cursor_segment, self.cursor_offset = later[0], 0
                    self._save_cursor()
                    continue
            if self is self.spool._lane:
                remembered = self.spool._tail_batch(self, max_records, max_bytes)
                if remembered is not None:
                    return remembered
            scopes = self.scopes.get(self.cursor_segment)
            if scopes is None:
                scopes = self.scopes[self.cursor_segment] = self._scan_scopes(self.cursor_segment, self.cursor_offset)
            parsed = self._parse(self.cursor_segment, self.cursor_offset, limit, scopes, max_records, max_bytes)
            return Batch(
                entries=[(scope, data) for scope, data, _ in parsed.records],
                first_emit_ns=parsed.records[0][2] if parsed.records else 0,
                lane=self,
                segment=self.cursor_segment,
                start=self.cursor_offset,
                end=self.cursor_offset + parsed.consumed,
            )

    def _scan_scopes(self, number: int, upto: int) -> dict[int, ScopeDef]:
        """Scope definitions before `upto` (a cursor in the middle of a segment after a restart)."""
        scopes: dict[int, ScopeDef] = {}
        if upto:
            self._parse(number, 0, upto, scopes, 1 << 62, 1 << 62, records_wanted=False)
        return scopes

    def _parse(
        self,
        number: int,
        offset: int,
        limit: int,
        scopes: dict[int, ScopeDef],
        max_records: int,
        max_bytes: int,
        records_wanted: bool = True,
    ) -> _Parsed:
        """Frames in [offset, limit): scope frames update `scopes`, record frames are returned; a frame that fails
        its checks starts a corrupt region, skipped up to the next valid frame."""
        fd = self._fd(number)
        result = _Parsed()
        position = offset
        buffer, buffer_start = b"", offset
        payload_bytes = 0
        while position < limit and len(result.records) < max_records and payload_bytes < max_bytes:
            relative = position - buffer_start
            if relative + HEADER.size > len(buffer):
                buffer, buffer_start, relative = os.pread(fd, min(_READ_CHUNK, limit - position), position), position, 0
            valid = len(buffer) - relative >= HEADER.size
            if valid:
                magic, kind, length, checksum = HEADER.unpack_from(buffer, relative)
                valid = (
                    magic == MAGIC
                    and kind in (KIND_SCOPE, KIND_RECORD)
                    and position + HEADER.size + length <= limit
                )
            if valid:
                end = relative + HEADER.size + length
                if end > len(buffer):
                    size = min(max(_READ_CHUNK, HEADER.size + length), limit - position)
                    buffer, buffer_start, relative = os.pread(fd, size, position), position, 0
                    end = HEADER.size + length
                payload = buffer[relative + HEADER.size : end]
                valid = len(payload) == length and zlib.crc32(payload, kind) == checksum
            if valid and kind == KIND_SCOPE:
                try:
                    (scope_number,) = SCOPE_HEAD.unpack_from(payload)
                    scopes[scope_number] = ScopeDef.from_bytes(payload[SCOPE_HEAD.size :])
                except (ValueError, struct.error, UnicodeDecodeError):
                    valid = False
            if not valid:
                position += self._skip_corruption(number, position, limit, quarantine=records_wanted)
                continue
            if kind == KIND_RECORD and records_wanted:
                scope_number, emit_ns = RECORD_HEAD.unpack_from(payload)
                scope = scopes.get(scope_number)
                if scope is None:
                    _log.warning("otel-audit: spool record without its scope definition in %s", self.path)
                    scope = _UNKNOWN_SCOPE
                result.records.append((scope, payload[RECORD_HEAD.size :], emit_ns))
                payload_bytes += length
            position += HEADER.size + length
        result.consumed = position - offset
        return result

    def _skip_corruption(self, number: int, start: int, limit: int, *, quarantine: bool) -> int:
        """Length of the corrupt region at `start` (up to the next valid frame); its bytes are moved aside. Zero
        bytes that run to `limit` are not corrupt: they are the space a mapped writer allocated and did not fill
        before its process ended (a frame always starts with MAGIC)."""
        fd = self._fd(number)
        data = os.pread(fd, limit - start, start)
        probe = damaged = 1
        while True:
            probe = data.find(bytes((MAGIC,)), probe)
            if probe < 0 or probe + HEADER.size > len(data):
                probe = max(len(data), 1)
                damaged = len(data.rstrip(b"\0"))
                break
            _, kind, length, checksum = HEADER.unpack_from(data, probe)
            end = probe + HEADER.size + length
            if (
                kind in (KIND_SCOPE, KIND_RECORD)
                and end <= len(data)
                and zlib.crc32(data[probe + HEADER.size : end], kind) == checksum
            ):
                damaged = probe
                break
            probe += 1
        if quarantine and damaged:
            self.spool._quarantine(self, number, start, data[:damaged])
        return probe

    def ack(self, batch: Batch) -> None:
        self.cursor_segment, self.cursor_offset = batch.segment, batch.end
        self._save_cursor()

    def close_readers(self) -> None:
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        if self._ack_fd >= 0:
            os.close(self._ack_fd)
            self._ack_fd = -1

    def remove(self) -> None:
        """Delete a fully acknowledged lane (files, directory) and release its lock."""
        self.close_readers()
        for name in os.listdir(self.path):
            if name != "lock":
                os.unlink(self.path / name)
        os.unlink(self.path / "lock")
        os.rmdir(self.path)
        os.close(self.lock_fd)


_spools: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for spool in list(_spools):
        spool._reopen_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Spool(SpoolWriter):
    """Append-only segments of encoded records with checksums, acknowledgement, replay and a size bound.

    With `_wire` compiled, the writer state lives in SpoolWriter's C fields and `append_log` (encode, frame and
    write in one call) takes the common case of `append`; `append` stays the reference and takes the rest.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        fsync: str = "interval",
        full_policy: str = "block",
        full_timeout: float = 5.0,
        segment_bytes: int | None = None,
    ) -> None:
        self.root = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        # A page-cache append takes about a microsecond: cheaper with the GIL held than handed over and won back.
        # A synchronous write (`always`) waits for the disk, so it lets other threads run meanwhile.
        self._write = released_write if fsync == "always" else small_write
        self._release_gil = fsync == "always"  # the same choice for append_log
        self.full_policy = full_policy
        self.full_timeout = full_timeout
        self.segment_bytes = segment_bytes or min(64 << 20, max(4096, max_bytes // 8))
        self.emitted = 0
        self._tail_max = TAIL_MAX_BYTES
        self.corrupt_bytes = 0
        self.corrupt_regions = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._orphans: list[Lane] = []
        self._orphan_bytes = 0
        self._closed = False
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._open_lane()
        self.adopt_orphans()
        _spools.add(self)
        stats.STATS.register_source(self._counters)

    # -- writer side -----------------------------------------------------------------------------------------

    def _open_lane(self) -> None:
        """Create this process's lane: made under a hidden name, locked, then renamed so no one adopts it."""
        self._pid = os.getpid()
        name = f"{LANE_PREFIX}{self._pid}-{secrets.token_hex(4)}"
        hidden = self.root / f".{name}"
        hidden.mkdir(mode=0o700)
        lock_fd = os.open(hidden / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, self.root / name)
        self._lane = Lane(self, self.root / name, lock_fd)
        self._lane.cursor_segment = 1
        self._segment = 0
        self._segment_fd = -1
        self._segment_size = 0
        self._segment_scopes: set[int] = set()
        self._dirty = False
        self._unacked = 0
        self._tail: deque[_TailEntry] = deque()
        self._tail_bytes = 0
        self._open_segment(1)

    def _open_segment(self, number: int) -> None:
        if self._segment_fd >= 0:
            self._unmap_segment(True)
            os.close(self._segment_fd)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC  # read too: a shared writable mapping needs it
        if self.fsync == "always":
            flags |= os.O_DSYNC
        self._segment_fd = os.open(self._lane.segment_path(number), flags, 0o600)
        self._segment = number
        self._segment_size = os.fstat(self._segment_fd).st_size
        self._segment_scopes = set()
        if self.fsync != "always":
            self._map_segment()
        else:  # written with O_DSYNC, each record on the disk before emit returns, so the new name must be too
            directory_fd = os.open(self._lane.path, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)

    def append(self, scope_number: int, scope: ScopeDef, record: bytes, emit_ns: int) -> None:
        """Persist one encoded record (in the OS before returning; on disk too when fsync is `always`).

        Raises AuditDeliveryError when the spool is full past its policy or the write fails.
        """
        frame = record_frame(MAGIC, KIND_RECORD, scope_number, emit_ns, record)
        with self._lock:
            if self._closed:
                raise AuditDeliveryError("the audit spool is shut down; the event was not recorded")
            if scope_number not in self._segment_scopes:
                frame = encode_frame(KIND_SCOPE, SCOPE_HEAD.pack(scope_number) + scope.to_bytes()) + frame
            if self._unacked + self._orphan_bytes + len(frame) > self.max_bytes:
                self._wait_for_room(len(frame))
            if self._segment_size >= self.segment_bytes:
                self._open_segment(self._segment + 1)
                frame = encode_frame(KIND_SCOPE, SCOPE_HEAD.pack(scope_number) + scope.to_bytes()) + frame[
                    -HEADER.size - RECORD_HEAD.size - len(record) :
                ]
            written = 0
            write = self._write
            try:
                while written < len(frame):
                    written += write(self._segment_fd, frame, written, self._segment_size + written)
            except OSError as exc:
                raise write_failed(exc) from exc
            finally:
                self._segment_size += written
                self._unacked += written
                self._dirty = True
            self._segment_scopes.add(scope_number)
            self.emitted += 1
            self._tail.append((self._segment, self._segment_size - written, self._segment_size, scope, record, emit_ns))
            self._tail_bytes += written
            while self._tail_bytes > self._tail_max:
                self._tail_bytes -= self._tail[0][2] - self._tail[0][1]
                self._tail.popleft()

    def _wait_for_room(self, size: int) -> None:
        if self.full_policy == "raise":
            self._reject_full(size)
        deadline = time.monotonic() + self.full_timeout
        while self._unacked + self._orphan_bytes + size > self.max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._reject_full(size)
            self._cond.wait(remaining)

    def _reject_full(self, size: int) -> None:
        stats.STATS.increment("rejected_full")
        raise AuditDeliveryError(
            f"audit spool full ({self._unacked + self._orphan_bytes} of max_spool_bytes={self.max_bytes} bytes unacknowledged, "
            f"policy {self.full_policy!r}); the event was not recorded"
        )

    def prepare_room(self) -> None:
        """Allocate and fault in the mapped segment's next step ahead of the writer (the exporter thread calls this
        whenever it wakes), so an emit rarely allocates, or takes a page fault, itself."""
        with self._cond:
            room = self._allocate_ahead()
        if room is not None:
            self._populate(*room)

    def sync(self) -> None:
        """fsync what was appended since the last call (the `interval` policy calls this once per flush_interval).
        The mapped pages the writer has passed are unmapped first, so writing them back costs no TLB flushes."""
        with self._cond:
            self._release_written()
            fd, dirty = self._segment_fd, self._dirty
            self._dirty = False
        if dirty and fd >= 0:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise

    def _reopen_after_fork(self) -> None:
        """In a forked child: forget the parent's lanes and descriptors and start a lane of our own."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._unmap_segment(False)  # the parent still writes that segment: leave its file as it is
        for fd in (self._segment_fd, self._lane.lock_fd):
            if fd >= 0:
                os.close(fd)
        self._segment_fd = -1
        self._lane.close_readers()
        for orphan in self._orphans:
            orphan.close_readers()
            os.close(orphan.lock_fd)
        self._orphans = []
        self._orphan_bytes = 0
        self.emitted = 0
        if not self._closed:
            self._open_lane()

    # -- reader side (the exporter thread) -------------------------------------------------------------------

    def _writing_position(self, lane: Lane) -> tuple[int | None, int]:
        """The segment this process appends to in `lane` and how far the reader may read it (whole frames only)."""
        if lane is self._lane:
            with self._cond:
                return self._segment, self._segment_size
        return None, 0

    def adopt_orphans(self) -> int:
        """Take over lanes of processes that are gone (their lock is free); returns how many were adopted."""
        adopted = 0
        known = {lane.path.name for lane in self._orphans} | {self._lane.path.name}
        for entry in sorted(os.listdir(self.root)):
            if entry.startswith("." + LANE_PREFIX):
                self._remove_unborn_lane(self.root / entry)
                continue
            if not entry.startswith(LANE_PREFIX) or entry in known:
                continue
            path = self.root / entry
            try:
                lock_fd = os.open(path / "lock", os.O_RDWR | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock_fd)
                continue
            if not path.exists():
                os.close(lock_fd)
                continue
            lane = Lane(self, path, lock_fd)
            pending = lane.pending_bytes()
            with self._cond:
                self._orphans.append(lane)
                self._orphan_bytes += pending
            adopted += 1
            _log.info("otel-audit: replaying %d spooled bytes left by %s", pending, entry)
        return adopted

    @staticmethod
    def _remove_unborn_lane(path: Path) -> None:
        """A hidden lane left by a process that died while creating it (it never held a record)."""
        try:
            lock_fd = os.open(path / "lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            lock_fd = -1
        except NotADirectoryError:
            return
        try:
            if lock_fd >= 0:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for name in os.listdir(path):
                os.unlink(path / name)
            os.rmdir(path)
        except OSError:
            pass  # being created right now by a live process, or already gone
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)

    def _trim_tail(self, segment: int, offset: int) -> None:
        """Forget remembered records before (segment, offset): they are acknowledged. Call with the lock held."""
        tail = self._tail
        while tail and (tail[0][0] < segment or (tail[0][0] == segment and tail[0][2] <= offset)):
            self._tail_bytes -= tail[0][2] - tail[0][1]
            tail.popleft()

    def _forget_sent(self, batch: Batch) -> None:
        """Drop an acknowledged batch's records from memory: when they are still the first ones remembered (the
        usual case), without comparing each; else by position. Call with the lock held."""
        tail, count = self._tail, batch.memory_count
        if count and len(tail) >= count and tail[0][1] == batch.start and tail[count - 1][2] == batch.end and (
            tail[0][0] == batch.segment
        ):
            for _ in range(count):
                tail.popleft()
            self._tail_bytes -= batch.end - batch.start
        else:
            self._trim_tail(batch.segment, batch.end)

    def _tail_batch(self, lane: Lane, max_records: int, max_bytes: int) -> Batch | None:
        """The next batch from the records this process appended and still remembers, when they start exactly at
        the lane's cursor: what was just written need not be read back and parsed. None: read the segment."""
        segment, offset = lane.cursor_segment, lane.cursor_offset
        with self._cond:
            self._trim_tail(segment, offset)
            tail = self._tail
            if not tail or tail[0][0] != segment or tail[0][1] != offset:
                return None
            taken = list(islice(tail, max_records))
        if taken[-1][0] != segment or taken[-1][2] - offset > max_bytes:
            # the batch would cross into the next segment or past max_bytes (entries of a segment are contiguous,
            # so otherwise neither needs checking entry by entry): cut it where the first one happens
            cut: list[_TailEntry] = []
            size = 0
            for entry in taken:
                if entry[0] != segment or size >= max_bytes:
                    break
                cut.append(entry)
                size += entry[2] - entry[1]
            taken = cut
        return Batch(
            entries=[(entry[3], entry[4]) for entry in taken],
            first_emit_ns=taken[0][5],
            lane=lane,
            segment=segment,
            start=offset,
            end=taken[-1][2],
            memory_count=len(taken),
        )

    def read_batch(self, max_records: int, max_bytes: int = 4 << 20) -> Batch | None:
        """The next records to export: lanes of dead processes first (they are older), then this process's."""
        for lane in list(self._orphans):
            batch = lane.read(max_records, max_bytes)
            if batch is None:
                lane.remove()
                with self._cond:
                    self._orphans.remove(lane)
                    if not self._orphans:
                        self._orphan_bytes = 0
                continue
            return batch
        return self._lane.read(max_records, max_bytes)

    def ack(self, batch: Batch) -> None:
        """The receiver has the batch (or it was dead-lettered): release its bytes."""
        lane = batch.lane
        assert lane is not None
        lane.ack(batch)
        with self._cond:
            if lane is self._lane:
                self._unacked = max(0, self._unacked - (batch.end - batch.start))
                self._forget_sent(batch)
            else:
                self._orphan_bytes = max(0, self._orphan_bytes - (batch.end - batch.start))
            self._cond.notify_all()

    def _quarantine(self, lane: Lane, segment: int, offset: int, data: bytes) -> None:
        corrupt = self.root / "corrupt"
        corrupt.mkdir(exist_ok=True, mode=0o700)
        target = corrupt / f"{lane.path.name}-{segment:012d}-{offset}.bin"
        with open(target, "wb") as handle:
            handle.write(data)
        with self._cond:
            self.corrupt_bytes += len(data)
            self.corrupt_regions += 1
        stats.report_loss(
            "corrupt_bytes", len(data), f"corrupt spool bytes in {lane.path.name} segment {segment} moved to {target}"
        )

    def pending_bytes(self) -> int:
        with self._cond:
            return self._unacked + self._orphan_bytes

    def has_pending(self) -> bool:
        with self._cond:
            if self._lane.cursor_segment != self._segment or self._lane.cursor_offset < self._segment_size:
                return True
        return bool(self._orphans)

    def _counters(self) -> dict[str, float]:
        return {"emitted": self.emitted, "spool_bytes": self.pending_bytes()}

    def close(self) -> None:
        """Stop appending (later appends raise); the reader may still drain what is there."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._unmap_segment(True)  # nothing to do when no segment is open (nothing is mapped then)
            fd, self._segment_fd = self._segment_fd, -1
            self._cond.notify_all()
        if fd >= 0:
            os.fsync(fd)
            os.close(fd)

    def release(self) -> None:
        """After the reader stopped: remove this lane if all of it was acknowledged, else unlock it for replay."""
        self.close()
        _spools.discard(self)
        if os.getpid() != self._pid:
            return
        with self._cond:
            lanes, self._orphans = [self._lane, *self._orphans], []
            empty = self._lane.cursor_segment == self._segment and self._lane.cursor_offset >= self._segment_size
        for lane in lanes:
            if lane is self._lane and empty:
                lane.remove()
            else:
                lane.close_readers()
                os.close(lane.lock_fd)
