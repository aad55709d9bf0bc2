"""The original notes' TracingManager arguments, mapped onto today's settings.

``enable_tracing`` is ``enabled``; ``jaeger_host``/``jaeger_port`` (or
``JAEGER_AGENT_HOST``/``JAEGER_AGENT_PORT``) add a live OTLP/HTTP export of the
same spans to that Jaeger, which accepts OTLP on port 4318. Each original name
warns once per process, naming the setting to use instead.
"""

from __future__ import annotations

import threading
import warnings

from .settings import TracerSettings

JAEGER_OTLP_PORT = 4318
JAEGER_AGENT_PORTS = (6831, 6832)  # the agent's UDP (Thrift) ports in the original notes: not OTLP

_warned: set[str] = set()
_lock = threading.Lock()


def warn_once(key: str, message: str) -> None:
    """A DeprecationWarning-style notice, once per process for ``key`` (shown as a UserWarning so it is seen)."""
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, UserWarning, stacklevel=4)


def enabled_from(enabled: bool | None, enable_tracing: bool | None) -> bool | None:
    if enable_tracing is None:
        return enabled
    warn_once("enable_tracing", "TracingManager(enable_tracing=...) is the original name: use enabled=... "
              "(or CONTRAIL_ENABLED)")
    return enabled if enabled is not None else enable_tracing


def jaeger_endpoint(settings: TracerSettings) -> str | None:
    """The OTLP/HTTP traces URL of the configured Jaeger, or None when no Jaeger host is set."""
    if not settings.jaeger_host:
        return None
    port = JAEGER_OTLP_PORT if settings.jaeger_port in JAEGER_AGENT_PORTS else settings.jaeger_port
    endpoint = f"http://{settings.jaeger_host}:{port}/v1/traces"
    warn_once("jaeger", f"jaeger_host/jaeger_port (JAEGER_AGENT_HOST/JAEGER_AGENT_PORT) are the original names: "
              f"spans are exported over OTLP/HTTP to {endpoint}; the modern setting is exporters=otlp with "
              f"otlp_endpoint (CONTRAIL_EXPORTERS=redis,otlp CONTRAIL_OTLP_ENDPOINT={endpoint})")
    return endpoint
