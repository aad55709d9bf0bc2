"""The OpenAPI 3.1 description of the Contrail HTTP API, served at /api/v1/openapi.json.

Schemas are JSON Schema 2020-12 (OpenAPI 3.1), so tests validate live
responses against them with ``jsonschema`` directly.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from tracer.codec import KINDS

NULLABLE_STR = {"type": ["string", "null"]}
INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}
OBJ = {"type": "object"}
TRACE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
SPAN_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None, extra: bool = True) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})},
            "additionalProperties": extra}


NULLABLE_INT = {"type": ["integer", "null"]}
STRS = {"type": "array", "items": STR}
_MESSAGES = {"type": ["array", "null"], "items": _obj({"role": STR, "parts": {"type": "array", "items": OBJ}},
                                                        {"finish_reason": STR})}
_SESSION_TOTALS = _obj({
    "runs": INT, "failed_runs": INT, "llm_calls": INT, "failed_llm_calls": INT, "tool_calls": INT,
    "failed_tool_calls": INT, "errors": INT, "input_tokens": INT, "output_tokens": INT, "cache_read_tokens": INT,
    "cost": NUM, "duration_ms": NUM, "unpriced_models": STRS})
_SESSION = {
    "session_id": STR, "user_ids": STRS, "agents": STRS, "first_time": NULLABLE_STR, "first_ns": NULLABLE_INT,
    "last_time": NULLABLE_STR, "last_ns": NULLABLE_INT, "totals": _SESSION_TOTALS, "runs_capped": {"type": "boolean"}}
# /api/v1/ai/sessions, /ai/users and /ai/llm-calls (web/api/ai_sessions.py).
AI_SESSION_SCHEMAS: dict[str, Any] = {
    "AgentRun": _obj({
        "trace_id": TRACE_ID, "start_time": NULLABLE_STR, "start_ns": INT, "duration_ms": NUM,
        "agent": NULLABLE_STR, "user_id": NULLABLE_STR, "session_id": NULLABLE_STR, "success": {"type": "boolean"},
        "finalized": {"type": "boolean"}, "phases": {"type": "array", "items": OBJ},
        "tool_calls": {"type": "array", "items": OBJ}, "llm_calls": {"type": "array", "items": OBJ}, "totals": OBJ,
        "errors": {"type": "array", "items": _obj({"span_id": SPAN_ID, "name": STR, "service": STR,
                                                   "message": NULLABLE_STR})},
        "steps": {"type": "array", "items": _obj({"kind": {"enum": ["phase", "tool", "llm"]}, "span_id": SPAN_ID,
                                                  "offset_ms": NUM, "duration_ms": NUM})}}),
    "AiSession": _obj({**_SESSION, "total_runs": INT, "total_capped": {"type": "boolean"},
                       "runs": {"type": "array", "items": _ref("AgentRun")}, "limit": INT,
                       "next_cursor": NULLABLE_STR, "price_source": STR}),
    "AiSessionList": _obj({"sessions": {"type": "array", "items": _obj(_SESSION)}, "count": INT, "limit": INT,
                           "next_cursor": NULLABLE_STR, "filters": _obj({"user_id": NULLABLE_STR,
                                                                          "agent": NULLABLE_STR}),
                           "start_time": NULLABLE_STR, "end_time": NULLABLE_STR, "price_source": STR}),
    "AiUserList": _obj({"users": {"type": "array", "items": _obj({
        "user_id": STR, "calls": INT, "errors": INT, "input_tokens": INT, "output_tokens": INT,
        "cache_read_tokens": INT, "cost": NUM, "duration_ms": NUM, "last_active": NULLABLE_STR})},
        "page": INT, "limit": INT, "total": INT, "pages": INT, "start_time": NULLABLE_STR,
        "end_time": NULLABLE_STR, "price_source": STR}),
    "AiUser": _obj({"user_id": STR, "start_time": NULLABLE_STR, "end_time": NULLABLE_STR, "step_s": INT,
                    "totals": OBJ, "models": {"type": "array", "items": OBJ}, "series": {"type": "array", "items": OBJ},
                    "traces": INT, "traces_capped": {"type": "boolean"}, "last_trace_time": NULLABLE_STR,
                    "unpriced_models": STRS, "price_source": STR}, {"price_hint": STR}),
    "LlmCall": _obj({
        "trace_id": TRACE_ID, "span_id": SPAN_ID, "parent_span_id": NULLABLE_STR, "service": STR, "name": STR,
        "start_time": NULLABLE_STR, "start_ns": INT, "duration_ms": NUM, "status": {"enum": ["unset", "ok", "error"]},
        "status_message": NULLABLE_STR, "operation": NULLABLE_STR, "model": NULLABLE_STR,
        "request_model": NULLABLE_STR, "response_model": NULLABLE_STR, "provider": NULLABLE_STR,
        "purpose": NULLABLE_STR, "user_id": NULLABLE_STR, "session_id": NULLABLE_STR, "agent": NULLABLE_STR,
        "parameters": OBJ, "finish_reasons": {"type": "array"},
        "usage": _obj({"input_tokens": INT, "output_tokens": INT, "cache_read_tokens": INT, "total_tokens": INT}),
        "cost": NUM, "priced": {"type": "boolean"}, "price_source": STR,
        "content": _obj({"recorded": {"type": "boolean"}, "input": {"type": "boolean"},
                         "output": {"type": "boolean"}, "truncated": {"type": "boolean"}, "note": STR}),
        "system_instructions": _MESSAGES, "input_messages": _MESSAGES, "output_messages": _MESSAGES,
        "tool_calls": {"type": "array", "items": _obj({"id": {}, "name": {}, "arguments": {}})},
        "tool_definitions": {"type": ["array", "null"]}}, {"price_hint": STR}),
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _obj({"code": {"enum": ["bad_parameter", "not_found", "unauthorized", "forbidden",
                                                     "too_large", "internal", "method_not_allowed",
                                                     "unsupported_media_type", "unavailable"]},
                                  "message": STR}, {"parameter": STR}, extra=False)}, extra=False),
    "TraceSummary": _obj({
        "trace_id": TRACE_ID, "root_service": STR, "root_operation": STR, "start_time": NULLABLE_STR,
        "start_ns": INT, "duration_ms": NUM, "span_count": INT, "services": {"type": "array", "items": STR},
        "error_count": INT, "incomplete": {"type": "boolean"}, "clock_skew_ms": NUM}),
    "Event": _obj({"name": NULLABLE_STR, "time": NULLABLE_STR, "time_ns": INT, "attributes": OBJ}),
    "Link": _obj({"trace_id": NULLABLE_STR, "span_id": NULLABLE_STR, "attributes": OBJ}),
    "Span": _obj({
        "span_id": SPAN_ID, "parent_span_id": {"type": ["string", "null"]}, "service": STR, "name": STR,
        "kind": {"enum": list(KINDS)}, "start_time": NULLABLE_STR,
        "start_ns": INT, "end_ns": INT, "duration_ms": NUM, "status": {"enum": ["unset", "ok", "error"]},
        "status_message": NULLABLE_STR, "attributes": OBJ, "resource": OBJ,
        "events": {"type": "array", "items": _ref("Event")}, "links": {"type": "array", "items": _ref("Link")},
        "depth": INT, "self_time_ms": NUM, "critical_path": {"type": "boolean"}}),
    "Warning": _obj({"code": STR, "message": STR}, {"span_id": NULLABLE_STR}),
    "Trace": _obj({"trace_id": TRACE_ID, "summary": _ref("TraceSummary"),
                   "spans": {"type": "array", "items": _ref("Span")},
                   "warnings": {"type": "array", "items": _ref("Warning")},
                   "total_spans": INT, "offset": INT, "limit": INT, "truncated": {"type": "boolean"},
                   "next_offset": {"type": ["integer", "null"]}}),
    "TraceList": _obj({"traces": {"type": "array", "items": _ref("TraceSummary")}, "total": INT,
                       "next_cursor": NULLABLE_STR}, {"total_capped": {"type": "boolean"}}),
    "TimelineEvent": _obj({"type": {"enum": ["span_start", "span_end", "event", "error"]}, "time_ns": INT,
                           "offset_ms": NUM, "span_id": STR, "service": STR, "name": STR},
                          {"time": NULLABLE_STR}),
    "Timeline": _obj({"trace_id": TRACE_ID, "summary": _ref("TraceSummary"),
                      "events": {"type": "array", "items": _ref("TimelineEvent")}}),
    "Backlinks": _obj({"trace_id": TRACE_ID, "linked_from": {"type": "array", "items": _obj({
        "trace_id": TRACE_ID, "span_id": SPAN_ID, "service": STR, "name": STR})}}),
    "OperationDiff": _obj({
        "service": STR, "name": STR, "presence": {"enum": ["both", "only_a", "only_b"]}, "count_a": INT,
        "count_b": INT, "duration_ms_a": NUM, "duration_ms_b": NUM, "self_time_ms_a": NUM, "self_time_ms_b": NUM,
        "delta_ms": NUM, "self_delta_ms": NUM}),
    "Comparison": _obj({
        "a": _ref("TraceSummary"), "b": _ref("TraceSummary"), "duration_delta_ms": NUM, "span_count_delta": INT,
        "same_root": {"type": "boolean"}, "operations": {"type": "array", "items": _ref("OperationDiff")},
        "structure": _obj({k: {"type": "array", "items": _ref("OperationDiff")}
                           for k in ("only_in_a", "only_in_b", "count_changed")})}),
    "ServiceList": _obj({"services": {"type": "array", "items": _obj(
        {"name": STR, "operation_count": INT}, {"trace_count": INT})}}),
    "OperationList": _obj({"service": STR, "operations": {"type": "array", "items": _obj(
        {"name": STR, "count": INT}, {"error_count": INT, "span_kind": STR})}}),
    "Dependencies": _obj({"start_ns": INT, "end_ns": INT, "dependencies": {"type": "array", "items": _obj({
        "caller": STR, "callee": STR, "kind": STR, "calls": INT, "errors": INT, "error_rate": NUM,
        "avg_ms": NUM})}}),
    "Stats": _obj({"start_ns": INT, "end_ns": INT, "step_s": INT, "scope": {"enum": ["span", "trace"]},
                   "operations": {"type": "array", "items": _obj(
                       {"service": STR, "operation": STR, "count": INT, "error_count": INT, "error_rate": NUM},
                       {"throughput_per_s": NUM, "p50_ms": NUM, "p90_ms": NUM, "p95_ms": NUM, "p99_ms": NUM})},
                   "series": {"type": "array", "items": OBJ}}),
    "MetricList": _obj({"start_ns": INT, "end_ns": INT, "metrics": {"type": "array", "items": _obj({
        "name": STR, "kind": {"enum": ["counter", "gauge", "histogram"]}, "unit": STR,
        "description": NULLABLE_STR, "services": {"type": "array", "items": STR},
        "attributes": {"type": "object", "additionalProperties": {"type": "array", "items": STR}},
        "series": INT})}}),
    "FlameGraph": _obj({
        "stacks": {"type": "array", "items": _obj({"stack": STR, "samples": INT})},
        "functions": {"type": "array", "items": _obj({
            "function": STR, "self_samples": INT, "total_samples": INT, "self_pct": NUM, "total_pct": NUM})}}),
    "TraceProfiles": _obj({"trace_id": TRACE_ID, "profiles": {"type": "array", "items": {"allOf": [
        _ref("FlameGraph"), _obj({
            "trace_id": TRACE_ID, "span_id": SPAN_ID, "name": STR, "mode": {"enum": ["explicit", "slow"]},
            "service": STR, "operation": NULLABLE_STR, "start_ns": INT, "duration_ms": NUM, "interval_ms": NUM,
            "samples": INT, "dropped": INT})]}}}),
    "ProfileAggregate": {"allOf": [_ref("FlameGraph"), _obj({
        "operation": NULLABLE_STR, "service": NULLABLE_STR, "start_ns": INT, "end_ns": INT, "profiles": INT,
        "samples": INT, "dropped": INT, "traces": {"type": "array", "items": TRACE_ID}})]},
    "MetricPoints": _obj({
        "name": STR, "kind": {"enum": ["counter", "gauge", "histogram", None]}, "unit": NULLABLE_STR,
        "service": NULLABLE_STR, "filters": {"type": "object", "additionalProperties": STR},
        "start_ns": INT, "end_ns": INT, "step_s": INT, "resolution_s": {"enum": [60, 3600]}, "series": INT,
        "points": {"type": "array", "items": _obj(
            {"time": STR, "time_ns": INT, "exemplars": {"type": "array", "items": _obj(
                {"trace_id": TRACE_ID, "span_id": SPAN_ID, "value": NUM, "time_ns": INT})}},
            {"sum": NUM, "rate": NUM, "count": INT, "last": {"type": ["number", "null"]},
             "min": {"type": ["number", "null"]}, "max": {"type": ["number", "null"]},
             "mean": {"type": ["number", "null"]}, "p50": {"type": ["number", "null"]},
             "p95": {"type": ["number", "null"]}, "p99": {"type": ["number", "null"]}})}}),
    "Health": _obj({"status": STR}),
    "Ready": _obj({"status": {"enum": ["ready", "not_ready"]}, "checks": _obj({"database": STR, "redis": STR})}),
    "Status": _obj({"stream": OBJ, "tracers": OBJ, "collectors": OBJ, "database": STR, "last_finalized_ns": {"type": ["integer", "null"]},
                    "last_finalized_time": NULLABLE_STR, "now_ns": INT},
                   {"storage": {"type": ["object", "null"], "required": ["tables", "total_bytes", "bytes_source"],
                                "properties": {
                                    "tables": {"type": "array", "items": _obj({
                                        "name": STR, "rows": INT, "bytes": {"type": ["integer", "null"]},
                                        "oldest_ns": {"type": ["integer", "null"]},
                                        "newest_ns": {"type": ["integer", "null"]}})},
                                    "total_bytes": INT,
                                    "bytes_source": {"enum": ["dbstat", "page_count", "pg_total_relation_size"]}}}}),
    "TracerReports": _obj({"tracers": {"type": "array", "items": _obj({
        "instance": STR, "service": STR, "host": STR, "pid": INT, "time_ns": INT, "spans_started": INT,
        "spans_exported": INT, "spans_dropped": INT, "spans_dropped_queue_full": INT,
        "spans_dropped_spool_full": INT, "spans_sampled_out": INT, "spans_spooled": INT, "export_errors": INT,
        "spool_pending": {"type": "boolean"}},
        {"last_export_error": NULLABLE_STR, "spans_dropped_spool_error": INT, "spool_records_corrupt": INT})}}),
    "AgentTraces": _obj({"traces": {"type": "array", "items": _obj({
        "trace_id": TRACE_ID, "start_ns": INT, "duration_ms": {"type": ["number", "null"]},
        "agent": NULLABLE_STR, "success": {"type": "boolean"},
        "phases": {"type": "array", "items": OBJ}, "tool_calls": {"type": "array", "items": OBJ},
        "llm_calls": {"type": "array", "items": OBJ}, "totals": OBJ},
        {"start_time": NULLABLE_STR, "user_id": NULLABLE_STR, "session_id": NULLABLE_STR,
         "finalized": {"type": "boolean"}})},
        "count": INT, "limit": INT, "filters": OBJ, "price_source": STR}),
    "LlmUsage": _obj({"group_by": {"enum": ["model", "user", "agent", "service"]}, "start_ns": INT, "end_ns": INT,
                      "step_s": INT, "totals": OBJ, "groups": {"type": "array", "items": OBJ},
                      "series": {"type": "array", "items": OBJ},
                      "unpriced_models": {"type": "array", "items": STR}, "price_source": STR},
                     {"start_time": NULLABLE_STR, "end_time": NULLABLE_STR, "resolution_s": INT}),
    **AI_SESSION_SCHEMAS,
    "Bottlenecks": _obj({"at": STR, "at_ns": INT, "recent_s": INT, "baseline_s": INT,
                         "bottlenecks": {"type": "array", "items": _obj({
                             "service": STR, "operation": STR, "flag": {"enum": ["slower", "more_errors"]},
                             "likely_cause": NULLABLE_STR,
                             "causes": {"type": "array", "items": _obj({
                                 "kind": {"enum": ["queue_wait", "llm_call", "child", "self_time", "hot_function",
                                                   "error"]},
                                 "share": {"type": ["number", "null"]}, "text": STR})}})}}),
}


def _param(name: str, description: str, schema: dict | None = None, where: str = "query", required: bool = False,
           explode: bool | None = None) -> dict[str, Any]:
    out = {"name": name, "in": where, "description": description, "required": required or where == "path",
           "schema": schema or STR}
    if explode is not None:
        out["explode"] = explode
    return out


TRACE_ID_PARAM = _param("trace_id", "32 lowercase hex digits.", STR, where="path")
TIME_PARAMS = [
    _param("start", "ISO-8601 time (2026-01-31T12:00:00Z) or unix nanoseconds."),
    _param("end", "ISO-8601 time or unix nanoseconds."),
    _param("lookback", "Range ending at `end` (or now): 15m, 1h, 7d. Not with `start`."),
]
SEARCH_PARAMS = [
    _param("service", "Traces with a span of this service."),
    _param("operation", "Traces with a span of this operation (of `service` when given)."),
    _param("tag", "Repeatable: key=value, key>number, key<number.", {"type": "array", "items": STR}, explode=True),
    _param("status", "error: traces with an error span; ok: without.", {"enum": ["error", "ok"]}),
    _param("min_duration", "Whole-trace duration at least: 250ms, 1.5s (bare numbers are ms)."),
    _param("max_duration", "Whole-trace duration at most."),
    _param("services", "Traces touching all of these services (comma-separated or repeated).",
           {"type": "array", "items": STR}, explode=True),
    _param("kind", "Traces holding at least one span of this kind.",
           {"enum": list(KINDS)}),
    *TIME_PARAMS,
    _param("sort", "Result order.", {"enum": ["start_desc", "start_asc", "duration_desc", "duration_asc"],
                                     "default": "start_desc"}),
    _param("limit", "Page size, 1..1000.", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}),
    _param("cursor", "next_cursor of the previous page (same sort)."),
]


def _responses(ok: str | None, *errors: int, ok_content: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ok is not None:
        out["200"] = {"description": "OK", "content": {"application/json": {"schema": _ref(ok)}}}
    elif ok_content is not None:
        out["200"] = {"description": "OK", "content": ok_content}
    descriptions = {400: "Bad parameter", 401: "Token missing or invalid", 403: "Token lacks the scope",
                    404: "Unknown id", 413: "Body too large", 415: "Unsupported media type",
                    503: "Dependency unavailable"}
    for status in errors:
        out[str(status)] = {"description": descriptions[status],
                            "content": {"application/json": {"schema": _ref("Error")}}}
    return out


def _get(summary: str, ok: str | None, parameters: list, *errors: int, ok_content: dict | None = None):
    return {"get": {"summary": summary, "parameters": parameters,
                    "responses": _responses(ok, 401, 403, *errors, ok_content=ok_content)}}


_CURSOR = _param("cursor", "next_cursor of the previous page, unchanged.")
AI_SESSION_PATHS: dict[str, Any] = {
    "/api/v1/ai/sessions": _get(
        "Sessions (session.id) with runs in the window, latest run first, with their totals; a page may hold fewer "
        "than limit sessions: continue while next_cursor is set", "AiSessionList", [
            _param("user_id", "Only sessions with runs of this user (user.id)."),
            _param("agent", "Only sessions with runs of this agent (gen_ai.agent.name)."),
            _param("limit", "Sessions per page, 1..100.", {"type": "integer", "minimum": 1, "maximum": 100,
                                                           "default": 20}),
            _CURSOR, *TIME_PARAMS], 400),
    "/api/v1/ai/sessions/{session_id}": _get(
        "One session: its agent runs oldest first with phases, tool and LLM calls (steps in start order), "
        "tokens, cost and errors; totals over the whole session", "AiSession", [
            _param("session_id", "The session id (session.id).", where="path"),
            _param("limit", "Runs per page, 1..200.", {"type": "integer", "minimum": 1, "maximum": 200,
                                                       "default": 50}),
            _CURSOR, *TIME_PARAMS], 400, 404),
    "/api/v1/ai/users": _get(
        "Users (user.id) with LLM calls in the window, most expensive first, paged by page and limit",
        "AiUserList", [
            _param("page", "Page number from 1.", {"type": "integer", "minimum": 1, "default": 1}),
            _param("limit", "Users per page, 1..200.", {"type": "integer", "minimum": 1, "maximum": 200,
                                                        "default": 50}),
            *TIME_PARAMS], 400),
    "/api/v1/ai/users/{user_id}": _get(
        "One user's LLM usage and cost over time by model (default window 7d)", "AiUser", [
            _param("user_id", "The user id (user.id).", where="path"),
            _param("step", "Series step, whole minutes (default about 120 points)."), *TIME_PARAMS], 400, 404),
    "/api/v1/ai/llm-calls/{trace_id}/{span_id}": _get(
        "One LLM call: prompt messages, completion, requested tool calls, parameters, tokens, latency and cost; "
        "content only when it was recorded", "LlmCall", [
            TRACE_ID_PARAM, _param("span_id", "16 lowercase hex digits.", where="path")], 400, 404),
}

PATHS: dict[str, Any] = {
    "/api/v1/traces": _get("Search traces", "TraceList", SEARCH_PARAMS, 400),
    "/api/v1/traces/{trace_id}": _get(
        "One trace; more than limit spans are answered in pages (truncated, total_spans, next_offset)", "Trace",
        [TRACE_ID_PARAM,
         _param("offset", "First span of the page, in start order.", {"type": "integer", "minimum": 0, "default": 0}),
         _param("limit", "Spans per page.", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10000})],
        400, 404),
    "/api/v1/traces/{trace_id}/timeline": _get("The trace as time-ordered events", "Timeline",
                                               [TRACE_ID_PARAM], 400, 404),
    "/api/v1/traces/{trace_id}/backlinks": _get("Traces whose spans link to this trace", "Backlinks",
                                                [TRACE_ID_PARAM], 400, 404),
    "/api/v1/traces/{trace_id}/export": _get(
        "Export the trace", None,
        [TRACE_ID_PARAM,
         _param("format", "Export format.", {"enum": ["json", "otlp", "mermaid", "text"], "default": "json"}),
         _param("budget", "Size bound of the text format.", {"type": "integer", "minimum": 1}),
         _param("budget_unit", "Unit of budget.", {"enum": ["chars", "tokens"], "default": "chars"}),
         _param("diagram", "Mermaid diagram: calls between services, or the span tree.",
                {"enum": ["sequence", "flowchart"], "default": "sequence"}),
         _param("download", "0 to omit Content-Disposition.", {"enum": ["0", "1"]})],
        400, 404, ok_content={"application/json": {"schema": OBJ}, "text/plain": {"schema": STR},
                              "text/vnd.mermaid": {"schema": STR}}),
    "/api/v1/traces/compare": _get("Compare two traces of the same flow", "Comparison",
                                   [_param("a", "Trace id.", required=True), _param("b", "Trace id.", required=True)],
                                   400, 404),
    "/api/v1/services": _get("Services", "ServiceList", []),
    "/api/v1/services/{service}/operations": _get("Operations of a service", "OperationList",
                                                  [_param("service", "Service name.", where="path")], 400, 404),
    "/api/v1/dependencies": _get("Service dependency edges", "Dependencies", TIME_PARAMS, 400, 503),
    "/api/v1/stats": _get("Statistics per operation and their time series", "Stats", [
        _param("service", "Only this service."), _param("operation", "Only this operation."),
        _param("scope", "span: every span; trace: per trace root.", {"enum": ["span", "trace"], "default": "span"}),
        _param("group_by", "operation: a row per service and operation; service: the operations of each service "
               "merged (operation is \"\").", {"enum": ["operation", "service"], "default": "operation"}),
        _param("step", "Series step, whole minutes: 60s, 5m, 1h."), *TIME_PARAMS], 400, 503),
    "/api/v1/metrics": _get("Application metric names with their kind, unit, services and attribute values",
                            "MetricList", TIME_PARAMS, 400, 503),
    "/api/v1/metrics/{name}": _get(
        "One application metric over time: sum and rate (counters), last/min/max/mean (gauges), count, mean and "
        "p50/p95/p99 (histograms); any other query parameter filters by that attribute", "MetricPoints", [
            _param("name", "Metric name.", where="path"), _param("service", "Only this service."),
            _param("step", "Point step, whole minutes: 60s, 5m, 1h (hourly rollups for whole hours)."),
            *TIME_PARAMS], 400, 503),
    "/api/v1/traces/{trace_id}/profiles": _get(
        "The sampling profiles of a trace's spans, each with its flame graph (folded stacks, root first) and top "
        "functions", "TraceProfiles",
        [TRACE_ID_PARAM, _param("span_id", "Only the profiles of this span.")], 400),
    "/api/v1/profiles": _get(
        "The profiles of an operation and/or service in a window merged into one flame graph and a top-functions "
        "table (self and total samples)", "ProfileAggregate", [
            _param("operation", "Only profiles of spans of this operation."), _param("service", "Only this service."),
            _param("limit", "The latest this many profiles count, 1..5000.",
                   {"type": "integer", "minimum": 1, "maximum": 5000, "default": 1000}),
            *TIME_PARAMS], 400, 503),
    "/api/v1/status": _get("Collector health for the dashboard", "Status", [
        _param("storage", "true adds storage statistics (rows counted on each call: slow on a large database).",
               {"enum": ["true", "false"], "default": "false"})], 400),
    "/api/v1/tracers": _get("Every tracing process's latest counters", "TracerReports", [], 503),
    "/api/v1/ai/traces": _get("Agent runs with their phases, tool calls and LLM calls, newest first",
                              "AgentTraces", [
                                  _param("user_id", "Only traces of this user (user.id)."),
                                  _param("session_id", "Only traces of this session (session.id)."),
                                  _param("agent", "Only traces of this agent (gen_ai.agent.name)."),
                                  _param("limit", "1..200.", {"type": "integer", "minimum": 1, "maximum": 200,
                                                              "default": 20}),
                                  *TIME_PARAMS], 400),
    "/api/v1/ai/usage": _get("LLM calls, tokens and cost by model, user, agent or service", "LlmUsage", [
        _param("group_by", "Grouping.", {"enum": ["model", "user", "agent", "service"], "default": "model"}),
        _param("step", "Series step, whole minutes (default about 120 points)."),
        *TIME_PARAMS], 400),
    "/api/v1/ai/bottlenecks": _get("Operations whose recent p95 or error rate departs from their baseline",
                                   "Bottlenecks", [
                                       _param("recent", "Recent window, 1m..7d (default 15m)."),
                                       _param("baseline", "Baseline window before it, 1m..30d (default 24h)."),
                                       _param("limit", "1..500.", {"type": "integer", "minimum": 1, "maximum": 500,
                                                                   "default": 50}),
                                       _param("at", "Evaluation time: ISO-8601 or unix ns (default now).")], 400),
    **AI_SESSION_PATHS,
    "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {
        "200": {"description": "OK", "content": {"application/json": {"schema": OBJ}}}}}},
    "/healthz": {"get": {"summary": "Process is up", "security": [], "responses": _responses("Health")}},
    "/readyz": {"get": {"summary": "Redis and database reachable", "security": [], "responses": {
        **_responses("Ready"), "503": {"description": "Not ready",
                                       "content": {"application/json": {"schema": _ref("Ready")}}}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "OK", "content": {"text/plain": {"schema": STR}}},
        **_responses(None, 401, 403)}}},
    "/v1/traces": {"post": {
        "summary": "OTLP/HTTP trace receiver (protobuf or JSON, gzip accepted)",
        "requestBody": {"required": True, "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": OBJ}}},
        "responses": {
            "200": {"description": "ExportTraceServiceResponse, partial_success for refused spans",
                    "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                                "application/json": {"schema": OBJ}}},
            **_responses(None, 400, 401, 403, 413, 415, 503)}}},
    "/api/v2/spans": {"post": {
        "summary": "Zipkin v2 trace receiver (a JSON array of Zipkin spans, gzip accepted)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "array"}}}},
        "responses": {
            "202": {"description": "Accepted; rejected_spans and error_message for refused spans",
                    "content": {"application/json": {"schema": OBJ}}},
            **_responses(None, 400, 401, 403, 413, 415, 503)}}},
}


# The latency heat map and the live tail.
SCHEMAS.update({
    "Heatmap": _obj({
        "scope": {"enum": ["trace", "span"]}, "service": NULLABLE_STR, "operation": NULLABLE_STR,
        "start_ns": INT, "end_ns": INT, "step_s": INT, "resolution": {"enum": [60, 3600]},
        "columns": {"type": "array", "items": _obj({"start_ns": INT, "end_ns": INT, "time": STR})},
        "rows": {"type": "array", "items": _obj({"row": INT, "min_ns": INT, "max_ns": INT, "min_ms": NUM,
                                                 "max_ms": NUM})},
        "cells": {"type": "array", "items": {"type": "array", "items": INT, "minItems": 4, "maxItems": 4},
                  "description": "[column index, row, count, error count] of each non-empty cell"},
        "count": INT, "error_count": INT, "max_cell": INT}),
    "TailPage": _obj({"traces": {"type": "array", "items": {"allOf": [_ref("TraceSummary"),
                                                                      _obj({"finalized_ns": INT})]}},
                      "cursor": STR, "more": {"type": "boolean"}}),
})
PATHS.update({
    "/api/v1/stats/heatmap": _get(
        "Latency heat map: counts per time column and duration row, from the stored histograms", "Heatmap", [
            _param("scope", "trace: traces by root service/operation; span: spans of each service/operation.",
                   {"enum": ["trace", "span"], "default": "trace"}),
            _param("service", "Only this service (the root service for scope=trace)."),
            _param("operation", "Only this operation (the root operation for scope=trace)."),
            _param("step", "Column width, whole minutes: 60s, 5m, 1h (default: at most 96 columns; whole hours from 12 h windows)."),
            *TIME_PARAMS], 400),
    "/api/v1/stats/heatmap/traces": _get(
        "The traces a trace-scope heat map counted in a region", "TraceList", [
            _param("start", "Region start (inclusive): ISO-8601 or unix ns.", required=True),
            _param("end", "Region end (exclusive): ISO-8601 or unix ns.", required=True),
            _param("min_duration", "Shortest duration (inclusive): the row's min_ns as 123ns, or 250ms."),
            _param("max_duration", "Longest duration (inclusive)."),
            _param("service", "Root service."), _param("operation", "Root operation."),
            _param("status", "error: traces with an error span; ok: without.", {"enum": ["error", "ok"]}),
            _param("sort", "Result order.", {"enum": ["start_desc", "start_asc", "duration_desc", "duration_asc"],
                                             "default": "start_desc"}),
            _param("limit", "Page size, 1..1000.", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}),
            _param("cursor", "next_cursor of the previous page (same sort).")], 400),
    "/api/v1/report": _get(
        "The period report: one self-contained HTML file (RED summary, heat map, slowest and failing operations, "
        "dependency map, bottleneck hints, AI usage and cost), as an attachment", None,
        [*TIME_PARAMS], 400, ok_content={"text/html": {"schema": STR}}),
    "/api/v1/traces/tail": _get(
        "Live tail: traces finalized after the cursor (oldest first), with the search filters", "TailPage", [
            *[p for p in SEARCH_PARAMS if p["name"] not in ("sort", "limit", "cursor")],
            _param("window", "Only traces that started within this long before now, up to 24h (default 5m)."),
            _param("limit", "Traces per answer, 1..200.", {"type": "integer", "minimum": 1, "maximum": 200,
                                                           "default": 50}),
            _param("cursor", "cursor of the previous answer; without it, the newest traces.")], 400),
})


@lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Contrail API", "version": "1",
                 "description": "Trace search and retrieval, statistics, dependencies and the OTLP receiver. "
                                "Times are ISO-8601 UTC plus unix nanoseconds; durations are milliseconds."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {}],
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": PATHS,
    }


def spec() -> dict[str, Any]:
    """A copy of the OpenAPI document."""
    return copy.deepcopy(_spec())
