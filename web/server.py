"""``contrail web``: serve the app with gunicorn.

Without a token the API is open, so by default it binds to loopback; binding
anywhere else without a token is refused unless ``--insecure`` says the
network is trusted.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from contextlib import closing

import click

from .settings import WebSettings


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_error(host: str, port: int) -> str | None:
    """Why the web app could not listen on ``host:port`` (a listener already there), or None.

    SO_REUSEADDR as gunicorn sets it, so connections of a just-stopped server
    (TIME_WAIT) do not count as "in use".
    """
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        return f"{exc.strerror or exc}: check --host / CONTRAIL_WEB_HOST"
    with closing(socket.socket(family, kind, proto)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"{exc.strerror}: another Contrail or another program is using it; "
                        "choose another port with --port or CONTRAIL_WEB_PORT")
            return f"{exc.strerror or exc}: check --host / CONTRAIL_WEB_HOST"
    return None


def build_gunicorn_app(app, bind: str, workers: int, timeout: int = 60, threads: int = 4):
    """A gunicorn application serving ``app`` (imported here: gunicorn is a server extra).

    Threaded workers (``gthread``): a slow client (an exporter on a slow link, a browser on a long-held
    keep-alive connection) holds one thread, not a whole worker, so probes and the dashboard keep being
    answered without a buffering proxy in front.
    """
    from gunicorn.app.base import BaseApplication

    class ContrailGunicorn(BaseApplication):
        def __init__(self):
            self.application = app
            super().__init__()

        def load_config(self):
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("keepalive", 5)
            self.cfg.set("timeout", timeout)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)
            self.cfg.set("proc_name", "contrail-web")
            if app.extensions["contrail.settings"].otlp_grpc_port:
                self.cfg.set("post_worker_init", start_grpc)
                self.cfg.set("worker_exit", stop_grpc)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 24 opens a control socket in $HOME, shared by every instance on the host
                # (and unwritable for the image's user); Contrail does not use it.
                self.cfg.set("control_socket_disable", True)

        def load(self):
            return self.application

    def start_grpc(worker):
        """In each worker, after the fork: the OTLP/gRPC receiver (gRPC must not be started before a fork)."""
        from .otlp_grpc import start_grpc_server

        try:
            grpc_servers.append(start_grpc_server(app))
        except RuntimeError as exc:
            worker.log.error("OTLP/gRPC receiver not started: %s", exc)

    def stop_grpc(_server, _worker):
        for server in grpc_servers:
            if server is not None:
                server.stop(grace=5).wait(6)

    grpc_servers: list = []

    return ContrailGunicorn()


@click.command("web")
@click.option("--host", default=None, help="Address to bind (default CONTRAIL_WEB_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default CONTRAIL_WEB_PORT or 8680).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="gunicorn worker processes.")
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="Threads per worker (default CONTRAIL_WEB_THREADS or 4).")
@click.option("--database-url", default=None, help="SQLAlchemy URL of the trace database.")
@click.option("--redis-url", default=None, help="Redis holding the span stream (for the OTLP receiver).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without an API token.")
def web(host, port, workers, threads, database_url, redis_url, insecure):
    """Serve the API, OTLP (HTTP and gRPC) and Zipkin receivers, Jaeger query API and dashboard with gunicorn."""
    try:
        settings = WebSettings.load(web_host=host, web_port=port, web_workers=workers, web_threads=threads,
                                    database_url=database_url, redis_url=redis_url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    has_token = bool(settings.api_token or settings.read_token or settings.ingest_token)
    if not is_loopback(settings.web_host) and not has_token:
        if not insecure:
            click.echo(f"refusing to bind {settings.web_host} without CONTRAIL_API_TOKEN: anyone on the network "
                       "could read every trace. Set a token, bind 127.0.0.1, or pass --insecure.", err=True)
            raise SystemExit(2)
        click.echo(f"WARNING: serving on {settings.web_host} without a token (--insecure): the API is open "
                   "to the network.", err=True)
    elif not has_token:
        click.echo("no CONTRAIL_API_TOKEN set: the API is open to local users only (loopback bind).", err=True)
    if settings.otlp_grpc_port:
        problem = bind_error(settings.web_host, settings.otlp_grpc_port)
        if problem:
            click.echo(f"the OTLP/gRPC receiver cannot listen on {settings.web_host}:{settings.otlp_grpc_port}: "
                       f"{problem.split(':')[0]}; set CONTRAIL_OTLP_GRPC_PORT to a free port, or 0 to turn it off",
                       err=True)
            raise SystemExit(2)
    from .app import create_app

    app = create_app(settings=settings)
    shown = f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host
    bind = f"{shown}:{settings.web_port}"
    grpc_note = f" and grpc://{shown}:{settings.otlp_grpc_port}" if settings.otlp_grpc_port else ""
    click.echo(f"Contrail web listening on http://{bind}/  (API http://{bind}/api/v1/, "
               f"OTLP http://{bind}/v1/traces{grpc_note}, Zipkin http://{bind}/api/v2/spans, "
               f"Jaeger query http://{bind}/jaeger)", err=False)
    build_gunicorn_app(app, bind, settings.web_workers, threads=settings.web_threads).run()
