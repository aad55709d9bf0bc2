"""Liveness, readiness, collector status and the OpenAPI document."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, jsonify
from sqlalchemy import text

from collector_worker.storage import queries
from collector_worker.storage.usage import storage_usage

from .. import params
from ..errors import ApiError
from ..resources import current_resources, current_settings

bp = Blueprint("health", __name__)
log = logging.getLogger("contrail.web")


@bp.get("/healthz")
def healthz():
    """The process is up; says nothing about Redis or the database on purpose."""
    return jsonify({"status": "ok"})


def unavailable(what: str, exc: Exception) -> str:
    """What a client is told about a failed dependency: the kind of failure only. /readyz is open even when
    tokens are set, a read token is not an operator's, and a driver's message carries host names, ports
    and user names. The whole message goes to the log."""
    log.warning("%s unavailable: %s: %s", what, type(exc).__name__, str(exc).strip().splitlines()[0]
                if str(exc).strip() else "")
    return f"unavailable ({type(exc).__name__}; the web app's log has the details)"


def _check_database() -> str | None:
    try:
        with current_resources().engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means not ready
        return unavailable("database", exc)
    return None


def _check_redis() -> str | None:
    try:
        current_resources().redis().ping()
    except Exception as exc:  # connection refused, timeout, auth
        return unavailable("redis", exc)
    return None


@bp.get("/readyz")
def readyz():
    """Ready when both Redis and the database answer; 503 with the reasons otherwise."""
    problems = {"database": _check_database(), "redis": _check_redis()}
    checks = {name: ("ok" if problem is None else problem) for name, problem in problems.items()}
    ready = all(problem is None for problem in problems.values())
    response = jsonify({"status": "ready" if ready else "not_ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


def stream_health_or_error() -> dict:
    """stream_health from the consumer module, or {"error": ...} when Redis cannot be read."""
    from collector_worker.consumer import stream_health  # here: the consumer pulls the whole write path in

    try:
        return dict(stream_health(current_resources().redis(), current_settings()))
    except Exception as exc:  # Redis down: report it, do not fail the page
        return {"error": unavailable("redis", exc)}


def reports_summary_or_error(kind: str) -> dict:
    """What every tracing or collecting process reported (tracer.reporting), summed; {"error": ...} on failure."""
    from tracer.reporting import read_reports, summarize, summarize_collectors

    try:
        reports = read_reports(current_resources().redis(), current_settings().stream, kind=kind)
    except Exception as exc:
        return {"error": unavailable("redis", exc)}
    return summarize(reports) if kind == "tracers" else summarize_collectors(reports)


@bp.get("/api/v1/tracers")
def tracers():
    """Every tracing process's latest report: exported, dropped, sampled out, spooled, export errors."""
    from tracer.reporting import read_reports

    try:
        reports = read_reports(current_resources().redis(), current_settings().stream)
    except Exception as exc:  # Redis down
        raise ApiError(503, f"cannot read tracer reports: {unavailable('redis', exc)}") from None
    return jsonify({"tracers": reports})


@bp.get("/api/v1/status")
def status():
    """Collector health for the dashboard's status bar."""
    with_storage = params.choice("storage", ("true", "false"), "false") == "true"  # counts every row: on request
    stream = stream_health_or_error()
    last = storage = None
    database = "ok"
    try:
        with current_resources().engine().connect() as conn:
            last = queries.last_finalized_ns(conn)
            storage = storage_usage(conn) if with_storage else None
    except Exception as exc:  # database down
        database = unavailable("database", exc)
    return jsonify({
        "stream": stream,
        "tracers": reports_summary_or_error("tracers"),
        "collectors": reports_summary_or_error("collectors"),
        "database": database,
        "last_finalized_ns": int(last) if last is not None else None,
        "last_finalized_time": queries.iso_time(last),
        "storage": storage,
        "now_ns": time.time_ns(),
    })


@bp.get("/api/v1/openapi.json")
def openapi():
    from ..openapi import spec

    return jsonify(spec())
