"""AI sessions, users and single LLM calls: what one session or user did, what the model saw and answered.

A session is every trace posted under ``session.id`` (Contrail's ``agent_run``
and OpenInference set it; ``gen_ai.conversation.id`` is aliased at admission);
a user is ``user.id``. Runs are agent traces summarized as ``/ai/traces`` does.

Paging contracts:
* ``/ai/sessions`` and ``/ai/sessions/<id>`` page by cursor: pass ``next_cursor``
  back unchanged as ``cursor``; ``next_cursor`` is null on the last page. A page of
  the sessions list may hold fewer than ``limit`` sessions (at most
  :data:`SCAN_TRACES` traces are read per page); keep going while ``next_cursor`` is set.
* ``/ai/users`` pages by ``page`` (from 1) and ``limit``; ``pages`` says how many there are.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from collector_worker import pricing
from collector_worker.llm_calls import llm_call_view
from collector_worker.llm_usage import query_usage
from collector_worker.storage import ai_traces, block_store
from collector_worker.storage.queries import (QueryError, TraceQuery, decode_cursor, encode_cursor, iso_time,
                                              search_traces, span_to_api)

from .. import params
from ..errors import bad_parameter, not_found
from ..resources import current_resources
from .ai_common import ai_span, default_step_s, price_table, span_attributes, summarize_agent_trace, usage_step_s

bp = Blueprint("ai_sessions", __name__)

SESSION_KEY, USER_KEY, AGENT_KEY = "session.id", "user.id", "gen_ai.agent.name"
MAX_ID = 255
DEFAULT_SESSIONS, MAX_SESSIONS = 20, 100
DEFAULT_RUNS, MAX_RUNS = 50, 200
DEFAULT_USERS, MAX_USERS = 50, 200
SCAN_TRACES = 500  # traces read at most to fill one page of the sessions list
SCAN_BATCH = 100
SESSION_TRACE_CAP = 500  # traces of one session its totals are summed over (``totals_capped`` beyond)
LIST_TRACE_CAP = 100  # the same for each session of the sessions list (``runs_capped`` beyond)
DEFAULT_LOOKBACK_S = 7 * 86400.0
MAX_ERRORS_PER_RUN = 20
_LIST_CURSOR = "ai_sessions"


def _identifier(name: str, value: str) -> str:
    value = params.check_text(name, value, MAX_ID)
    if not value.strip():
        raise bad_parameter(name, f"{name} must not be blank")
    return value


def _search(conn, q: TraceQuery) -> dict[str, Any]:
    try:
        return search_traces(conn, q)
    except QueryError as exc:
        raise bad_parameter(exc.parameter, str(exc)) from None


# --------------------------------------------------------------------------- runs


def agent_runs(conn, trace_ids: list[str], prices: pricing.PriceTable) -> dict[str, dict[str, Any]]:
    """Agent-run summaries (the ``/ai/traces`` shape plus ``errors``) of stored traces, by trace id."""
    if not trace_ids:
        return {}
    found = block_store.trace_spans(conn, trace_ids)
    rows = ai_traces.trace_rows(conn, trace_ids)
    out = {}
    for trace_id in trace_ids:
        ai_spans, errors = [], []
        for span in found.get(trace_id, ()):
            ai_row = ai_span(span, span_attributes(span))
            if ai_row is not None:
                ai_spans.append(ai_row)
            if span["status_code"] == "error" and len(errors) < MAX_ERRORS_PER_RUN:
                errors.append({"span_id": span["span_id"], "name": span["name"], "service": span["service"],
                               "message": span.get("status_message") or None})
        if not ai_spans and not errors and trace_id not in rows:
            continue
        run = summarize_agent_trace(trace_id, ai_spans, rows.get(trace_id), prices)
        run["errors"] = errors
        run["steps"] = _steps(run, ai_spans)
        out[trace_id] = run
    return out


def _steps(run: dict[str, Any], ai_spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's phases, tool calls and LLM calls as one list in start order, each with its offset from the
    run's start (``offset_ms``) and ``kind`` (phase | tool | llm)."""
    starts = {span["span_id"]: span["start_ns"] for span in ai_spans}
    steps = [{"kind": kind, **item} for kind, items in (("phase", run["phases"]), ("tool", run["tool_calls"]),
                                                        ("llm", run["llm_calls"])) for item in items]
    for step in steps:
        step["offset_ms"] = round((starts.get(step["span_id"], run["start_ns"]) - run["start_ns"]) / 1e6, 3)
    steps.sort(key=lambda step: (step["offset_ms"], step["span_id"]))
    return steps


