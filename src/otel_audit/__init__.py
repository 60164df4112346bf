"""otel-audit: audit events (who did what to which resource, with what outcome) as OpenTelemetry log records."""

from .context import AuditContext, audit_context, current_audit_context
from .delivery.errors import AuditDeliveryError
from .diff import changes
from .logger import ActionBlock, AuditLogger, get_audit_logger
from .model import Actor, ActorType, AuditEvent, AuditEventError, Change, Outcome, Resource
from .pipeline import AuditPipeline, configure, current_pipeline, shutdown
from .stats import delivery_stats

__version__ = "0.1.0"

__all__ = [
    "ActionBlock",
    "Actor",
    "ActorType",
    "AuditContext",
    "AuditDeliveryError",
    "AuditEvent",
    "AuditEventError",
    "AuditLogger",
    "AuditPipeline",
    "Change",
    "Outcome",
    "Resource",
    "audit_context",
    "changes",
    "configure",
    "current_audit_context",
    "current_pipeline",
    "delivery_stats",
    "get_audit_logger",
    "shutdown",
]
