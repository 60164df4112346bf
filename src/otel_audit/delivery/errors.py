"""Errors of the delivery stage."""

from __future__ import annotations


class AuditDeliveryError(RuntimeError):
    """An audit event could not be accepted for delivery (spool full past its policy, or not persistable).

    Raised from `emit` so the caller knows the event was NOT recorded; it is never dropped silently instead.
    """