def session_totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over a session's runs: counts, tokens, cost, and the models that had no price."""
    calls = [call for run in runs for call in run["llm_calls"]]
    return {
        "runs": len(runs),
        "failed_runs": sum(1 for run in runs if not run["success"]),
        "llm_calls": len(calls),
        "failed_llm_calls": sum(1 for call in calls if not call["success"]),
        "tool_calls": sum(run["totals"]["tool_calls"] for run in runs),
        "failed_tool_calls": sum(run["totals"]["failed_tool_calls"] for run in runs),
        "errors": sum(len(run["errors"]) for run in runs),
        "input_tokens": sum(call["input_tokens"] for call in calls),
        "output_tokens": sum(call["output_tokens"] for call in calls),
        "cache_read_tokens": sum(call["cache_read_tokens"] for call in calls),
        "cost": round(sum(call["cost"] for call in calls), 6),
        "duration_ms": round(sum(run["duration_ms"] for run in runs), 3),
        "unpriced_models": sorted({call["model"] for call in calls if not call["priced"] and call["model"]}),
    }


def _session_summary(session_id: str, runs: list[dict[str, Any]], capped: bool) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda run: (run["start_ns"], run["trace_id"]))
    first, last = (ordered[0], ordered[-1]) if ordered else (None, None)
    return {
        "session_id": session_id,
        "user_ids": sorted({run["user_id"] for run in runs if run["user_id"]}),
        "agents": sorted({run["agent"] for run in runs if run["agent"]}),
        "first_time": first and first["start_time"], "first_ns": first and first["start_ns"],
        "last_time": last and last["start_time"], "last_ns": last and last["start_ns"],
        "totals": session_totals(runs),
        "runs_capped": capped,
    }


# --------------------------------------------------------------------------- /ai/sessions/<id>


@bp.get("/sessions/<path:session_id>")
def session(session_id: str):
    session_id = _identifier("session_id", session_id)
    limit = params.integer("limit", DEFAULT_RUNS, minimum=1, maximum=MAX_RUNS)
    cursor = params.text("cursor", max_length=1024)
    start_ns, end_ns = params.time_range()
    prices = price_table()
    tags = [(SESSION_KEY, "=", session_id)]
    with current_resources().engine().connect() as conn:
        page = _search(conn, TraceQuery(tags=tags, sort="start_asc", limit=limit, cursor=cursor,
                                        start_ns=start_ns, end_ns=end_ns))
        every = _search(conn, TraceQuery(tags=tags, sort="start_asc", limit=SESSION_TRACE_CAP,
                                         start_ns=start_ns, end_ns=end_ns))
        if not every["traces"] and not cursor:
            raise not_found(f"no traces of session {session_id!r}" + (" in this window" if start_ns else ""))
        ids = list(dict.fromkeys([t["trace_id"] for t in every["traces"]] + [t["trace_id"] for t in page["traces"]]))
        runs = agent_runs(conn, ids, prices)
    capped = every["next_cursor"] is not None
    summary = _session_summary(session_id, [runs[t["trace_id"]] for t in every["traces"] if t["trace_id"] in runs],
                               capped)
    return jsonify({**summary, "total_runs": every["total"], "total_capped": every["total_capped"],
                    "runs": [runs[t["trace_id"]] for t in page["traces"] if t["trace_id"] in runs],
                    "limit": limit, "next_cursor": page["next_cursor"], "price_source": prices.source})


