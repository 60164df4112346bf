"""The SQLite store's ingest journal: accepted batches, durable before ingest answers, indexed later in bulk.

Writing a batch into the indexed `events` table costs index pages, and each commit writes every page it touched
(twice with the checkpoint): small commits write the same pages again and again. So each process of a store
appends the batches it accepts to a file of its own in `<db>-ingest.d/` (one write and one fdatasync a batch),
and the storage's merger moves journaled batches into `events` many at a time. How far each file is merged is
stored in the database in the same transaction as the events, so a batch is indexed exactly once even when a
process dies between the two. Any process may merge any file (the merge lock makes them take turns): one whose
owner died, or a batch a read needs now.

A file is active while its process holds an flock on it; a process starts a new file once its file passes
ROTATE_BYTES, and one that is inactive and merged to its end is deleted. A file is created under a temporary
name and renamed once locked, so no merger ever sees an active file unlocked.

Record: magic, payload length, CRC-32 of the payload, event count (little-endian), then the payload: the
tenant's length (2 bytes) and UTF-8 text, and the rows (EVENT_COLUMNS order) as orjson. A record that is not
whole yet (an append in progress, or one a crash cut short, never acknowledged) ends what a merger reads of a
file; bytes that are whole but fail their check, in a file no process writes, are moved aside and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

_log = logging.getLogger(__name__)

SUFFIX = ".journal"
# A process starts a new file once its file passes this size (the merged one is then deleted).
ROTATE_BYTES = 64 * 1024 * 1024
_HEAD = struct.Struct("<4sIII")
_MAGIC = b"OAJ1"
_TENANT = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One accepted batch: the file and byte range holding it, its tenant and number of events. `kept` is what
    the process that appended it keeps in memory until it is merged (given to `append`; a merger there takes
    the batch from it), `payload` the record's bytes when a merger read it from the file instead."""

    file: str
    offset: int
    end: int
    tenant_id: str
    events: int
    payload: bytes | None = None
    kept: Any = field(default=None, compare=False, repr=False)

    def rows(self) -> list[list[Any]]:
        """The batch's event rows (EVENT_COLUMNS order), decoded from the payload read from the file."""
        assert self.payload is not None, "rows of a batch journaled by this process are kept in memory"
        (tenant_length,) = _TENANT.unpack_from(self.payload)
        rows: list[list[Any]] = orjson.loads(self.payload[_TENANT.size + tenant_length :])
        return rows


def encode_record(tenant_id: str, events: int, rows_json: bytes) -> bytes:
    """A journal record of one batch of `events` events whose rows are `rows_json` (orjson)."""
    tenant = tenant_id.encode("utf-8")
    payload = _TENANT.pack(len(tenant)) + tenant + rows_json
    return _HEAD.pack(_MAGIC, len(payload), zlib.crc32(payload), events) + payload


@dataclass(frozen=True, slots=True)
class FileRead:
    """What a merger read of one file: its whole records from where it started, and, for a file no process
    appends to any more, `finished_at`: where the bytes end that are not whole records (a record a crash cut
    short, never acknowledged) or not records at all (damaged), so the file is done once merged to there."""

    entries: list[JournalEntry]
    finished_at: int | None = None
    skipped: list[tuple[int, int]] = field(default_factory=list)


def read_records(path: str, offset: int, max_events: int, active: bool) -> FileRead:
    """The whole records of file `path` from `offset`, as many as fit in `max_events` (at least one). A record
    still being written ends what an active file gives. In an inactive one, damaged bytes followed by whole
    records are skipped (`skipped`: their byte ranges) and its tail of anything else sets `finished_at`."""
    name = os.path.basename(path)
    read = FileRead([])
    total = 0
    with open(path, "rb") as file:
        file.seek(offset)
        while True:
            head = file.read(_HEAD.size)
            magic, length, crc, events = _HEAD.unpack(head) if len(head) == _HEAD.size else (b"", 0, 0, 0)
            payload = file.read(length) if magic == _MAGIC else b""
            tenant_id = _tenant_of(payload) if magic == _MAGIC and len(payload) == length and zlib.crc32(payload) == crc else None
            if tenant_id is None:
                if active or not head:
                    return read
                file.seek(offset)
                rest = file.read()
                resume = _next_record(rest, 1)
                if resume is None:
                    return FileRead(read.entries, offset, read.skipped)
                read.skipped.append((offset, offset + resume))
                offset += resume
                file.seek(offset)
                continue
            if read.entries and total + events > max_events:
                return read
            end = offset + _HEAD.size + length
            read.entries.append(JournalEntry(name, offset, end, tenant_id, events, payload))
            total += events
            offset = end


