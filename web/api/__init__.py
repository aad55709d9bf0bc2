"""API blueprints, one per resource, mounted under ``/api/v1`` (and the Jaeger-compatible one under ``/jaeger``).

The prefix is given here, at registration, so each blueprint names only its
own paths.
"""

from __future__ import annotations

from flask import Flask

API_PREFIX = "/api/v1"


def register_blueprints(app: Flask) -> None:
    from . import (ai, ai_sessions, dependencies, health, heatmap, jaeger, metrics, profiles, report, services,
                   stats, tail, traces)

    app.register_blueprint(health.bp)  # /healthz, /readyz, and /api/v1 status paths of its own
    for module in (traces, services, dependencies, stats, heatmap, tail, report, metrics, profiles):
        app.register_blueprint(module.bp, url_prefix=API_PREFIX)
    for module in (ai, ai_sessions):
        app.register_blueprint(module.bp, url_prefix=f"{API_PREFIX}/ai")
    app.register_blueprint(jaeger.bp, url_prefix="/jaeger/api")
