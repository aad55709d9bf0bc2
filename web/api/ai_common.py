"""What the AI blueprints (``ai``, ``ai_sessions``) share: the price table a request prices with, the AI
spans of a stored trace, the agent-run summary built from them, and the step of a usage series."""

from __future__ import annotations

import json
import math
from typing import Any

from collector_worker import pricing
from collector_worker.llm_usage import llm_call_of
from collector_worker.storage.queries import iso_time

from .. import params
from ..errors import ApiError, bad_parameter
from ..resources import current_settings

AI_MARKERS = ("gen_ai.", "contrail.ai.", "llm.", "openinference.")  # attribute key prefixes of AI spans
AI_SPAN_FIELDS = ("trace_id", "span_id", "name", "start_ns", "end_ns", "status_code")  # what a summary reads
MAX_POINTS = 2000  # of a usage series
TARGET_POINTS = 120  # of a usage series whose step the request leaves open


def price_table() -> pricing.PriceTable:
    """The configured LLM price table; a 503 when it is unusable (every cost would be wrong)."""
    try:
        return pricing.configure(current_settings().price_table)
    except pricing.PriceTableError as exc:
        raise ApiError(503, f"LLM price table unusable: {exc}") from None


# --------------------------------------------------------------------------- AI spans and runs


def span_attributes(span: dict[str, Any]) -> dict[str, Any]:
    """A stored span's attributes as a dict (``{}`` when they are not a JSON object)."""
    attributes = _json(span["attributes"], {})
    return attributes if isinstance(attributes, dict) else {}


def ai_span(span: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any] | None:
    """What :func:`summarize_agent_trace` reads of a stored span, or None when no attribute marks it an AI span."""
    if not any(key.startswith(AI_MARKERS) for key in attributes):
        return None
    return {key: span[key] for key in AI_SPAN_FIELDS} | {"attributes": attributes}


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


# --------------------------------------------------------------------------- usage series


def default_step_s(span_s: float) -> int:
    """The step of a usage series over ``span_s`` seconds when the request gives none: about TARGET_POINTS
    points, in whole minutes (whole hours beyond an hour)."""
    step = max(60, int(math.ceil(span_s / TARGET_POINTS / 60.0)) * 60)
    return int(math.ceil(step / 3600.0)) * 3600 if step > 3600 else step


def usage_step_s(start_ns: int, end_ns: int) -> int:
    """The ``step`` parameter of a usage series over ``[start_ns, end_ns]`` in seconds (whole minutes, at
    most MAX_POINTS points; a step fitting the range when absent)."""
    step_ns = params.duration_ns("step", default_unit="s")
    span_s = max(1.0, (end_ns - start_ns) / 1e9)
    step_s = default_step_s(span_s) if step_ns is None else int(step_ns // 1_000_000_000)
    if step_s < 60 or step_s % 60:
        raise bad_parameter("step", "step must be a whole number of minutes (60s, 5m, 1h)")
    if span_s / step_s > MAX_POINTS:
        raise bad_parameter("step", f"step is too small for this range (at most {MAX_POINTS} points)")
    return step_s
