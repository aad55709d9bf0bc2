"""Fixtures every collector test module uses: a Redis client and opened (migrated) engines."""

from __future__ import annotations

import pytest
import redis

from collector_worker.storage import open_engine


@pytest.fixture
def client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def engine(database_url):
    """An engine on SQLite and on PostgreSQL in turn (``database_url`` is parametrized)."""
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url):
    """SQLite only: for machinery that exists for its single writer, or file-level faults."""
    engine = open_engine(sqlite_url)
    yield engine
    engine.dispose()
