"""Dead-letter file: records the receiver rejected as invalid, kept with its reason instead of going nowhere.

One JSON object per line (`dead-letter.jsonl` in the spool directory): the reason and HTTP status, the record's
uid and event name for search, and the exact OTLP bytes (base64) of the record, its resource and its scope, so
a record can be inspected, fixed and re-sent.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as ProtoLogRecord

from .. import semconv, stats
from .encoder import ScopeDef


def _describe(record: bytes) -> tuple[str | None, str]:
    message = ProtoLogRecord()
    try:
        message.ParseFromString(record)
    except Exception:  # noqa: BLE001 - a record we cannot parse is still written, undescribed
        return None, ""
    uid = next((kv.value.string_value for kv in message.attributes if kv.key == semconv.LOG_RECORD_UID), None)
    return uid, message.event_name


class DeadLetterFile:
    """Append-only JSON lines, fsynced, owner-readable only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(
        self,
        entries: Sequence[tuple[ScopeDef, bytes]],
        *,
        reason: str,
        status: int,
        rejected: int | None = None,
    ) -> None:
        """Keep `entries` with the receiver's `reason`; `rejected` is the receiver's count when it named no records."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat()
        lines = []
        for scope, record in entries:
            uid, event_name = _describe(record)
            line = {
                "time": now,
                "reason": reason,
                "status": status,
                "uid": uid,
                "event_name": event_name,
                "record": base64.b64encode(record).decode(),
                "resource": base64.b64encode(scope.resource).decode(),
                "scope": base64.b64encode(scope.scope).decode(),
            }
            if rejected is not None:
                line["rejected_in_request"] = rejected
                line["records_in_request"] = len(entries)
            lines.append(json.dumps(line, separators=(",", ":")) + "\n")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, "".join(lines).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        count = rejected if rejected is not None else len(entries)
        stats.report_loss("dead_lettered", count, f"{reason} (HTTP {status}); kept in {self.path}")


def read_dead_letters(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Every entry of a dead-letter file (for tools and tests)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
