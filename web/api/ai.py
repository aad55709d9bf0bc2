"""AI-agent views: agent runs with their phases, tool and LLM calls; token usage and cost; bottleneck hints."""

from __future__ import annotations

from flask import Blueprint, jsonify

from collector_worker.llm_usage import GROUP_BY, query_usage
from collector_worker.storage import block_store, queries
from collector_worker.storage.queries import iso_time

from .. import params
from ..errors import bad_parameter
from ..resources import current_resources
from .ai_common import ai_span, price_table, span_attributes, summarize_agent_trace, usage_step_s

bp = Blueprint("ai", __name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 200
DEFAULT_USAGE_LOOKBACK_S = 86400.0
# trace_tags keys behind the filters of /ai/traces
FILTER_TAGS = {"user_id": "user.id", "session_id": "session.id", "agent": "gen_ai.agent.name"}


# --------------------------------------------------------------------------- /ai/traces


def _matching_trace_ids(conn, filters: dict[str, str], start_ns: int | None, end_ns: int | None,
                        limit: int) -> list[str]:
    """Newest traces that have AI spans and every requested user/session/agent tag."""
    keys = [] if filters else ["gen_ai.operation.name", "gen_ai.agent.name", "llm.model_name"]
    return queries.tagged_trace_ids(conn, filters, keys, start_ns, end_ns, limit)


@bp.get("/traces")
def agent_traces():
    filters = {}
    for name, key in FILTER_TAGS.items():
        value = params.text(name, max_length=255)
        if value is not None:
            filters[key] = value
    limit = params.integer("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    start_ns, end_ns = params.time_range()
    prices = price_table()
    with current_resources().engine().connect() as conn:
        ids = _matching_trace_ids(conn, filters, start_ns, end_ns, limit)
        by_trace: dict[str, list] = {trace_id: [] for trace_id in ids}
        trace_rows: dict[str, dict] = {}
        if ids:
            for trace_id, found in block_store.trace_spans(conn, ids).items():
                for span in found:
                    ai_row = ai_span(span, span_attributes(span))
                    if ai_row is not None:
                        by_trace[trace_id].append(ai_row)
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


@bp.get("/usage")
def usage():
    group_by = params.choice("group_by", tuple(GROUP_BY), "model")
    start_ns, end_ns = params.time_range(default_lookback_s=DEFAULT_USAGE_LOOKBACK_S)
    start_ns, end_ns = params.closed_range(start_ns, end_ns, DEFAULT_USAGE_LOOKBACK_S)
    step_s = usage_step_s(start_ns, end_ns)
    prices = price_table()
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
