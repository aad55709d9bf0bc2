"""Where the Redis that ``contrail up`` runs for a data directory is found again.

``contrail up`` picks the embedded Redis's port once and remembers it in
``<data_dir>/redis.port`` (:func:`remember_redis_port`); this module is the
only one that knows that file. ``contrail doctor`` finds the stack's Redis
through :func:`embedded_redis` (contrail_cli/doctor.py hands it to the
collector's doctor command), so both agree on the file by construction.
"""

from __future__ import annotations

from pathlib import Path

import redis

from tracer.redis_client import connect

REDIS_PORT_FILE = "redis.port"


def remember_redis_port(data_dir: Path | str, port: int) -> None:
    """Write the embedded Redis's port where :func:`remembered_redis_port` finds it."""
    (Path(data_dir) / REDIS_PORT_FILE).write_text(f"{port}\n")


def remembered_redis_port(data_dir: Path | str) -> int | None:
    """The port the embedded Redis of ``data_dir`` was last given, or None (no file, or not a number)."""
    try:
        return int((Path(data_dir) / REDIS_PORT_FILE).read_text().strip()) or None
    except (OSError, ValueError):
        return None


def embedded_redis(data_dir: Path | str) -> tuple[str, str] | None:
    """The URL of the Redis ``contrail up`` runs for ``data_dir`` and the file that named it, if it is
    running (answers PING); else None."""
    port = remembered_redis_port(data_dir)
    if port is None:
        return None
    url = f"redis://127.0.0.1:{port}/0"
    try:
        return (url, str(Path(data_dir) / REDIS_PORT_FILE)) if redis_ping(url) else None
    except (redis.RedisError, OSError):
        return None


def redis_ping(url: str) -> bool:
    client = connect(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()