def _tenant_of(payload: bytes) -> str | None:
    """The tenant a record's payload names, or None when the payload cannot be a record's."""
    if len(payload) < _TENANT.size:
        return None
    (tenant_length,) = _TENANT.unpack_from(payload)
    try:
        return payload[_TENANT.size : _TENANT.size + tenant_length].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _record_at(data: bytes, at: int) -> bool:
    """Whether an intact record starts at `at` of `data`."""
    if len(data) - at < _HEAD.size:
        return False
    magic, length, crc, _ = _HEAD.unpack_from(data, at)
    payload = data[at + _HEAD.size : at + _HEAD.size + length]
    return magic == _MAGIC and len(payload) == length and zlib.crc32(payload) == crc and _tenant_of(payload) is not None


def _next_record(data: bytes, at: int) -> int | None:
    """Where the next intact record starts at or after `at` (after damaged bytes), or None."""
    while (at := data.find(_MAGIC, at)) >= 0:
        if _record_at(data, at):
            return at
        at += 1
    return None


class MergeLock:
    """Held through a whole merge, announcements included, by one thread of one process of the store at a time
    (a re-entrant thread lock and an flock on `path`). A read that settles takes it too, so it also waits for
    another process's merge in flight until that process's listeners (the ingest hooks) have run."""

    def __init__(self, path: str, timeout: float) -> None:
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                self._lock_file()
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def _lock_file(self) -> None:
        """flock, waiting up to `timeout` (as SQLite's busy timeout does), then OperationalError (the app: 503)."""
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("another process of the store holds the merge lock") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def close(self) -> None:
        os.close(self._fd)


