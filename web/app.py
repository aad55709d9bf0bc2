"""The Flask app factory: API blueprints, OTLP receiver, auth, metrics, JSON errors.

Database engine and Redis client are created lazily, once per process, so
the app is safe to build before gunicorn forks its workers: a worker that
finds resources made by another process makes its own.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping

import redis
from flask import Flask
from sqlalchemy.engine import Engine

from tracer.redis_client import connect
from tracer.settings import Settings

log = logging.getLogger("contrail.web")


class Resources:
    """Per-process database engine and Redis client for one app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._engine: Engine | None = None
        self._redis: redis.Redis | None = None

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)  # the parent's connections stay the parent's
            self._engine, self._redis, self._pid = None, None, os.getpid()

    def engine(self) -> Engine:
        with self._lock:
            self._check_fork()
            if self._engine is None:
                from collector_worker.storage import open_engine

                self._engine = open_engine(self.settings.resolved_database_url)
            return self._engine

    def redis(self) -> redis.Redis:
        with self._lock:
            self._check_fork()
            if self._redis is None:
                self._redis = connect(self.settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
            return self._redis

    def close(self) -> None:
        with self._lock:
            if self._engine is not None and self._pid == os.getpid():
                self._engine.dispose()
            if self._redis is not None and self._pid == os.getpid():
                self._redis.close()
            self._engine = self._redis = None


def create_app(config: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """Build the Contrail web app.

    ``settings`` default to :meth:`Settings.load`; ``config`` may override
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
        settings = Settings.load(**overrides)
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


def current_settings() -> Settings:
    from flask import current_app

    return current_app.extensions["contrail.settings"]


def current_resources() -> Resources:
    from flask import current_app

    return current_app.extensions["contrail.resources"]
