"""The app's per-process resources: database engine, Redis client, and the accessors blueprints use.

Engine and Redis client are created lazily, once per process, so the app is
safe to build before gunicorn forks its workers: a worker that finds
resources made by another process makes its own. Blueprints import this
module, never the app factory (:mod:`web.app`), which imports them.
"""

from __future__ import annotations

import os
import threading

import redis
from flask import current_app
from sqlalchemy.engine import Engine

from tracer.redis_client import connect

from .settings import WebSettings


class Resources:
    """Per-process database engine and Redis client for one app."""

    def __init__(self, settings: WebSettings):
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

                self._engine = open_engine(self.settings.resolved_database_url,
                                           pool_size=self.settings.db_pool_size)
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


def current_settings() -> WebSettings:
    return current_app.extensions["contrail.settings"]


def current_resources() -> Resources:
    return current_app.extensions["contrail.resources"]
