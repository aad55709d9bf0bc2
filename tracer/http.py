"""Inbound Flask and outbound ``requests`` tracing, wired to a TracingManager.

The OpenTelemetry Flask and requests instrumentations already do what Contrail
needs (SERVER spans with method, route, status and client address, 5xx as
ERROR; CLIENT spans that inject ``traceparent``), so this module only points
them at the manager's own tracer provider and asks for the stable HTTP
semantic conventions (``http.request.method``, ``http.route``,
``http.response.status_code``, ``client.address``, ``url.full``) unless the
process already chose otherwise through ``OTEL_SEMCONV_STABILITY_OPT_IN``.

Propagation is W3C trace context plus baggage: OpenTelemetry's global
propagator unless ``OTEL_PROPAGATORS`` chooses another.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

SEMCONV_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"


def _prefer_stable_http_conventions() -> None:
    """Stable HTTP attribute names, unless the operator set the opt-in variable themselves."""
    os.environ.setdefault(SEMCONV_ENV, "http")


def _ensure_w3c_propagator() -> None:
    """Install tracecontext + baggage as the global propagator when OTEL_PROPAGATORS does not say otherwise."""
    if os.environ.get("OTEL_PROPAGATORS"):
        return
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    current = propagate.get_global_textmap()
    fields = set(getattr(current, "fields", ()) or ())
    if {"traceparent", "baggage"} <= fields:
        return
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))


# the apps instrument_flask instrumented (the instrumentor's own flag on the app is private to it)
_instrumented_apps: "weakref.WeakSet[Any]" = weakref.WeakSet()


def instrument_flask(manager: Any, app: Any, excluded_urls: str | None = None) -> Any:
    """Give every request to ``app`` a SERVER span from ``manager``; returns ``app``.

    Calling it twice on the same app changes nothing. ``excluded_urls`` is the
    OpenTelemetry comma-separated regex list (e.g. ``"healthz,metrics"``).
    """
    if not getattr(manager, "enabled", True) or app in _instrumented_apps:
        return app
    _prefer_stable_http_conventions()
    _ensure_w3c_propagator()
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor.instrument_app(app, tracer_provider=manager.tracer_provider, excluded_urls=excluded_urls)
    _instrumented_apps.add(app)
    return app


def uninstrument_flask(app: Any) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    if app in _instrumented_apps:
        FlaskInstrumentor.uninstrument_app(app)
        _instrumented_apps.discard(app)


def instrument_requests(manager: Any) -> None:
    """Give every ``requests`` call in this process a CLIENT span and a ``traceparent`` header.

    ``requests`` is patched once per process; a second call (from any
    manager) changes nothing.
    """
    if not getattr(manager, "enabled", True):
        return
    _prefer_stable_http_conventions()
    _ensure_w3c_propagator()
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentor = RequestsInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=manager.tracer_provider)


def uninstrument_requests() -> None:
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentor = RequestsInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
