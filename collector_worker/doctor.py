"""``contrail doctor``: is the pipeline healthy, and if not, what to do about it.

Each check prints OK, WARN or FAIL with what it saw and, when not OK, the
next step. FAIL means Contrail cannot work (Redis or the database
unreachable, a schema from a newer version); WARN means it works but
something needs attention (a backlog, dead letters, clock skew). The exit
status is 1 when any check fails, so the command doubles as a health probe.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import click

from tracer.redis_client import connect
from tracer.settings_base import effective_settings, mask_url

from .output import console, emit_json, first_line, missing_sqlite_file
from .settings import CollectorSettings

OK, WARN, FAIL = "OK", "WARN", "FAIL"

LAG_WARN = 10_000  # entries not yet delivered to any collector
CONSUMER_IDLE_WARN_MS = 60_000  # a reading collector blocks for `block` seconds at most
CLOCK_SKEW_WARN_MS = 250.0
CLOCK_SKEW_FAIL_MS = 30_000.0


@dataclass
class Check:
    name: str
    status: str
    detail: str
    hint: str = ""


# --------------------------------------------------------------------------- checks


def check_redis(settings: CollectorSettings) -> tuple[list[Check], Any]:
    """Reachability, persistence and clock skew; returns the client for the stream checks (or None)."""
    import redis

    shown = mask_url(settings.redis_url)
    try:
        client = connect(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
        before = time.time()
        client.ping()
    except (redis.RedisError, redis.exceptions.RedisClusterException, ValueError, OSError) as exc:
        return [Check("redis", FAIL, f"cannot reach Redis at {shown}: {first_line(exc)}",
                      "start Redis (contrail up starts one) or set CONTRAIL_REDIS_URL / --redis-url")], None
    checks = [Check("redis", OK, f"reachable at {shown} ({(time.time() - before) * 1000:.1f} ms round trip)")]
    try:
        aof = client.config_get("appendonly").get("appendonly")
    except redis.RedisError:
        aof = None  # CONFIG may be disabled on managed Redis
    if aof == "no" or aof == b"no":
        checks.append(Check("redis persistence", WARN, "append-only file is off: spans waiting in the stream "
                            "are lost if Redis restarts", "set appendonly yes (CONFIG SET appendonly yes)"))
    elif aof is not None:
        checks.append(Check("redis persistence", OK, "append-only file on"))
    checks.append(check_clock_skew(client))
    return checks, client


def measure_clock_skew_ms(client) -> tuple[float, float]:
    """(skew, round trip) in ms: Redis TIME minus this host's clock at the middle of the round trip."""
    t0 = time.time()
    seconds, micros = client.time()
    t1 = time.time()
    redis_now = seconds + micros / 1e6
    return (redis_now - (t0 + t1) / 2) * 1000, (t1 - t0) * 1000


def check_clock_skew(client) -> Check:
    try:
        skew, rtt = measure_clock_skew_ms(client)
    except Exception as exc:  # TIME refused by a proxy
        return Check("clock skew", WARN, f"cannot read Redis TIME: {first_line(exc)}")
    detail = f"this host's clock is {abs(skew):.1f} ms {'behind' if skew > 0 else 'ahead of'} Redis " \
             f"(±{rtt / 2:.1f} ms)"
    if abs(skew) >= CLOCK_SKEW_FAIL_MS:
        return Check("clock skew", FAIL, detail, "synchronise clocks with NTP (chrony/systemd-timesyncd); "
                     "span times from this host are misplaced")
    if abs(skew) - rtt / 2 > CLOCK_SKEW_WARN_MS:
        return Check("clock skew", WARN, detail, "synchronise clocks with NTP; traces show skewed spans "
                     "with a clock_skew warning")
    return Check("clock skew", OK, detail)


