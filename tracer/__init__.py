"""Contrail tracer: OpenTelemetry spans shipped in batches to a Redis stream."""

from opentelemetry.trace import get_current_span

from .manager import TracingManager
from .settings import Settings

__all__ = ["TracingManager", "Settings", "get_current_span"]
