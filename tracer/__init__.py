"""Contrail tracer: OpenTelemetry spans shipped in batches to a Redis stream."""

# The exporter thread resolves host names while the application's threads may do the same: the first
# ``socket.getaddrinfo`` imports the idna codec, and two threads importing it at once can make one of them
# fail with "LookupError: unknown encoding: idna". Importing it here, before any thread starts, avoids that.
import encodings.idna  # noqa: F401

from opentelemetry.trace import get_current_span

from .manager import TracingManager
from .settings import Settings, TracerSettings

__all__ = ["TracingManager", "TracerSettings", "Settings", "get_current_span"]