# --------------------------------------------------------------------------- /ai/sessions


def _session_of(run_spans: list[dict[str, Any]]) -> str | None:
    for span in run_spans:
        attrs = span_attributes(span)
        value = attrs.get(SESSION_KEY) or attrs.get("gen_ai.conversation.id")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # posted as its text, so /ai/sessions/<id> finds it
        if isinstance(value, str) and value:
            return value
    return None


def _candidate_traces(conn, filters: list[tuple[str, str, str]], start_ns, end_ns, before, count, found):
    """The next ``count`` traces (newest first, after ``before``) that may belong to a session not yet found."""
    return ai_traces.traces_with_key(conn, SESSION_KEY, start_ns, end_ns, before, count,
                                     tags=[(key, value) for key, _, value in filters], exclude=list(found))


def _listed_before(conn, session_id: str, filters, start_ns, end_ns, cursor: tuple[int, str] | None) -> bool:
    """Whether an earlier page already listed ``session_id``: it has a matching trace newer than ``cursor``."""
    if cursor is None:
        return False
    newest = _search(conn, TraceQuery(tags=[(SESSION_KEY, "=", session_id), *filters], sort="start_desc", limit=1,
                                      start_ns=start_ns, end_ns=end_ns))["traces"]
    return bool(newest) and (newest[0]["start_ns"], newest[0]["trace_id"]) > cursor


@bp.get("/sessions")
def sessions():
    filters = []
    for name, key in (("user_id", USER_KEY), ("agent", AGENT_KEY)):
        value = params.text(name, max_length=MAX_ID)
        if value is not None:
            filters.append((key, "=", value))
    limit = params.integer("limit", DEFAULT_SESSIONS, minimum=1, maximum=MAX_SESSIONS)
    raw_cursor = params.text("cursor", max_length=1024)
    start_ns, end_ns = params.time_range(default_lookback_s=DEFAULT_LOOKBACK_S)
    try:
        cursor = decode_cursor(raw_cursor, _LIST_CURSOR) if raw_cursor else None
    except QueryError as exc:
        raise bad_parameter("cursor", str(exc)) from None
    prices = price_table()
    found: dict[str, tuple[int, str]] = {}  # session id -> position of its newest trace
    position, scanned, exhausted = cursor, 0, False
    with current_resources().engine().connect() as conn:
        while len(found) < limit and scanned < SCAN_TRACES:
            batch = _candidate_traces(conn, filters, start_ns, end_ns, position,
                                      min(SCAN_BATCH, SCAN_TRACES - scanned), found)
            if not batch:
                exhausted = True
                break
            spans = block_store.trace_spans(conn, [t["trace_id"] for t in batch])
            for trace in batch:
                scanned += 1
                position = (trace["start_ns"], trace["trace_id"])
                session_id = _session_of(spans.get(trace["trace_id"], ()))
                if session_id and session_id not in found and \
                        not _listed_before(conn, session_id, filters, start_ns, end_ns, cursor):
                    found[session_id] = position
                    if len(found) == limit:
                        break
        items = []
        for session_id in found:
            traces = _search(conn, TraceQuery(tags=[(SESSION_KEY, "=", session_id), *filters], sort="start_desc",
                                              limit=LIST_TRACE_CAP, start_ns=start_ns, end_ns=end_ns))
            runs = agent_runs(conn, [t["trace_id"] for t in traces["traces"]], prices)
            items.append(_session_summary(session_id, list(runs.values()), traces["next_cursor"] is not None))
    more = not exhausted and position is not None and position != cursor
    return jsonify({
        "sessions": items, "count": len(items), "limit": limit,
        "next_cursor": encode_cursor(_LIST_CURSOR, position[0], position[1]) if more else None,
        "filters": {"user_id": next((v for k, _, v in filters if k == USER_KEY), None),
                    "agent": next((v for k, _, v in filters if k == AGENT_KEY), None)},
        "start_time": iso_time(start_ns), "end_time": iso_time(end_ns), "price_source": prices.source,
    })


