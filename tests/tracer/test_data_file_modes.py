"""Spans can hold secrets: the spool, the SQLite database and the embedded Redis data are private to the user."""

from __future__ import annotations

import os
import stat

import pytest
import redis

from collector_worker.storage.engine import open_engine
from tests.support.servers import free_port, wait_until
from tracer.spool import DiskSpool
from contrail_cli.up import Supervisor, redis_spec


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    """The common default umask, under which files come out 0644 unless created otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_spool_segments_are_0600_in_a_new_0700_directory(tmp_path, umask_022):
    data_dir = tmp_path / "data"  # neither the data directory nor the spool directory exists yet
    spool = DiskSpool(str(data_dir / "spool"), max_bytes=10**6)
    assert spool.append({b"v": b"1", b"n": b"1", b"data": b"secret"}, spans=1)
    spool.close()
    (segment,) = (data_dir / "spool").glob("*.seg")
    assert mode(segment) == 0o600
    assert mode(data_dir / "spool") == 0o700 and mode(data_dir) == 0o700


def test_an_existing_spool_directory_keeps_its_mode(tmp_path, umask_022):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    spool = DiskSpool(str(shared), max_bytes=10**6)
    assert spool.append({b"v": b"1", b"n": b"1"}, spans=1)
    spool.close()
    assert mode(shared) == 0o750
    assert [mode(p) for p in shared.glob("*.seg")] == [0o600]


def test_sqlite_database_and_its_wal_files_are_0600_in_a_0700_directory(tmp_path, umask_022):
    database = tmp_path / "data" / "contrail.db"
    engine = open_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:  # WAL and shared-memory files exist while a connection is open
            connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
            files = [database, database.with_name("contrail.db-wal"), database.with_name("contrail.db-shm")]
            assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
    finally:
        engine.dispose()
    assert mode(database.parent) == 0o700


def test_embedded_redis_writes_its_data_files_0600_in_a_0700_directory(tmp_path, umask_022):
    port = free_port()
    lines: list[str] = []
    supervisor = Supervisor(echo=lines.append)
    supervisor.add(redis_spec(tmp_path / "data", port))
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        wait_until(client.ping, timeout=30, message="embedded Redis")
        client.set("span", "secret")
        client.bgsave()
        redis_dir = tmp_path / "data" / "redis"
        wait_until(lambda: (redis_dir / "dump.rdb").exists() and (redis_dir / "appendonly.aof").stat().st_size,
                   timeout=30, message="Redis data files")
        files = sorted(p for p in redis_dir.rglob("*") if p.is_file())
        assert files and {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
        assert mode(redis_dir) == 0o700 and mode(tmp_path / "data") == 0o700
    finally:
        client.close()
        supervisor.stop_all()
