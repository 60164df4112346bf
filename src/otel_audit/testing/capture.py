"""In-memory capture of audit records at the end of the real processor chain, with assertion helpers."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from .. import semconv
from ..model import AuditEvent

# Keyword aliases accepted by find()/assert_emitted(), mapped onto attribute names.
ALIASES = {
    "action": semconv.AUDIT_ACTION,
    "outcome": semconv.AUDIT_OUTCOME,
    "actor_id": semconv.USER_ID,
    "actor_type": semconv.AUDIT_ACTOR_TYPE,
    "actor_email": semconv.USER_EMAIL,
    "resource_type": semconv.AUDIT_RESOURCE_TYPE,
    "resource_id": semconv.AUDIT_RESOURCE_ID,
    "tenant_id": semconv.AUDIT_TENANT_ID,
    "request_id": semconv.AUDIT_REQUEST_ID,
    "session_id": semconv.SESSION_ID,
    "client_address": semconv.CLIENT_ADDRESS,
    "error_type": semconv.ERROR_TYPE,
    "reason": semconv.AUDIT_REASON,
    "http_route": semconv.HTTP_ROUTE,
    "http_status_code": semconv.HTTP_RESPONSE_STATUS_CODE,
}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class AuditCapture(LogRecordProcessor):
    """A delivery stage that keeps records in memory: `configure(delivery_processor=AuditCapture())`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[ReadWriteLogRecord] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        with self._lock:
            self._records.append(log_record)

    def shutdown(self) -> None:
        """Nothing to release: captured records stay readable after shutdown."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def records(self) -> list[ReadWriteLogRecord]:
        """The captured SDK records, in emit order."""
        with self._lock:
            return list(self._records)

    @property
    def attributes(self) -> list[dict[str, Any]]:
        """Each captured record's attributes as plain data."""
        return [_plain(dict(record.log_record.attributes or {})) for record in self.records]

    @property
    def events(self) -> list[AuditEvent]:
        """Each captured record read back as an AuditEvent (the store's direction of the mapping)."""
        return [semconv.attributes_to_event(attributes) for attributes in self.attributes]

    def __len__(self) -> int:
        return len(self.records)

    def find(self, attributes: Mapping[str, Any] | None = None, **expected: Any) -> list[dict[str, Any]]:
        """Attribute dicts of the records matching every expectation (aliases such as actor_id or raw names)."""
        wanted = {ALIASES.get(key, key): value for key, value in expected.items()}
        wanted.update(attributes or {})
        wanted = {key: value.value if hasattr(value, "value") and key == semconv.AUDIT_OUTCOME else value
                  for key, value in wanted.items()}
        return [found for found in self.attributes if all(found.get(key) == value for key, value in wanted.items())]

    def assert_emitted(self, attributes: Mapping[str, Any] | None = None, *, count: int | None = None, **expected: Any) -> dict[str, Any]:
        """Assert that a matching audit record was emitted (exactly `count` of them if given); return the first."""
        matches = self.find(attributes, **expected)
        if not matches or (count is not None and len(matches) != count):
            seen = "\n".join(f"  {attrs}" for attrs in self.attributes) or "  (none)"
            wanted = dict(expected, **(attributes or {}))
            how_many = f"{count} record(s)" if count is not None else "a record"
            raise AssertionError(f"expected {how_many} matching {wanted}, found {len(matches)}; emitted:\n{seen}")
        return matches[0]

    def assert_not_emitted(self, attributes: Mapping[str, Any] | None = None, **expected: Any) -> None:
        """Assert that no matching audit record was emitted."""
        matches = self.find(attributes, **expected)
        if matches:
            raise AssertionError(f"expected no record matching {dict(expected, **(attributes or {}))}, found {matches}")
