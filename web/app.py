"""The Flask app factory: API blueprints, OTLP receiver, auth, metrics, JSON errors.

The per-process resources (database engine, Redis client) and their accessors
live in :mod:`web.resources`, which the blueprints import; this module only
assembles the app.
"""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from .resources import Resources
from .settings import WebSettings


def create_app(config: Mapping[str, Any] | None = None, settings: WebSettings | None = None) -> Flask:
    """Build the Contrail web app.

    ``settings`` default to :meth:`WebSettings.load`; ``config`` may override
    ``DATABASE_URL``, ``REDIS_URL``, ``API_TOKEN``, ``READ_TOKEN``,
    ``INGEST_TOKEN``, ``MAX_BODY_BYTES`` (mapped onto settings) and any Flask
    config key such as ``TESTING``.
    """
    config = dict(config or {})
    overrides = {}
    for key, field_name in (("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url"),
                            ("API_TOKEN", "api_token"), ("READ_TOKEN", "read_token"),
                            ("INGEST_TOKEN", "ingest_token"), ("MAX_BODY_BYTES", "max_body_bytes"),
                            ("STREAM", "stream")):
        if key in config:
            overrides[field_name] = config.pop(key)
    if settings is None:
        settings = WebSettings.load(**overrides)
    elif overrides:
        import dataclasses

        settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items()})

    from .json_provider import FiniteJSONProvider

    app = Flask("web", static_folder=None)
    app.json = FiniteJSONProvider(app)  # NaN/Infinity never reach a client as bare tokens
    app.config.update(JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.config.update(config)
    app.json.sort_keys = False
    app.extensions["contrail.settings"] = settings
    app.extensions["contrail.resources"] = Resources(settings)

    from . import auth, body, errors, headers, metrics, otlp, zipkin
    from .api import register_blueprints

    errors.register_error_handlers(app)
    headers.init_app(app)
    body.init_app(app)
    metrics.init_app(app)  # first, so refused requests are timed too
    auth.init_app(app)
    app.register_blueprint(otlp.bp)
    app.register_blueprint(zipkin.bp)
    register_blueprints(app)

    # --- dashboard: the dashboard blueprint is registered here -------------------
    from .dashboard import bp as dashboard_bp
    app.register_blueprint(dashboard_bp)

    return app
