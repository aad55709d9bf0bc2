"""``contrail collector`` and ``contrail cleanup``."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from typing import Any

import click

from tracer.settings_base import mask_url
from tracer.units import parse_duration

from .settings import CollectorSettings

log = logging.getLogger("contrail.collector")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")


def _load_settings(**overrides: Any) -> CollectorSettings:
    try:
        return CollectorSettings.load(**overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _duration(_ctx, param, value):
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


# --------------------------------------------------------------------------- contrail collector


def _run_one(overrides: dict[str, Any], log_level: str, parent_pid: int | None = None) -> int:
    """Run one consumer in this process until SIGINT/SIGTERM; return the exit code.

    Under a supervisor (``parent_pid``), the consumer also stops when the
    supervisor is gone, so a killed ``collector --processes N`` leaves no
    unsupervised consumers behind.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from .consumer import run_consumer
    from .storage.engine import open_engine

    _setup_logging(log_level)
    settings = CollectorSettings.load(**overrides)
    stop = threading.Event()

    def _stop(signum, _frame):
        stop.set()  # first: should the log write below fail inside the handler, the stop is not lost
        try:
            log.info("received %s, finishing the batch in hand", signal.Signals(signum).name)
        except Exception:  # noqa: BLE001
            pass

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid, stop), name="contrail-parent-watch",
                         daemon=True).start()
    try:
        engine = open_engine(settings.resolved_database_url, pool_size=settings.db_pool_size)
    except (SQLAlchemyError, OSError) as exc:
        log.error("cannot open the database %s: %s", mask_url(settings.resolved_database_url),
                  str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return 1
    try:
        run_consumer(settings, stop_event=stop, engine=engine)
    finally:
        engine.dispose()
    # The process ends here. Frozen, the heap is left to the operating system: the interpreter's collections on
    # the way out walked all of it again and took most of the CPU of a stop after the batch in hand was done.
    gc.freeze()
    return 0


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            log.error("the collector supervisor (pid %d) is gone; finishing the batch in hand and stopping",
                      parent_pid)
            stop.set()


def _child(overrides: dict[str, Any], log_level: str, parent_pid: int) -> None:
    sys.exit(_run_one(overrides, log_level, parent_pid))


@click.command("collector")
@click.option("--processes", "-p", type=click.IntRange(min=1), default=1, show_default=True,
              help="Consumer processes to run; they share the consumer group.")
@click.option("--redis-url", default=None, help="Redis holding the span stream [CONTRAIL_REDIS_URL].")
@click.option("--database-url", default=None, help="SQLAlchemy database URL [CONTRAIL_DATABASE_URL].")
@click.option("--consumer-name", default=None,
              help="Consumer name in the group (default host-pid; with several processes a -N suffix is added).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
def collector(processes: int, redis_url: str | None, database_url: str | None, consumer_name: str | None,
              log_level: str) -> None:
    """Consume the span stream into storage until interrupted (Ctrl-C or SIGTERM stop it cleanly)."""
    overrides = {"redis_url": redis_url, "database_url": database_url, "consumer_name": consumer_name}
    settings = _load_settings(**overrides)  # bad settings fail here, before anything starts
    from .pricing import PriceTableError, configure

    try:
        configure(settings.price_table)
    except PriceTableError as exc:
        raise click.UsageError(f"CONTRAIL_PRICE_TABLE: {exc}") from None
    if processes == 1:
        sys.exit(_run_one(overrides, log_level))
    _setup_logging(log_level)
    log.info("starting %d collector processes on %s -> %s", processes, mask_url(settings.redis_url),
             mask_url(settings.resolved_database_url))
    sys.exit(_supervise(processes, overrides, consumer_name, log_level))


def _supervise(processes: int, overrides: dict[str, Any], consumer_name: str | None, log_level: str) -> int:
    """Run consumer processes; forward SIGINT/SIGTERM to them; report any that dies."""
    context = multiprocessing.get_context("spawn")
    children = []
    for index in range(processes):
        child_overrides = dict(overrides)
        if consumer_name:
            child_overrides["consumer_name"] = f"{consumer_name}-{index + 1}"
        process = context.Process(target=_child, args=(child_overrides, log_level, os.getpid()),
                                  name=f"contrail-collector-{index + 1}")
        process.start()
        children.append(process)
    stopping = threading.Event()

    def _forward(signum, _frame):
        stopping.set()
        for process in children:
            if process.is_alive() and process.pid:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    failed = False
    running = {process.sentinel: process for process in children}
    while running:
        ready = multiprocessing.connection.wait(list(running), timeout=1.0)
        for sentinel in ready:
            process = running.pop(sentinel)
            process.join()
            code = process.exitcode
            if stopping.is_set() and code in (-signal.SIGTERM, -signal.SIGINT):
                code = 0  # stopped by the signal we forwarded before it had set up its handlers
            if code != 0:
                failed = True
                how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
                log.error("collector process %s (pid %s) %s", process.name, process.pid, how)
            elif not stopping.is_set():
                log.warning("collector process %s (pid %s) exited", process.name, process.pid)
    return 1 if failed else 0


# --------------------------------------------------------------------------- contrail cleanup


@click.command("cleanup")
@click.option("--retention", "retention", callback=_duration, default=None, metavar="DURATION",
              help="Delete data older than this, e.g. 7d or 12h [CONTRAIL_RETENTION, default 7d].")
@click.option("--database-url", default=None, help="SQLAlchemy database URL [CONTRAIL_DATABASE_URL].")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows deleted per transaction.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--all", "everything", is_flag=True,
              help="Delete ALL trace data (traces, spans, statistics, LLM usage, metrics), keeping the schema.")
@click.option("--yes", is_flag=True, help="With --all: do not ask for confirmation.")
def cleanup(retention: float | None, database_url: str | None, batch_size: int, dry_run: bool, everything: bool,
            yes: bool) -> None:
    """Delete data older than the retention period, in bounded batches (--all: delete everything)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from sqlalchemy.exc import SQLAlchemyError

    from .output import missing_sqlite_file
    from .retention import count_expired, run_retention
    from .storage.engine import open_engine

    if everything and retention is not None:
        raise click.BadParameter("--all deletes everything: not with --retention", param_hint="--retention")
    settings = _load_settings(database_url=database_url)
    keep = settings.retention if retention is None else retention
    if keep <= 0:
        raise click.BadParameter("retention must be greater than zero", param_hint="--retention")
    url = settings.resolved_database_url
    missing = missing_sqlite_file(url)
    if missing:  # opening it would create an empty database and report "deleted 0 rows"
        click.echo(f"error: no database at {missing}: check --database-url / CONTRAIL_DATABASE_URL "
                   "(or CONTRAIL_DATA_DIR)", err=True)
        sys.exit(1)
    cutoff_ns = time.time_ns() - int(keep * 1e9)
    console = Console(no_color=not sys.stdout.isatty(), highlight=False)
    if everything:
        _wipe_everything(url, dry_run, yes, console)
        return
    try:
        engine = open_engine(url, pool_size=settings.db_pool_size)
        if dry_run:
            counts = count_expired(engine, cutoff_ns)
            verb = "would delete"
        else:
            with Progress(TextColumn("deleting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, disable=not sys.stdout.isatty()) as progress:
                task = progress.add_task("delete", total=None)

                def _progress(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=max(total, done))

                counts = run_retention(engine, cutoff_ns, batch_size=batch_size, progress=_progress)
            verb = "deleted"
        engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        _cleanup_failed(url, exc)
    total = sum(int(v) for v in counts.values())
    console.print(f"{verb} {total} rows older than {_describe(keep)}")
    for table, count in sorted(counts.items()):
        console.print(f"  {table:<18} {count}")


def _cleanup_failed(url: str, exc: Exception) -> None:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    click.echo(f"error: cannot clean up {mask_url(url)}: {message}", err=True)
    sys.exit(1)


def _wipe_everything(url: str, dry_run: bool, yes: bool, console) -> None:
    """``contrail cleanup --all``: empty every trace data table after confirmation, one table at a time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from sqlalchemy.exc import SQLAlchemyError

    from .storage.engine import open_engine
    from .storage.wipe import count_all, wipe_all

    if not dry_run and not yes:
        click.confirm(f"Delete ALL trace data in {mask_url(url)}? This cannot be undone", abort=True)
    try:
        engine = open_engine(url)
        if dry_run:
            counts, verb = count_all(engine), "would delete"
        else:
            with Progress(TextColumn("emptying {task.fields[table]}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, disable=not sys.stdout.isatty()) as progress:
                task = progress.add_task("wipe", total=None, table="")

                def _progress(done: int, total: int, table: str) -> None:
                    progress.update(task, completed=done, total=total, table=table)

                counts, verb = wipe_all(engine, progress=_progress), "deleted"
        engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        _cleanup_failed(url, exc)
    console.print(f"{verb} {sum(counts.values())} rows: all trace data")
    for table, count in counts.items():
        console.print(f"  {table:<18} {count}")


def _describe(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

