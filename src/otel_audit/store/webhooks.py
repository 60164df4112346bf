"""Webhooks of the store: per-tenant registry, SSRF guard, signed deliveries from a queue table with backoff.

Deliveries are rows of `webhook_deliveries`, written in the same transaction as the alert that caused them, so
they survive restarts. A background thread (`DeliveryWorker`) claims due rows (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so several store processes share the queue), posts them, and records status, attempts and the last
error. A claim pushes the row's next attempt time forward by a lease, so a process that dies mid-delivery leaves
the row to be retried by another. Ingest only ever writes rows: a slow or dead webhook never slows it.

Destinations are checked when a webhook is created and again before every attempt: the host is resolved and
loopback, private, link-local (cloud metadata 169.254.169.254), unspecified, multicast and reserved addresses are
refused unless the host is allowlisted; the request then goes to the address that was checked (no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import secrets as _secrets
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from .. import webhook_signature
from .storage import Storage

_log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
MAX_ERROR_LENGTH = 500
USER_AGENT = "otel-audit-webhooks/1"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MIGRATIONS: list[list[str]] = [[
    """CREATE TABLE webhooks (
        webhook_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        url TEXT NOT NULL,
        description TEXT NOT NULL,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_expires_unix_nano BIGINT,
        created_unix_nano BIGINT NOT NULL,
        updated_unix_nano BIGINT NOT NULL
    )""",
    "CREATE INDEX webhooks_tenant ON webhooks (tenant_id, webhook_id)",
    """CREATE TABLE webhook_deliveries (
        delivery_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        alert_id TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        next_attempt_unix_nano BIGINT NOT NULL,
        last_status_code INTEGER,
        last_error TEXT,
        created_unix_nano BIGINT NOT NULL,
        updated_unix_nano BIGINT NOT NULL,
        delivered_unix_nano BIGINT
    )""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_unix_nano)",
    "CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, delivery_id)",
    "CREATE INDEX webhook_deliveries_alert ON webhook_deliveries (alert_id)",
]]

DELIVERY_STATUSES = ("pending", "delivered", "failed")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {raw[:32]!r}") from None
    if value < 0:
        raise ValueError(f"{name}: must not be negative")
    return value


