"""Testing helpers: capture audit records through the real pipeline, and a real OTLP receiver."""

from .capture import AuditCapture
from .receiver import OTLPReceiver, ReceivedRecord, Reply

__all__ = ["AuditCapture", "OTLPReceiver", "ReceivedRecord", "Reply"]
