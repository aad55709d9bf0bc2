"""API blueprints, one per resource, mounted under ``/api/v1`` (and the Jaeger-compatible one under ``/jaeger``).

``BLUEPRINTS`` lists ``"module:attribute"`` strings; a module that does not
exist yet (an optional part not installed) is skipped with a warning, any
other import error is a bug and raises.
"""

from __future__ import annotations

import importlib
import logging

from flask import Flask

log = logging.getLogger("contrail.web")

API_PREFIX = "/api/v1"

BLUEPRINTS = [
    "web.api.health:bp",
    "web.api.traces:bp",
    "web.api.services:bp",
    "web.api.dependencies:bp",
    "web.api.stats:bp",
    "web.api.heatmap:bp",
    "web.api.tail:bp",
    "web.api.report:bp",
    "web.api.metrics:bp",
    "web.api.profiles:bp",
    "web.api.ai:bp",
    "web.api.ai_sessions:bp",
    "web.api.jaeger:bp",
]


def register_blueprints(app: Flask) -> list[str]:
    """Register every available blueprint of ``BLUEPRINTS``; return the ones registered."""
    registered = []
    for target in BLUEPRINTS:
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            log.warning("API module %s is not available; its routes are not served", module_name)
            continue
        app.register_blueprint(getattr(module, attribute))
        registered.append(target)
    return registered