def check_stream(client, settings: CollectorSettings) -> list[Check]:
    from .consumer import stream_health

    try:
        health = stream_health(client, settings)
    except Exception as exc:  # a wrong key type, a proxy refusing XINFO
        return [Check("stream", FAIL, f"cannot read {settings.stream}: {first_line(exc)}",
                      f"check that {settings.stream} is a stream (TYPE {settings.stream})")]
    checks = [Check("stream", OK, f"{settings.stream}: {health['stream_length']} entries retained")]
    if len(health["shards"]) > 1 or health["shards"][0].get("node"):
        checks.append(_shards_check(health["shards"]))
    if not health.get("group_exists"):
        checks.append(Check("consumer group", WARN, f"group {settings.consumer_group} does not exist yet; "
                            f"{health['lag']} entries wait", "start a collector: contrail collector (or contrail up)"))
        return checks + [_dead_letters(health, settings)]
    pending, idle = health["pending"], health.get("oldest_pending_idle_ms", 0)
    if pending and idle > settings.claim_idle * 1000:
        checks.append(Check("pending", WARN, f"{pending} entries delivered but not acknowledged; the oldest "
                            f"for {idle / 1000:.0f}s", "a collector died holding them; a running collector "
                            f"claims them after {settings.claim_idle:g}s — make sure one is running"))
    else:
        checks.append(Check("pending", OK, f"{pending} entries in progress"))
    lag = health["lag"]
    consumers = health.get("consumers") or []
    active = [c for c in consumers if c["idle_ms"] < CONSUMER_IDLE_WARN_MS]
    if lag > LAG_WARN:
        checks.append(Check("consumer lag", WARN, f"{lag} entries not yet read by any collector",
                            "the collectors are behind: add collector processes (contrail up --collectors N, "
                            "more replicas) or check the database's write speed"))
    else:
        checks.append(Check("consumer lag", OK, f"{lag} entries not yet read"))
    if not active:
        checks.append(Check("consumers", WARN, f"no collector has read in the last {CONSUMER_IDLE_WARN_MS // 1000}s "
                            f"({len(consumers)} known)", "start a collector: contrail collector"))
    else:
        idle_ones = [c["name"] for c in consumers if c["idle_ms"] >= CONSUMER_IDLE_WARN_MS]
        detail = f"{len(active)} active"
        if idle_ones:
            detail += f", {len(idle_ones)} idle: {', '.join(idle_ones[:5])}"
        checks.append(Check("consumers", OK, detail,
                            "idle consumers are stopped collectors; the running collectors remove them once "
                            "they are idle for 24 h and hold no pending entries" if idle_ones else ""))
    return checks + [_dead_letters(health, settings)]


def _shards_check(shards: list[dict]) -> Check:
    """One line per stream shard: its length, pending entries, lag and dead letters."""
    lines = [f"{s['stream']}{' on ' + s['node'] if s.get('node') else ''}: {s['stream_length']} entries, "
             f"{s['pending']} pending, lag {s['lag']}, {s['dead_letters']} dead" for s in shards]
    missing = [s["stream"] for s in shards if not s["group_exists"]]
    if missing:
        return Check("shards", WARN, f"{len(shards)} streams; no consumer group yet on {', '.join(missing)}; "
                     + "; ".join(lines), "start a collector with the same CONTRAIL_STREAM_SHARDS")
    return Check("shards", OK, f"{len(shards)} streams: " + "; ".join(lines))


def _dead_letters(health: dict, settings: CollectorSettings) -> Check:
    dead = health["dead_letters"]
    if dead:
        where = [s["stream"] + ":dead" for s in health.get("shards", ()) if s["dead_letters"]] or [settings.dead_stream]
        return Check("dead letters", WARN, f"{dead} entries in {', '.join(where)}",
                     f"inspect reasons with: redis-cli XRANGE {where[0]} - + COUNT 10 "
                     "(usually a producer on an incompatible version); delete once understood")
    return Check("dead letters", OK, "none")


