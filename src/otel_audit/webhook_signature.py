"""Sign and verify otel-audit webhook deliveries (standard library only: copy this file into any receiver).

Every delivery carries `X-OtelAudit-Timestamp: <unix seconds>` and `X-OtelAudit-Signature: v1=<hex>[,v1=<hex>]`,
where each hex is HMAC-SHA256(secret, f"{timestamp}.".encode() + raw_body). Several `v1=` entries appear while a
rotated secret is still in its grace period. A receiver checks that one of them matches its secret (in constant
time) and that the timestamp is within the tolerance window, which bounds replays of a captured request:

    from otel_audit.webhook_signature import verify
    verify(request_body_bytes, request.headers, secret)   # raises WebhookSignatureError, else returns the timestamp
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

TIMESTAMP_HEADER = "X-OtelAudit-Timestamp"
SIGNATURE_HEADER = "X-OtelAudit-Signature"
DELIVERY_HEADER = "X-OtelAudit-Delivery"
EVENT_HEADER = "X-OtelAudit-Event"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookSignatureError(ValueError):
    """The request is not a valid, fresh otel-audit delivery (the message says why)."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def compute_signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"{timestamp}." + body` under `secret`."""
    return hmac.new(_key(secret), f"{int(timestamp)}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str | bytes], timestamp: int, body: bytes) -> str:
    """The X-OtelAudit-Signature value: one `v1=<hex>` per secret, comma-separated."""
    return ",".join(f"{SCHEME}={compute_signature(secret, timestamp, body)}" for secret in secrets)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        for key, item in headers.items():
            if key.lower() == name.lower():
                return item
    return value


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a delivery's signature and freshness; return its timestamp or raise WebhookSignatureError.

    `body` must be the raw request bytes (before any JSON parsing); `headers` any case-insensitive or plain mapping.
    """
    timestamp_text = _header(headers, TIMESTAMP_HEADER)
    signature_text = _header(headers, SIGNATURE_HEADER)
    if not timestamp_text:
        raise WebhookSignatureError(f"missing {TIMESTAMP_HEADER} header")
    if not signature_text:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    if not timestamp_text.strip().isdigit():
        raise WebhookSignatureError(f"{TIMESTAMP_HEADER} must be integer Unix seconds")
    timestamp = int(timestamp_text.strip())
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(f"timestamp outside the {tolerance_seconds:g} s tolerance (replayed or clock skew)")
    expected = compute_signature(secret, timestamp, body)
    candidates = [
        value.strip() for scheme, _, value in (part.strip().partition("=") for part in signature_text.split(","))
        if scheme == SCHEME
    ]
    if not candidates:
        raise WebhookSignatureError(f"no {SCHEME}= signature in {SIGNATURE_HEADER}")
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), expected.encode("ascii"))
    if not matched:
        raise WebhookSignatureError("signature mismatch (wrong secret or modified body)")
    return timestamp