class IngestJournal:
    """This process's journal file in `directory` (created on the first append), and reading and deleting the
    files of every process of the store."""

    def __init__(self, directory: str, *, merge_lock_path: str, busy_timeout: float = 30.0) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.merge_lock = MergeLock(merge_lock_path, busy_timeout)
        self._lock = threading.Lock()
        self._fd = -1
        self._name = ""
        self._size = 0
        # The batches this process appended and no merge has taken yet, by file: a merger here takes them from
        # memory instead of reading them back (kept until a merge finds them merged).
        self._appended: dict[str, list[JournalEntry]] = {}
        # Inactive files whose tail is not whole records: where that tail starts (see FileRead.finished_at).
        self._finished_at: dict[str, int] = {}

    @property
    def own_file(self) -> str:
        """The name of the file this process appends to ("" before its first append)."""
        return self._name

    def append(self, tenant_id: str, rows: Sequence[Sequence[Any]], kept: Any = None) -> JournalEntry:
        """Store one batch durably (written and synced); where it is. `kept` comes back with the entry when a
        merger of this process takes the batch. A failed write or sync raises sqlite3.OperationalError and
        leaves the file (the batch was not accepted; the next append starts a new file)."""
        return self.append_encoded(tenant_id, len(rows), orjson.dumps(rows), kept)

    def append_encoded(self, tenant_id: str, events: int, rows_json: bytes, kept: Any = None) -> JournalEntry:
        """`append` of rows already encoded (orjson)."""
        record = encode_record(tenant_id, events, rows_json)
        with self._lock:
            if self._fd < 0 or self._size >= ROTATE_BYTES:
                self._start_file()
            offset = self._size
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fdatasync(self._fd)
            except OSError as exc:
                self._abandon_file(offset)
                # the storage's error for "not now" (the app answers 503 + Retry-After; exporters retry)
                raise sqlite3.OperationalError(f"cannot write the ingest journal: {exc}") from exc
            self._size += len(record)
            entry = JournalEntry(self._name, offset, self._size, tenant_id, events, kept=kept)
            self._appended.setdefault(self._name, []).append(entry)
            return entry

    def _start_file(self) -> None:
        """A new file, locked before it gets the name mergers look for (the previous one becomes inactive)."""
        if self._fd >= 0:
            os.close(self._fd)  # releases its flock: once merged to its end, a merger deletes it
            self._fd = -1
        for attempt in range(3):
            name = f"{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
            temporary = os.path.join(self.directory, f".{name}.new")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(temporary, os.path.join(self.directory, name))
                _sync_directory(self.directory)
            except FileNotFoundError:
                os.close(fd)  # a merger took it, unlocked, for one a process died creating: start another
                if attempt == 2:
                    raise
                continue
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._name, self._size = fd, name, 0
            return

    def _abandon_file(self, whole_up_to: int) -> None:
        """After a failed append: cut the partial record off if the file allows, and stop appending to it (a tail
        it kept is where the file ends for mergers)."""
        try:
            os.ftruncate(self._fd, whole_up_to)
        except OSError:
            pass
        os.close(self._fd)
        self._fd, self._name = -1, ""

    def sizes(self) -> dict[str, int]:
        """Every journal file's size in bytes, by name."""
        sizes = {}
        for name in os.listdir(self.directory):
            if name.endswith(SUFFIX) and not name.startswith("."):
                try:
                    sizes[name] = os.stat(os.path.join(self.directory, name)).st_size
                except FileNotFoundError:
                    continue  # deleted by another process's merger meanwhile
        return sizes

    def held(self) -> int:
        """How many batches this process keeps in memory for a merge (see `kept`)."""
        with self._lock:
            return sum(len(appended) for appended in self._appended.values())

    def unmerged(self, merged: Mapping[str, int]) -> bool:
        """Whether any file holds batches beyond `merged` (how far each is merged; absent: not at all)."""
        return any(merged.get(name, 0) < self._finished_at.get(name, size) for name, size in self.sizes().items())

    def entries(self, merged: Mapping[str, int], max_events: int) -> list[JournalEntry]:
        """The batches after `merged` in every file, as many as fit in `max_events` (at least one when there is
        any): this process's own from memory, first; the others read from their files."""
        entries: list[JournalEntry] = []
        total = 0
        with self._lock:
            own = {name: [entry for entry in appended if entry.offset >= merged.get(name, 0)]
                   for name, appended in self._appended.items()}
            self._appended = {name: appended for name, appended in own.items() if appended}
        for appended in own.values():
            for entry in appended:
                if entries and total + entry.events > max_events:
                    return entries
                entries.append(entry)
                total += entry.events
        for name, size in sorted(self.sizes().items()):
            start = merged.get(name, 0)
            if name in own or start >= self._finished_at.get(name, size):
                continue
            if entries and total >= max_events:
                break
            try:
                read = read_records(os.path.join(self.directory, name), start, max(max_events - total, 1),
                                    self._is_active(name))
            except FileNotFoundError:
                continue
            for first, end in read.skipped:
                _log.error("otel-audit store: ingest journal %s: bytes %d-%d are damaged and are skipped (the "
                           "batches they held are lost)", name, first, end)
            if read.finished_at is not None:
                self._finished_at[name] = read.finished_at
                _log.warning("otel-audit store: ingest journal %s ends in %d bytes that are not a whole batch (an "
                             "append cut short, never acknowledged, or damage); merged up to them", name,
                             size - read.finished_at)
            entries += read.entries
            total += sum(entry.events for entry in read.entries)
        return entries

    def _is_active(self, name: str) -> bool:
        """Whether a process still appends to file `name` (this one, or one holding its flock)."""
        if name == self._name:
            return True
        try:
            fd = os.open(os.path.join(self.directory, name), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the lock just taken
        return False

    def release(self, merged: Mapping[str, int]) -> list[str]:
        """Delete the files no process appends to any more that are merged to their end (or to where their
        last whole batch ends); their names. A file a process died creating (still under its temporary name,
        so empty) goes too."""
        for name in os.listdir(self.directory):
            if name.startswith(".") and name.endswith(".new") and not self._is_active(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, name))
        deleted = []
        for name, size in self.sizes().items():
            done = merged.get(name, 0) >= min(size, self._finished_at.get(name, size))
            if done and name != self._name and not self._is_active(name):
                try:
                    os.remove(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass
                self._finished_at.pop(name, None)
                deleted.append(name)
        return deleted

    def close_file(self) -> None:
        """Stop appending (the file becomes inactive; a merger deletes it once it is merged)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._name = ""

    def close(self) -> None:
        self.close_file()
        self.merge_lock.close()


def _sync_directory(directory: str) -> None:
    """fsync a directory, so a file created or renamed in it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def legacy_batches(path: str, after: int) -> list[tuple[int, str, int, bytes]]:
    """(id, tenant, events, rows as orjson) of the batches above id `after` in an ingest journal of the earlier
    format (a SQLite file holding a `batches` table), oldest first."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        tables = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batches'").fetchone()
        if tables is None:
            return []
        return [(entry_id, tenant_id, events, bytes(rows)) for entry_id, tenant_id, events, rows in conn.execute(
            "SELECT id, tenant_id, events, rows FROM batches WHERE id > ? ORDER BY id", (after,))]
    finally:
        conn.close()
