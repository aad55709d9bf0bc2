"""AI-agent views: agent runs with their phases, tool and LLM calls; token usage and cost; bottleneck hints."""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Blueprint, jsonify

from collector_worker import pricing
from collector_worker.llm_usage import GROUP_BY, llm_call_of, query_usage
from collector_worker.storage import block_store, queries
from collector_worker.storage.queries import iso_time

from .. import params
from ..errors import ApiError, bad_parameter
from ..resources import current_resources, current_settings

bp = Blueprint("ai", __name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 200
DEFAULT_USAGE_LOOKBACK_S = 86400.0
MAX_POINTS = 2000
TARGET_POINTS = 120
# trace_tags keys behind the filters of /ai/traces
FILTER_TAGS = {"user_id": "user.id", "session_id": "session.id", "agent": "gen_ai.agent.name"}
AI_MARKERS = ("gen_ai.", "contrail.ai.", "llm.", "openinference.")  # attribute key prefixes of AI spans
_AI_SPAN_FIELDS = ("trace_id", "span_id", "name", "start_ns", "end_ns", "status_code")


def _prices() -> pricing.PriceTable:
    try:
        return pricing.configure(current_settings().price_table)
    except pricing.PriceTableError as exc:
        raise ApiError(503, f"LLM price table unusable: {exc}") from None


# --------------------------------------------------------------------------- /ai/traces


def _matching_trace_ids(conn, filters: dict[str, str], start_ns: int | None, end_ns: int | None,
                        limit: int) -> list[str]:
    """Newest traces that have AI spans and every requested user/session/agent tag."""
    keys = [] if filters else ["gen_ai.operation.name", "gen_ai.agent.name", "llm.model_name"]
    return queries.tagged_trace_ids(conn, filters, keys, start_ns, end_ns, limit)


def _json(text: Any, default: Any) -> Any:
    if isinstance(text, (dict, list)):
        return text
    try:
        return json.loads(text) if text else default
    except (TypeError, ValueError):
        return default


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def summarize_agent_trace(trace_id: str, rows: list[dict[str, Any]], trace_row: dict[str, Any] | None,
                          prices: pricing.PriceTable) -> dict[str, Any]:
    """One trace's AI view from its spans (rows with decoded attributes), in start order."""
    rows = sorted(rows, key=lambda r: r["start_ns"])
    phases, tools, llms = [], [], []
    agent = user_id = session_id = None
    run_failed = None
    for row in rows:
        attrs = row["attributes"]
        duration = _ms(row["end_ns"] - row["start_ns"])
        error = row["status_code"] == "error"
        operation = attrs.get("gen_ai.operation.name")
        agent = agent or attrs.get("gen_ai.agent.name")
        user_id = user_id or attrs.get("user.id")
        session_id = session_id or attrs.get("session.id") or attrs.get("gen_ai.conversation.id")
        if operation == "invoke_agent" and run_failed is None:
            run_failed = error
        if "contrail.ai.phase" in attrs:
            phases.append({"name": str(attrs["contrail.ai.phase"]), "duration_ms": duration, "error": error,
                           "span_id": row["span_id"]})
        elif operation == "execute_tool":
            tools.append({"name": str(attrs.get("gen_ai.tool.name") or row["name"]), "duration_ms": duration,
                          "success": not error, "span_id": row["span_id"]})
        else:
            call = llm_call_of({**row, "attributes": attrs})
            if call is None:
                continue
            llms.append({
                "model": call["model"] or None, "provider": call["provider"] or None,
                "purpose": attrs.get("contrail.ai.purpose"),
                "input_tokens": call["input_tokens"], "output_tokens": call["output_tokens"],
                "cache_read_tokens": call["cache_read_tokens"],
                "cache_hit": attrs.get("contrail.ai.cache_hit", True if call["cache_read_tokens"] else None),
                "duration_ms": duration, "success": not error,
                "cost": round(prices.cost(call["model"], call["input_tokens"], call["output_tokens"],
                                          call["cache_read_tokens"]), 6),
                "priced": prices.is_priced(call["model"]),
                "span_id": row["span_id"],
            })
    if trace_row is not None:
        start_ns, duration_ms = int(trace_row["start_ns"]), _ms(int(trace_row["duration_ns"]))
        error_count = int(trace_row["error_count"])
    else:  # not finalized yet: derive from the AI spans at hand
        start_ns = min((r["start_ns"] for r in rows), default=0)
        duration_ms = _ms(max((r["end_ns"] for r in rows), default=start_ns) - start_ns)
        error_count = sum(1 for r in rows if r["status_code"] == "error")
    return {
        "trace_id": trace_id,
        "start_time": iso_time(start_ns),
        "start_ns": start_ns,
        "duration_ms": duration_ms,
        "agent": agent, "user_id": user_id, "session_id": session_id,
        "success": (not run_failed) if run_failed is not None else error_count == 0,
        "finalized": trace_row is not None,
        "phases": phases,
        "tool_calls": tools,
        "llm_calls": llms,
        "totals": {
            "input_tokens": sum(c["input_tokens"] for c in llms),
            "output_tokens": sum(c["output_tokens"] for c in llms),
            "cache_read_tokens": sum(c["cache_read_tokens"] for c in llms),
            "cost": round(sum(c["cost"] for c in llms), 6),
            "llm_calls": len(llms),
            "tool_calls": len(tools),
            "failed_tool_calls": sum(1 for c in tools if not c["success"]),
        },
    }


@bp.get("/traces")
def agent_traces():
    filters = {}
    for name, key in FILTER_TAGS.items():
        value = params.text(name, max_length=255)
        if value is not None:
            filters[key] = value
    limit = params.integer("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    start_ns, end_ns = params.time_range()
    prices = _prices()
    with current_resources().engine().connect() as conn:
        ids = _matching_trace_ids(conn, filters, start_ns, end_ns, limit)
        by_trace: dict[str, list] = {trace_id: [] for trace_id in ids}
        trace_rows: dict[str, dict] = {}
        if ids:
            for trace_id, found in block_store.trace_spans(conn, ids).items():
                for span in found:
                    attrs = _json(span["attributes"], {})
                    if isinstance(attrs, dict) and any(key.startswith(AI_MARKERS) for key in attrs):
                        by_trace[trace_id].append({key: span[key] for key in _AI_SPAN_FIELDS} | {"attributes": attrs})
            for trace_id, row in block_store.trace_rows(conn, ids, ("trace_id", "start_ns", "duration_ns",
                                                                    "error_count")).items():
                trace_rows[trace_id] = dict(row)
    items = [summarize_agent_trace(trace_id, by_trace[trace_id], trace_rows.get(trace_id), prices)
             for trace_id in ids if by_trace[trace_id]]
    items.sort(key=lambda item: (-item["start_ns"], item["trace_id"]))
    return jsonify({"traces": items, "count": len(items), "limit": limit,
                    "filters": {name: filters.get(key) for name, key in FILTER_TAGS.items()},
                    "price_source": prices.source})


# --------------------------------------------------------------------------- /ai/usage


def _default_step(span_s: float) -> int:
    step = max(60, int(math.ceil(span_s / TARGET_POINTS / 60.0)) * 60)
    return int(math.ceil(step / 3600.0)) * 3600 if step > 3600 else step


def usage_step_s(start_ns: int, end_ns: int) -> int:
    """The ``step`` parameter of a usage series over ``[start_ns, end_ns]`` in seconds (whole minutes, at
    most MAX_POINTS points; a step fitting the range when absent)."""
    step_ns = params.duration_ns("step", default_unit="s")
    span_s = max(1.0, (end_ns - start_ns) / 1e9)
    step_s = _default_step(span_s) if step_ns is None else int(step_ns // 1_000_000_000)
    if step_s < 60 or step_s % 60:
        raise bad_parameter("step", "step must be a whole number of minutes (60s, 5m, 1h)")
    if span_s / step_s > MAX_POINTS:
        raise bad_parameter("step", f"step is too small for this range (at most {MAX_POINTS} points)")
    return step_s


@bp.get("/usage")
def usage():
    group_by = params.choice("group_by", tuple(GROUP_BY), "model")
    start_ns, end_ns = params.time_range(default_lookback_s=DEFAULT_USAGE_LOOKBACK_S)
    start_ns, end_ns = params.closed_range(start_ns, end_ns, DEFAULT_USAGE_LOOKBACK_S)
    step_s = usage_step_s(start_ns, end_ns)
    prices = _prices()
    with current_resources().engine().connect() as conn:
        result = query_usage(conn, start_ns, end_ns, group_by=group_by, step_s=step_s, prices=prices)
    result["start_time"], result["end_time"] = iso_time(start_ns), iso_time(end_ns)
    result["price_source"] = prices.source
    return jsonify(result)


# --------------------------------------------------------------------------- /ai/bottlenecks


@bp.get("/bottlenecks")
def bottlenecks():
    recent_ns = params.duration_ns("recent", default_unit="s")
    baseline_ns = params.duration_ns("baseline", default_unit="s")
    recent_s = 900 if recent_ns is None else int(recent_ns // 1_000_000_000)
    baseline_s = 86400 if baseline_ns is None else int(baseline_ns // 1_000_000_000)
    if not 60 <= recent_s <= 7 * 86400:
        raise bad_parameter("recent", "recent must be between 1m and 7d")
    if not 60 <= baseline_s <= 30 * 86400:
        raise bad_parameter("baseline", "baseline must be between 1m and 30d")
    limit = params.integer("limit", 50, minimum=1, maximum=500)
    now_ns = params.timestamp_ns("at")
    if now_ns is None:
        import time

        now_ns = time.time_ns()
    from collector_worker.bottleneck_causes import add_causes
    from collector_worker.bottlenecks import find_bottlenecks

    with current_resources().engine().connect() as conn:
        hints = find_bottlenecks(conn, now_ns, recent_s=recent_s, baseline_s=baseline_s, limit=limit)
        add_causes(conn, hints, now_ns, recent_s)
    return jsonify({"at": iso_time(now_ns), "at_ns": now_ns, "recent_s": recent_s, "baseline_s": baseline_s,
                    "bottlenecks": hints})