def check_tracers(client, settings: CollectorSettings) -> Check:
    """What the tracing processes reported (tracer.reporting): spans they dropped never reach Redis."""
    from tracer.reporting import read_reports, summarize

    try:
        summary = summarize(read_reports(client, settings.stream))
    except Exception as exc:
        return Check("tracers", WARN, f"cannot read tracer reports: {first_line(exc)}", "")
    if not summary["instances"]:
        return Check("tracers", OK, "no tracing process has reported in the last day")
    detail = (f"{summary['instances']} processes reported: {summary['spans_exported']} spans exported, "
              f"{summary['spans_sampled_out']} sampled out")
    if summary["spans_dropped"]:
        worst = sorted(summary["services"].items(), key=lambda kv: -kv[1]["spans_dropped"])
        names = ", ".join(f"{name} ({totals['spans_dropped']})" for name, totals in worst if totals["spans_dropped"])
        full = summary["spans_dropped_queue_full"]
        return Check("tracers", WARN, f"{detail}; {summary['spans_dropped']} spans dropped by {names}",
                     "queue full: raise CONTRAIL_MAX_QUEUE_SIZE or lower CONTRAIL_SCHEDULE_DELAY in those services"
                     if full else "spool full: Redis was unreachable too long; raise CONTRAIL_SPOOL_MAX_BYTES")
    if summary["spooling"]:
        return Check("tracers", WARN, f"{detail}; {summary['spooling']} processes hold spans in their disk spool",
                     "they cannot reach Redis: check CONTRAIL_REDIS_URL and the network from those hosts")
    return Check("tracers", OK, f"{detail}, none dropped")


def check_database(settings: CollectorSettings) -> list[Check]:
    from sqlalchemy.exc import SQLAlchemyError

    from .storage import open_engine
    from .storage.migrations import schema_status
    from .storage.usage import storage_usage

    url = settings.resolved_database_url
    shown = mask_url(url)
    missing = missing_sqlite_file(url)
    if missing:
        return [Check("database", FAIL, f"no database file at {missing}",
                      "start the stack (contrail up) or a collector, or point --database-url at the right file")]
    try:
        engine = open_engine(url, migrate=False, pool_size=settings.db_pool_size)
        try:
            with engine.connect() as conn:
                status = schema_status(conn)
                usage = storage_usage(conn) if status.state == "current" else None  # an older schema lacks tables
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError, OSError) as exc:
        return [Check("database", FAIL, f"cannot reach {shown}: {first_line(exc)}",
                      "start the database or fix CONTRAIL_DATABASE_URL / --database-url")]
    reachable = Check("database", OK, f"reachable: {shown}")
    if status.state == "empty":
        return [reachable, Check("schema", WARN, "no Contrail schema yet",
                                 "start a collector or the web app (they create it), or run contrail db upgrade")]
    if status.state == "newer":
        return [reachable, Check("schema", FAIL, f"revision {status.current} is newer than this Contrail "
                                 f"({status.head})", "upgrade Contrail on this host")]
    if status.state == "behind":
        return [reachable, Check("schema", WARN, f"revision {status.current}, this Contrail expects {status.head}",
                                 "start a collector of this version (migrations run at start) "
                                 "or run contrail db upgrade")]
    return [reachable, Check("schema", OK, f"revision {status.current} (current)"), storage_check(usage)]


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def storage_check(usage: dict) -> Check:
    """What the database holds: a summary line, then rows, size and trace times of each table holding rows."""
    from .storage.queries import iso_time

    tables = usage["tables"]
    traces = next(t for t in tables if t["name"] == "traces")
    lines = [f"{traces['rows']} traces, {_size(usage['total_bytes'])} in {len(tables)} tables "
             f"({usage['bytes_source']})"]
    for t in tables:
        if t["rows"]:
            times = f", {iso_time(t['oldest_ns'])} .. {iso_time(t['newest_ns'])}" if t["oldest_ns"] else ""
            size = f", {_size(t['bytes'])}" if t["bytes"] is not None else ""
            lines.append(f"{t['name']}: {t['rows']} rows{size}{times}")
    return Check("storage", OK, "\n".join(lines))