@dataclass(frozen=True)
class WebhookSettings:
    """Delivery policy and destination allowlist (environment: OTEL_AUDIT_WEBHOOK_*)."""

    allow_hosts: tuple[str, ...] = ()
    max_attempts: int = 8
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 600.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    concurrency: int = 4
    secret_grace_seconds: float = 86_400.0

    @classmethod
    def from_env(cls, **overrides: Any) -> WebhookSettings:
        """Settings from OTEL_AUDIT_WEBHOOK_ALLOW_HOSTS (comma-separated hosts, IPs or CIDRs), _MAX_ATTEMPTS,
        _BACKOFF_SECONDS, _MAX_BACKOFF_SECONDS, _TIMEOUT_SECONDS; keyword overrides win."""
        hosts = tuple(item.strip() for item in os.environ.get("OTEL_AUDIT_WEBHOOK_ALLOW_HOSTS", "").split(",")
                      if item.strip())
        values: dict[str, Any] = {
            "allow_hosts": hosts,
            "max_attempts": int(_env_float("OTEL_AUDIT_WEBHOOK_MAX_ATTEMPTS", cls.max_attempts)),
            "backoff_seconds": _env_float("OTEL_AUDIT_WEBHOOK_BACKOFF_SECONDS", cls.backoff_seconds),
            "max_backoff_seconds": _env_float("OTEL_AUDIT_WEBHOOK_MAX_BACKOFF_SECONDS", cls.max_backoff_seconds),
            "timeout_seconds": _env_float("OTEL_AUDIT_WEBHOOK_TIMEOUT_SECONDS", cls.timeout_seconds),
        }
        values.update({name: value for name, value in overrides.items() if value is not None})
        if values["max_attempts"] < 1:
            raise ValueError("OTEL_AUDIT_WEBHOOK_MAX_ATTEMPTS: at least 1")
        return cls(**values)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` failures: exponential with +-20% jitter, capped."""
        delay = min(self.backoff_seconds * 2 ** max(attempts - 1, 0), self.max_backoff_seconds)
        return float(delay * random.uniform(0.8, 1.2))


class DestinationError(ValueError):
    """A webhook URL is not acceptable (scheme, form, or a forbidden address); `field` is always "url"."""

    field = "url"


def _unwrap(address: IpAddress) -> IpAddress:
    """The IPv4 address inside IPv4-mapped, 6to4 or Teredo IPv6 addresses (checked as what they reach)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def forbidden_reason(address: IpAddress) -> str | None:
    """Why an address is not a public destination (None if it is)."""
    address = _unwrap(address)
    for attribute, reason in (
        ("is_unspecified", "unspecified"), ("is_loopback", "loopback"), ("is_link_local", "link-local"),
        ("is_multicast", "multicast"), ("is_private", "private"), ("is_reserved", "reserved"),
    ):
        if getattr(address, attribute):
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class Destination:
    """A checked destination: the URL as given and the addresses the request may go to (tried in order)."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


class DestinationGuard:
    """Checks webhook URLs; `allow_hosts` entries are host names (exact, case-insensitive), IPs or CIDR networks."""

    def __init__(self, allow_hosts: Sequence[str] = ()) -> None:
        self.allowed_names: set[str] = set()
        self.allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow_hosts:
            try:
                self.allowed_networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.allowed_names.add(entry.strip().lower().rstrip("."))

    def _host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_names

    def _address_allowed(self, address: IpAddress) -> bool:
        return any(address in network for network in self.allowed_networks)

    def parse(self, url: Any) -> tuple[str, str, int]:
        """(scheme, host, port) of a well-formed http(s) URL, or DestinationError."""
        if not isinstance(url, str) or not url:
            raise DestinationError("url: must be a non-empty string")
        if len(url) > MAX_URL_LENGTH or any(ord(char) < 33 for char in url):
            raise DestinationError(f"url: at most {MAX_URL_LENGTH} characters, no spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise DestinationError(f"url: malformed ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise DestinationError("url: scheme must be https (or http for an allowlisted host)")
        if parts.username is not None or parts.password is not None:
            raise DestinationError("url: credentials in the URL are not allowed (the delivery is signed instead)")
        host = parts.hostname
        if not host:
            raise DestinationError("url: missing host")
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)

    def check(self, url: Any) -> Destination:
        """Parse, resolve and vet `url`; the returned address is the one to connect to."""
        scheme, host, port = self.parse(url)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise DestinationError(f"url: cannot resolve host {host!r} ({exc})") from None
        addresses: list[IpAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise DestinationError(f"url: host {host!r} has no addresses")
        by_name = self._host_allowed(host)
        allowed = by_name or all(self._address_allowed(address) for address in addresses)
        if not allowed:
            for address in addresses:
                reason = forbidden_reason(address)
                if reason is not None:
                    raise DestinationError(
                        f"url: {host!r} resolves to {address} ({reason}); such destinations are refused unless the "
                        "host is in the server's webhook allowlist (--webhook-allow-host)"
                    )
            if scheme != "https":
                raise DestinationError("url: must use https (plain http is only allowed for allowlisted hosts)")
        return Destination(url=url, host=host, port=port, addresses=tuple(str(address) for address in addresses))


@dataclass(frozen=True)
class Webhook:
    """A webhook's public record (never its secret)."""

    webhook_id: str
    tenant_id: str
    url: str
    description: str
    created_unix_nano: int
    updated_unix_nano: int
    secret: str = field(repr=False, default="")
    previous_secret: str | None = field(repr=False, default=None)
    previous_secret_expires_unix_nano: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.webhook_id, "url": self.url, "description": self.description,
            "created_unix_nano": self.created_unix_nano, "updated_unix_nano": self.updated_unix_nano,
        }

    def signing_secrets(self, now_unix_nano: int) -> list[str]:
        """The current secret, plus the previous one while its grace period lasts."""
        found = [self.secret]
        if self.previous_secret and (self.previous_secret_expires_unix_nano or 0) > now_unix_nano:
            found.append(self.previous_secret)
        return found


@dataclass(frozen=True)
class Delivery:
    """One queued notification of one alert to one webhook, and how it went."""

    delivery_id: str
    tenant_id: str
    webhook_id: str
    alert_id: str
    status: str
    attempts: int
    max_attempts: int
    next_attempt_unix_nano: int
    last_status_code: int | None
    last_error: str | None
    created_unix_nano: int
    updated_unix_nano: int
    delivered_unix_nano: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.delivery_id, "webhook_id": self.webhook_id, "alert_id": self.alert_id, "status": self.status,
            "attempts": self.attempts, "max_attempts": self.max_attempts,
            "next_attempt_unix_nano": self.next_attempt_unix_nano if self.status == "pending" else None,
            "last_status_code": self.last_status_code, "last_error": self.last_error,
            "created_unix_nano": self.created_unix_nano, "updated_unix_nano": self.updated_unix_nano,
            "delivered_unix_nano": self.delivered_unix_nano,
        }


_WEBHOOK_COLUMNS = ("webhook_id, tenant_id, url, description, created_unix_nano, updated_unix_nano, secret, "
                    "previous_secret, previous_secret_expires_unix_nano")
_DELIVERY_COLUMNS = ("delivery_id, tenant_id, webhook_id, alert_id, status, attempts, max_attempts, "
                     "next_attempt_unix_nano, last_status_code, last_error, created_unix_nano, updated_unix_nano, "
                     "delivered_unix_nano")
_INSERT_DELIVERY_COLUMNS = ("delivery_id, tenant_id, webhook_id, alert_id, body, status, attempts, max_attempts, "
                            "next_attempt_unix_nano, last_status_code, last_error, created_unix_nano, "
                            "updated_unix_nano, delivered_unix_nano")


def new_id(prefix: str) -> str:
    """A time-ordered id: prefix, 16 hex digits of Unix nanoseconds, 8 random hex digits."""
    return f"{prefix}{time.time_ns():016x}{_secrets.token_hex(4)}"


def new_secret() -> str:
    """A fresh 256-bit signing secret."""
    return SECRET_PREFIX + _secrets.token_urlsafe(32)


def check_secret(secret: Any) -> str:
    """A caller-chosen secret: 16-256 printable characters."""
    if not isinstance(secret, str) or not 16 <= len(secret) <= 256 or not secret.isprintable():
        raise ValueError("secret: must be 16-256 printable characters (omit it to have one generated)")
    return secret


class WebhookRegistry:
    """The tenants' webhooks and their delivery queue in the store's database."""

    def __init__(self, storage: Storage, settings: WebhookSettings) -> None:
        self.storage = storage
        self.settings = settings
        self.guard = DestinationGuard(settings.allow_hosts)

    def migrate(self) -> None:
        self.storage.apply_migrations("webhooks", MIGRATIONS)

    # registry ---------------------------------------------------------------------------------------------

    def create(self, tenant_id: str, url: Any, secret: Any = None, description: Any = "") -> tuple[Webhook, str]:
        """Register a webhook after vetting its URL; returns it and its secret (shown only now)."""
        self.guard.check(url)
        chosen = new_secret() if secret is None else check_secret(secret)
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH or "\x00" in description:
            raise ValueError(f"description: a string of at most {MAX_DESCRIPTION_LENGTH} characters")
        now = time.time_ns()
        webhook = Webhook(new_id("whk_"), tenant_id, url, description, now, now, chosen)
        p = self.storage.placeholder
        with self.storage.transaction() as conn:
            conn.execute(
                f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES ({', '.join([p] * 9)})",
                (webhook.webhook_id, tenant_id, url, description, now, now, chosen, None, None),
            )
        return webhook, chosen

    def list_webhooks(self, tenant_id: str) -> list[Webhook]:
        p = self.storage.placeholder
        with self.storage.read() as conn:
            rows = conn.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = {p} ORDER BY webhook_id", (tenant_id,)
            ).fetchall()
        return [Webhook(*row) for row in rows]

    def get(self, tenant_id: str, webhook_id: str) -> Webhook | None:
        p = self.storage.placeholder
        with self.storage.read() as conn:
            row = conn.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = {p} AND webhook_id = {p}",
                (tenant_id, webhook_id),
            ).fetchone()
        return Webhook(*row) if row else None

    def existing_ids(self, conn: Any, tenant_id: str, webhook_ids: Sequence[str]) -> set[str]:
        """Which of `webhook_ids` are the tenant's webhooks (inside the caller's transaction)."""
        if not webhook_ids:
            return set()
        p = self.storage.placeholder
        marks = ", ".join([p] * len(webhook_ids))
        rows = conn.execute(
            f"SELECT webhook_id FROM webhooks WHERE tenant_id = {p} AND webhook_id IN ({marks})",
            (tenant_id, *webhook_ids),
        ).fetchall()
        return {row[0] for row in rows}

    def delete(self, tenant_id: str, webhook_id: str) -> bool:
        """Remove a webhook; its pending deliveries fail with a reason (nothing is dropped silently)."""
        p = self.storage.placeholder
        now = time.time_ns()
        with self.storage.transaction() as conn:
            deleted = conn.execute(
                f"DELETE FROM webhooks WHERE tenant_id = {p} AND webhook_id = {p}", (tenant_id, webhook_id)
            ).rowcount
            if deleted:
                conn.execute(
                    f"UPDATE webhook_deliveries SET status = 'failed', last_error = {p}, updated_unix_nano = {p}"
                    f" WHERE webhook_id = {p} AND tenant_id = {p} AND status = 'pending'",
                    ("webhook deleted", now, webhook_id, tenant_id),
                )
        return bool(deleted)

    def rotate_secret(self, tenant_id: str, webhook_id: str, secret: Any = None) -> tuple[Webhook, str] | None:
        """A new secret (returned once); the old one keeps signing alongside for `secret_grace_seconds`."""
        chosen = new_secret() if secret is None else check_secret(secret)
        now = time.time_ns()
        expires = now + int(self.settings.secret_grace_seconds * 1e9)
        p = self.storage.placeholder
        with self.storage.transaction() as conn:
            updated = conn.execute(
                f"UPDATE webhooks SET previous_secret = secret, previous_secret_expires_unix_nano = {p}, secret = {p},"
                f" updated_unix_nano = {p} WHERE tenant_id = {p} AND webhook_id = {p}",
                (expires, chosen, now, tenant_id, webhook_id),
            ).rowcount
        if not updated:
            return None
        webhook = self.get(tenant_id, webhook_id)
        return (webhook, chosen) if webhook else None

    # queue ------------------------------------------------------------------------------------------------

    def enqueue(self, conn: Any, tenant_id: str, webhook_ids: Sequence[str], alert_id: str, body: str) -> int:
        """Queue `body` for each webhook, inside the caller's transaction; returns how many were queued."""
        p = self.storage.placeholder
        now = time.time_ns()
        rows = [
            (new_id("dlv_"), tenant_id, webhook_id, alert_id, body, "pending", 0, self.settings.max_attempts, now,
             None, None, now, now, None)
            for webhook_id in webhook_ids
        ]
        if rows:
            conn.cursor().executemany(
                f"INSERT INTO webhook_deliveries ({_INSERT_DELIVERY_COLUMNS}) VALUES ({', '.join([p] * 14)})",
                rows,
            )
        return len(rows)

    def deliveries(self, tenant_id: str, *, webhook_id: str | None = None, alert_id: str | None = None,
                   status: str | None = None, limit: int = 100, before: str | None = None) -> list[Delivery]:
        """The tenant's delivery log, newest first, optionally filtered."""
        p = self.storage.placeholder
        clauses, params = [f"tenant_id = {p}"], [tenant_id]
        for column, value in (("webhook_id", webhook_id), ("alert_id", alert_id), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = {p}")
                params.append(value)
        if before is not None:
            clauses.append(f"delivery_id < {p}")
            params.append(before)
        with self.storage.read() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {' AND '.join(clauses)}"
                f" ORDER BY delivery_id DESC LIMIT {int(limit)}",
                params,
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def has_due(self) -> bool:
        """Whether any delivery is due now (a read, so idle polling never takes the write lock)."""
        p = self.storage.placeholder
        with self.storage.read() as conn:
            row = conn.execute(
                f"SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_unix_nano <= {p} LIMIT 1",
                (time.time_ns(),),
            ).fetchone()
        return row is not None

    def claim(self, batch: int = 20) -> list[tuple[str, str, str, str, int, int]]:
        """Take up to `batch` due deliveries: (id, tenant, webhook, body, attempts so far incl. this, max)."""
        p = self.storage.placeholder
        now = time.time_ns()
        lease = now + int((self.settings.timeout_seconds + 30) * 1e9)
        lock = " FOR UPDATE SKIP LOCKED" if self.storage.dialect == "postgresql" else ""
        with self.storage.transaction() as conn:
            rows = conn.execute(
                f"UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_unix_nano = {p},"
                f" updated_unix_nano = {p} WHERE delivery_id IN (SELECT delivery_id FROM webhook_deliveries"
                f" WHERE status = 'pending' AND next_attempt_unix_nano <= {p} ORDER BY next_attempt_unix_nano"
                f" LIMIT {int(batch)}{lock})"
                " RETURNING delivery_id, tenant_id, webhook_id, body, attempts, max_attempts",
                (lease, now, now),
            ).fetchall()
        return [tuple(row) for row in rows]

    def record(self, delivery_id: str, *, delivered: bool, attempts: int, max_attempts: int,
               status_code: int | None, error: str | None, retry_after: float | None = None) -> None:
        """Store the outcome of an attempt: delivered, retry later (backoff), or failed for good."""
        p = self.storage.placeholder
        now = time.time_ns()
        if delivered:
            sql = (f"UPDATE webhook_deliveries SET status = 'delivered', last_status_code = {p}, last_error = NULL,"
                   f" updated_unix_nano = {p}, delivered_unix_nano = {p} WHERE delivery_id = {p}")
            params: tuple[Any, ...] = (status_code, now, now, delivery_id)
        elif attempts >= max_attempts:
            sql = (f"UPDATE webhook_deliveries SET status = 'failed', last_status_code = {p}, last_error = {p},"
                   f" updated_unix_nano = {p} WHERE delivery_id = {p}")
            params = (status_code, f"gave up after {attempts} attempts: {error}"[:MAX_ERROR_LENGTH], now, delivery_id)
        else:
            delay = self.settings.backoff(attempts)
            if retry_after is not None:
                delay = min(max(delay, retry_after), self.settings.max_backoff_seconds)
            sql = (f"UPDATE webhook_deliveries SET last_status_code = {p}, last_error = {p},"
                   f" next_attempt_unix_nano = {p}, updated_unix_nano = {p} WHERE delivery_id = {p}")
            params = (status_code, (error or "")[:MAX_ERROR_LENGTH], now + int(delay * 1e9), now, delivery_id)
        with self.storage.transaction() as conn:
            conn.execute(sql, params)

    def fail(self, delivery_id: str, error: str) -> None:
        """Give up on a delivery at once (its webhook is gone)."""
        p = self.storage.placeholder
        with self.storage.transaction() as conn:
            conn.execute(
                f"UPDATE webhook_deliveries SET status = 'failed', last_error = {p}, updated_unix_nano = {p}"
                f" WHERE delivery_id = {p}",
                (error[:MAX_ERROR_LENGTH], time.time_ns(), delivery_id),
            )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


class DeliveryWorker:
    """A daemon thread that posts due deliveries (a few at a time) until stopped; `wake()` skips the poll wait."""

    def __init__(self, registry: WebhookRegistry) -> None:
        self.registry = registry
        self.settings = registry.settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._http = self._client()

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.settings.timeout_seconds, follow_redirects=False, trust_env=False,
                            headers={"user-agent": USER_AGENT})

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        if self._http.is_closed:
            self._http = self._client()
        self._pool = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="otel-audit-webhook")
        self._thread = threading.Thread(target=self._run, name="otel-audit-deliveries", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; deliveries in flight finish (their rows stay leased and are retried if cut short)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._http.close()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the worker; rows stay queued
                _log.exception("otel-audit webhooks: delivery round failed")
                handled = 0
            if not handled:
                self._wake.wait(self.settings.poll_seconds)
                self._wake.clear()

    def run_once(self) -> int:
        """Claim and post one batch of due deliveries; returns how many were attempted."""
        if not self.registry.has_due():
            return 0
        claimed = self.registry.claim(batch=self.settings.concurrency * 4)
        if not claimed:
            return 0
        if self._pool is None:
            for item in claimed:
                self._attempt(*item)
        else:
            list(self._pool.map(lambda item: self._attempt(*item), claimed))
        return len(claimed)

    def _attempt(self, delivery_id: str, tenant_id: str, webhook_id: str, body: str, attempts: int,
                 max_attempts: int) -> None:
        webhook = self.registry.get(tenant_id, webhook_id)
        if webhook is None:
            self.registry.fail(delivery_id, "webhook deleted")
            return
        status_code: int | None = None
        retry_after: float | None = None
        try:
            destination = self.registry.guard.check(webhook.url)
            response = self._post(destination, webhook, delivery_id, body.encode("utf-8"))
            status_code = response.status_code
            if 200 <= status_code < 300:
                self.registry.record(delivery_id, delivered=True, attempts=attempts, max_attempts=max_attempts,
                                     status_code=status_code, error=None)
                return
            error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
            retry_after = _retry_after(response)
        except DestinationError as exc:
            error = f"destination refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.registry.record(delivery_id, delivered=False, attempts=attempts, max_attempts=max_attempts,
                             status_code=status_code, error=error, retry_after=retry_after)

    def _post(self, destination: Destination, webhook: Webhook, delivery_id: str, body: bytes) -> httpx.Response:
        """POST the signed body to the vetted address, with the original Host header and TLS server name."""
        timestamp = int(time.time())
        url = httpx.URL(destination.url)
        headers = {
            "content-type": "application/json",
            "host": url.netloc.decode("ascii"),
            webhook_signature.TIMESTAMP_HEADER: str(timestamp),
            webhook_signature.SIGNATURE_HEADER: webhook_signature.signature_header(
                webhook.signing_secrets(time.time_ns()), timestamp, body),
            webhook_signature.DELIVERY_HEADER: delivery_id,
            webhook_signature.EVENT_HEADER: "alert.fired",
        }
        extensions = {"sni_hostname": destination.host} if url.scheme == "https" else {}
        for address in destination.addresses[:-1]:
            try:
                return self._send(url.copy_with(host=address), headers, body, extensions)
            except httpx.ConnectError:
                continue
        return self._send(url.copy_with(host=destination.addresses[-1]), headers, body, extensions)

    def _send(self, url: httpx.URL, headers: dict[str, str], body: bytes, extensions: dict[str, Any]) -> httpx.Response:
        with self._http.stream("POST", url, content=body, headers=headers, extensions=extensions) as response:
            response.read()
        return response


def dumps_body(payload: dict[str, Any]) -> str:
    """The exact JSON text a delivery sends (and signs)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
