"""The otel-audit store: OTLP/HTTP receiver for audit records, SQLite or PostgreSQL storage, search API, API keys.

Start it with `otel-audit serve`; embed it with `create_app(open_storage(url))` under any ASGI server.
"""

from .app import ApiError, IngestHook, StoreApp, StoreSettings, create_app
from .events import Cursor, EventQuery, Page, QueryError, StoredEvent
from .keys import ApiKeyError, Authenticator, bootstrap_key, create_key
from .storage import ApiKey, Storage, StorageError, open_storage

__all__ = [
    "ApiError",
    "ApiKey",
    "ApiKeyError",
    "Authenticator",
    "Cursor",
    "EventQuery",
    "IngestHook",
    "Page",
    "QueryError",
    "Storage",
    "StorageError",
    "StoreApp",
    "StoreSettings",
    "StoredEvent",
    "bootstrap_key",
    "create_app",
    "create_key",
    "open_storage",
]