def run_checks(settings: CollectorSettings) -> list[Check]:
    checks, client = check_redis(settings)
    if client is not None:
        checks.extend(check_stream(client, settings))
        checks.append(check_tracers(client, settings))
        client.close()
    checks.extend(check_database(settings))
    return checks


# --------------------------------------------------------------------------- the command

STYLES = {OK: "green", WARN: "yellow", FAIL: "bold red"}


# A finder of a local Redis to check when none is configured: data directory -> (URL, where it was found) or
# None. `contrail up` (contrail_cli) supplies the one that finds the Redis it runs; this package knows no more.
LocalRedis = Callable[[str], "tuple[str, str] | None"]


def doctor_command(local_redis: LocalRedis | None = None,
                   settings_class: type[CollectorSettings] = CollectorSettings) -> click.Command:
    """The ``contrail doctor`` command; with ``local_redis``, an unconfigured Redis URL means that Redis.

    ``settings_class`` is the role whose settings are loaded and listed (``contrail`` passes the web app's,
    which include the collector's)."""

    @click.command()
    @click.option("--redis-url", default=None,
                  help="Redis holding the span stream [CONTRAIL_REDIS_URL; default: the Redis `contrail up` runs "
                       "for the data directory when it is running, else redis://127.0.0.1:6379/0].")
    @click.option("--database-url", default=None, help="SQLAlchemy URL of the trace database [CONTRAIL_DATABASE_URL].")
    @click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
    @click.option("--settings", "show_settings", is_flag=True,
                  help="Also list every effective setting and where it came from (kwarg, env, file or default).")
    def doctor(redis_url, database_url, as_json, show_settings):
        """Check Redis, the database and the collectors' backlog; exit 1 if anything fails."""
        run_doctor(redis_url, database_url, as_json, show_settings, local_redis, settings_class)

    return doctor


def run_doctor(redis_url: str | None, database_url: str | None, as_json: bool, show_settings: bool,
               local_redis: LocalRedis | None = None,
               settings_class: type[CollectorSettings] = CollectorSettings) -> None:
    import dataclasses

    try:
        settings, sources = settings_class.load_with_sources(redis_url=redis_url, database_url=database_url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    found = None
    if local_redis is not None and sources.get("redis_url") == "default":
        # Nothing configured: check the Redis `contrail up` runs for this data directory, the one
        # its collectors read, rather than whatever may listen on the default port.
        found = local_redis(settings.data_dir)
        if found:
            settings = dataclasses.replace(settings, redis_url=found[0])
            sources["redis_url"] = f"contrail up ({found[1]})"
    checks = run_checks(settings)
    if found and checks and checks[0].name == "redis" and checks[0].status == OK:
        checks[0].detail += f" — the Redis of contrail up (from {found[1]})"
    failed = any(c.status == FAIL for c in checks)
    shown = effective_settings(settings, sources) if show_settings else None
    if as_json:
        emit_json({"ok": not failed, "checks": [asdict(c) for c in checks],
                   **({"settings": shown} if shown is not None else {})})
    else:
        from rich.markup import escape

        out = console()
        for c in checks:
            detail = escape(c.detail).replace("\n", "\n" + " " * 25)  # continuation lines under the first
            out.print(f"[{STYLES[c.status]}]{c.status:<4}[/]  {c.name:<18} {detail}")
            if c.hint and c.status != OK:
                out.print(f"      {'':<18} [dim]→ {escape(c.hint)}[/dim]")
        summary = {s: sum(1 for c in checks if c.status == s) for s in (OK, WARN, FAIL)}
        out.print(f"{summary[OK]} ok, {summary[WARN]} warning(s), {summary[FAIL]} failure(s)")
        for row in shown or ():
            out.print(f"      {row['name']:<30} {escape(str(row['value'])):<40} [dim]{escape(row['source'])}[/dim]")
    if failed:
        raise SystemExit(1)
