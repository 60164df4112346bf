"""Tenants and API keys: creation, hashing, and authentication of presented keys.

Keys are 256-bit random secrets, so a single SHA-256 is the right hash: it is preimage-resistant and there is
nothing to brute-force (slow password hashes like scrypt/argon2 exist for low-entropy human passwords, and would
cost milliseconds on every ingest request). Stored hashes are compared with hmac.compare_digest. Lookups are
cached briefly so ingest does not hit the database per request; a revoked key stops working within `cache_ttl`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable

from .storage import SCOPES, ApiKey, Storage

KEY_PREFIX = "oak_"
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ApiKeyError(ValueError):
    """A key request is invalid (tenant id, scopes, name); the message names the field."""


def hash_key(secret: str) -> str:
    """Hex SHA-256 of a key's secret (what the database keeps)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check_tenant(tenant_id: str) -> str:
    """A tenant id: 1-128 characters, letters, digits, `.`, `_`, `-`, starting with a letter or digit."""
    if not isinstance(tenant_id, str) or not _TENANT_RE.match(tenant_id):
        raise ApiKeyError(f"tenant: must be 1-128 characters of letters, digits, '.', '_' or '-', got {str(tenant_id)[:64]!r}")
    return tenant_id


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Known scopes, deduplicated in canonical order; an unknown or empty list raises ApiKeyError."""
    requested = {scope.strip() for scope in scopes if scope.strip()}
    unknown = sorted(requested - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"scopes: unknown scope {unknown[0]!r} (allowed: {', '.join(SCOPES)})")
    if not requested:
        raise ApiKeyError(f"scopes: at least one of {', '.join(SCOPES)} is required")
    return tuple(scope for scope in SCOPES if scope in requested)


def create_key(storage: Storage, tenant_id: str, scopes: Iterable[str], name: str = "") -> tuple[ApiKey, str]:
    """Create a key for a tenant; returns the record and the secret (shown once, never stored)."""
    if len(name) > 200 or "\x00" in name:
        raise ApiKeyError("name: at most 200 characters, no NUL")
    key = ApiKey(
        key_id="key_" + secrets.token_hex(8),
        tenant_id=check_tenant(tenant_id),
        scopes=check_scopes(scopes),
        name=name,
        created_unix_nano=time.time_ns(),
    )
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    storage.put_key(key, hash_key(secret))
    return key, secret


def bootstrap_key(storage: Storage, secret: str, tenant_id: str, scopes: Iterable[str] = SCOPES) -> ApiKey:
    """Register a caller-chosen secret (`serve --dev-key`) for a tenant; idempotent for the same secret."""
    if len(secret) < 8:
        raise ApiKeyError("dev key: the secret must be at least 8 characters")
    digest = hash_key(secret)
    key = ApiKey(
        key_id="dev_" + digest[:12],
        tenant_id=check_tenant(tenant_id),
        scopes=check_scopes(scopes),
        name="dev key (serve --dev-key)",
        created_unix_nano=time.time_ns(),
    )
    storage.put_key(key, digest)
    return key


class Authenticator:
    """Resolve a presented secret to its active ApiKey (or None), with a short positive/negative cache."""

    def __init__(self, storage: Storage, cache_ttl: float = 5.0, max_cached: int = 10_000) -> None:
        self.storage = storage
        self.cache_ttl = cache_ttl
        self.max_cached = max_cached
        self._cache: dict[str, tuple[float, ApiKey | None, str]] = {}
        self._lock = threading.Lock()

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key whose hash matches `secret`, compared in constant time; None if unknown or revoked."""
        digest = hash_key(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is None or cached[0] < now:
            found = self.storage.key_by_hash(digest)
            key, stored_hash = found if found else (None, "0" * 64)
            cached = (now + self.cache_ttl, key, stored_hash)
            with self._lock:
                if len(self._cache) >= self.max_cached:
                    self._cache.clear()
                self._cache[digest] = cached
        _, key, stored_hash = cached
        if not hmac.compare_digest(stored_hash, digest) or key is None or key.revoked_unix_nano is not None:
            return None
        return key

    def forget(self) -> None:
        """Drop cached lookups (after revoking a key in this process)."""
        with self._lock:
            self._cache.clear()