# --------------------------------------------------------------------------- /ai/users


@bp.get("/users")
def users():
    limit = params.integer("limit", DEFAULT_USERS, minimum=1, maximum=MAX_USERS)
    page = params.integer("page", 1, minimum=1, maximum=1_000_000)
    start_ns, end_ns = params.time_range(default_lookback_s=86400.0)
    start_ns, end_ns = params.closed_range(start_ns, end_ns, 86400.0)
    prices = price_table()
    step_s = default_step_s(max(1.0, (end_ns - start_ns) / 1e9))
    with current_resources().engine().connect() as conn:
        usage = query_usage(conn, start_ns, end_ns, group_by="user", step_s=step_s, prices=prices)
    last_seen = {s["key"]: s["points"][-1]["time"] for s in usage["series"] if s["points"]}
    groups = [g for g in usage["groups"] if g["key"]]
    total = len(groups)
    shown = groups[(page - 1) * limit: page * limit]
    return jsonify({
        "users": [{"user_id": g["key"], **{k: v for k, v in g.items() if k != "key"},
                   "last_active": last_seen.get(g["key"])} for g in shown],
        "page": page, "limit": limit, "total": total, "pages": (total + limit - 1) // limit,
        "start_time": iso_time(start_ns), "end_time": iso_time(end_ns), "price_source": prices.source,
    })


@bp.get("/users/<path:user_id>")
def user(user_id: str):
    user_id = _identifier("user_id", user_id)
    start_ns, end_ns = params.time_range(default_lookback_s=DEFAULT_LOOKBACK_S)
    start_ns, end_ns = params.closed_range(start_ns, end_ns, DEFAULT_LOOKBACK_S)
    step_s = usage_step_s(start_ns, end_ns)
    prices = price_table()
    with current_resources().engine().connect() as conn:
        usage = query_usage(conn, start_ns, end_ns, group_by="model", step_s=step_s, where={"user": user_id},
                            prices=prices)
        runs = _search(conn, TraceQuery(tags=[(USER_KEY, "=", user_id)], limit=1, start_ns=start_ns, end_ns=end_ns))
        if not usage["groups"] and not runs["total"]:
            ever = _search(conn, TraceQuery(tags=[(USER_KEY, "=", user_id)], limit=1))
            if not ever["total"]:
                raise not_found(f"no LLM usage or traces of user {user_id!r}")
    return jsonify({
        "user_id": user_id, "start_time": iso_time(start_ns), "end_time": iso_time(end_ns),
        "step_s": usage["step_s"], "totals": usage["totals"], "models": usage["groups"], "series": usage["series"],
        "traces": runs["total"], "traces_capped": runs["total_capped"],
        "last_trace_time": runs["traces"][0]["start_time"] if runs["traces"] else None,
        "unpriced_models": usage["unpriced_models"], **({"price_hint": usage["price_hint"]}
                                                        if "price_hint" in usage else {}),
        "price_source": prices.source,
    })


# --------------------------------------------------------------------------- /ai/llm-calls/<trace>/<span>


@bp.get("/llm-calls/<trace_id>/<span_id>")
def llm_call(trace_id: str, span_id: str):
    trace_id = params.trace_id("trace_id", trace_id)
    span_id = params.span_id("span_id", span_id)
    prices = price_table()
    with current_resources().engine().connect() as conn:
        spans = block_store.trace_spans(conn, [trace_id]).get(trace_id)
    if not spans:
        raise not_found(f"unknown trace {trace_id}")
    row = next((span for span in spans if span["span_id"] == span_id), None)
    if row is None:
        raise not_found(f"trace {trace_id} has no span {span_id}")
    view = llm_call_view(trace_id, span_to_api(row), prices)
    if view is None:
        raise not_found(f"span {span_id} of trace {trace_id} is not an LLM call")
    return jsonify(view)
