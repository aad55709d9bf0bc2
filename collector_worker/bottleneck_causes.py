"""The likely cause of a flagged operation (collector_worker.bottlenecks), read from the data.

For each hint, the slowest recent traces holding the operation are read (``TRACES_READ``, each at
most ``SPANS_READ`` spans) and the operation's spans in them are taken apart: time waiting in the
Celery queue before they ran (``celery.queue_wait_ms``), time in LLM calls below them
(``gen_ai.request.model``), time in each child operation, and their own self time; the recent
profiles of the operation (collector_worker.profile_store) name its hot function. A hint flagged for
errors also gets the error seen most where failures start (a failing span, itself or below the
operation, none of whose children failed), read from its slowest recent failing traces. Each cause carries its
``share`` of the operation's time, from publish to end for a Celery task (of its profile samples for a
hot function), most first; the hint's
``likely_cause`` is the first as a sentence.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

from sqlalchemy.engine import Connection

from . import profile_store
from .storage.queries import TraceQuery, get_trace, search_traces

TRACES_READ = 3
SPANS_READ = 2000
HINTS_EXPLAINED = 10
MIN_SHARE = 0.05  # causes below this share of the operation's time are not worth naming
LLM_ATTRIBUTE = "gen_ai.request.model"
WAIT_ATTRIBUTE = "celery.queue_wait_ms"


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _subtree(span_id: str, children: dict[str, list[dict]]) -> Iterable[dict]:
    stack = list(children.get(span_id, ()))
    while stack:
        span = stack.pop()
        yield span
        stack.extend(children.get(span["span_id"], ()))


def _llm_ms(span_id: str, children: dict[str, list[dict]]) -> tuple[float, Counter]:
    """Time in the outermost LLM-call spans under ``span_id``, and their models."""
    total, models = 0.0, Counter()
    stack = list(children.get(span_id, ()))
    while stack:
        span = stack.pop()
        model = (span.get("attributes") or {}).get(LLM_ATTRIBUTE)
        if model is not None:
            total += float(span.get("duration_ms") or 0.0)
            models[str(model)] += 1
            continue  # an LLM call's own children are part of it
        stack.extend(children.get(span["span_id"], ()))
    return total, models


def _error_of(span: dict) -> str | None:
    if span.get("status") != "error":
        return None
    for event in span.get("events") or ():
        if event.get("name") == "exception":
            attrs = event.get("attributes") or {}
            kind, message = attrs.get("exception.type"), attrs.get("exception.message")
            if kind:
                return f"{kind}: {message}" if message else str(kind)
    return span.get("status_message") or "error status"


def _operation_spans(conn: Connection, summaries: list[dict], service: str, operation: str):
    """``(span, children by parent id)`` for each span of the operation in the listed traces."""
    for summary in summaries:
        trace = get_trace(conn, summary["trace_id"], limit=SPANS_READ)
        if trace is None:
            continue
        children: dict[str, list[dict]] = defaultdict(list)
        for span in trace["spans"]:
            if span.get("parent_span_id"):
                children[span["parent_span_id"]].append(span)
        for span in trace["spans"]:
            if span["service"] == service and span["name"] == operation:
                yield span, children


def _errors(conn: Connection, hint: dict[str, Any], start_ns: int, end_ns: int) -> tuple[Counter, int]:
    """Where failures start in the slowest recent failing traces of the operation: failing spans, the operation's
    own or below it, none of whose children failed. Failing traces are searched for themselves: the slowest
    traces of an operation that fails fast are often its successes."""
    service, operation = hint["service"], hint["operation"]
    failing = search_traces(conn, TraceQuery(service=service, operation=operation, status="error", start_ns=start_ns,
                                             end_ns=end_ns, sort="duration_desc", limit=TRACES_READ))["traces"]
    errors: Counter = Counter()
    for span, children in _operation_spans(conn, failing, service, operation):
        for failed in [span, *_subtree(span["span_id"], children)]:
            error = _error_of(failed)
            if error and not any(_error_of(c) for c in children.get(failed["span_id"], ())):
                errors[(failed["service"], failed["name"], error)] += 1
    return errors, len(failing)


def explain(conn: Connection, hint: dict[str, Any], start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """Causes of one hint, most time first."""
    service, operation = hint["service"], hint["operation"]
    found = search_traces(conn, TraceQuery(service=service, operation=operation, start_ns=start_ns, end_ns=end_ns,
                                           sort="duration_desc", limit=TRACES_READ))["traces"]
    errors, failing = _errors(conn, hint, start_ns, end_ns) if "more_errors" in (hint.get("flags") or ()) else (
        Counter(), 0)
    op_ms = self_ms = wait_ms = llm_ms = 0.0
    spans_seen = 0
    child_ms: dict[tuple[str, str], float] = defaultdict(float)
    child_count: Counter = Counter()
    models: Counter = Counter()
    for span, children in _operation_spans(conn, found, service, operation):
            spans_seen += 1
            op_ms += float(span.get("duration_ms") or 0.0)
            self_ms += float(span.get("self_time_ms") or 0.0)
            wait = (span.get("attributes") or {}).get(WAIT_ATTRIBUTE)
            if isinstance(wait, (int, float)) and wait > 0:
                wait_ms += float(wait)
            llm, seen = _llm_ms(span["span_id"], children)
            llm_ms += llm
            models.update(seen)
            for child in children.get(span["span_id"], ()):
                key = (child["service"], child["name"])
                child_ms[key] += float(child.get("duration_ms") or 0.0)
                child_count[key] += 1
    causes: list[dict[str, Any]] = []
    if spans_seen and op_ms > 0:
        whole = op_ms + wait_ms  # shares are of the time from publish (a Celery task's) or start to end
        if wait_ms:
            share = wait_ms / whole
            causes.append({"kind": "queue_wait", "share": round(share, 3), "avg_ms": round(wait_ms / spans_seen, 3),
                           "text": f"waits {_ms(wait_ms / spans_seen)} in the Celery queue before it runs "
                                   f"({_pct(share)} of its time from publish to end)"})
        if llm_ms:
            model = models.most_common(1)[0][0]
            share = min(1.0, llm_ms / whole)
            causes.append({"kind": "llm_call", "model": model, "share": round(share, 3),
                           "avg_ms": round(llm_ms / spans_seen, 3),
                           "text": f"LLM calls ({model}) take {_pct(share)} of its time"})
        if child_ms:
            (child_service, child_name), total = max(child_ms.items(), key=lambda item: (item[1], item[0]))
            share = min(1.0, total / whole)
            causes.append({"kind": "child", "service": child_service, "operation": child_name,
                           "share": round(share, 3), "avg_ms": round(total / child_count[(child_service, child_name)], 3),
                           "text": f"its slowest child operation, {child_service} · {child_name}, takes {_pct(share)} "
                                   f"of its time"})
        if self_ms:
            share = min(1.0, self_ms / whole)
            causes.append({"kind": "self_time", "share": round(share, 3), "avg_ms": round(self_ms / spans_seen, 3),
                           "text": f"its own code (self time) takes {_pct(share)} of its time"})
    hot = profile_store.hot_functions(conn, start_ns, end_ns, operation, service)
    if hot:
        top = hot[0]
        causes.append({"kind": "hot_function", "function": top["function"], "share": round(top["self_pct"] / 100, 3),
                       "samples": top["self_samples"],
                       "text": f"hot function {top['function']}: {top['self_pct']:.0f} % of its profile samples"})
    causes = [c for c in causes if c["share"] >= MIN_SHARE]
    causes.sort(key=lambda c: -c["share"])
    if errors:
        (err_service, err_name, error), count = errors.most_common(1)[0]
        where = "itself" if (err_service, err_name) == (service, operation) else f"in {err_service} · {err_name}"
        causes.insert(0, {"kind": "error", "service": err_service, "operation": err_name, "error": error,
                          "count": count, "share": None,
                          "text": f"fails with {error} {where} ({count}× in its {failing} slowest failing "
                                  f"recent traces)"})
    return causes


def likely_cause(causes: list[dict[str, Any]]) -> str | None:
    """The first cause as a sentence; own code is named by its hot function when profiles have one."""
    if not causes:
        return None
    first = causes[0]
    hot = next((c for c in causes if c["kind"] == "hot_function"), None)
    if first["kind"] == "self_time" and hot is not None:
        return f"{first['text']}; {hot['text']}"
    return first["text"]


def add_causes(conn: Connection, hints: list[dict[str, Any]], now_ns: int, recent_s: int) -> list[dict[str, Any]]:
    """Each hint (the first ``HINTS_EXPLAINED``) with ``causes`` and ``likely_cause``."""
    start_ns = now_ns - recent_s * 1_000_000_000
    for index, hint in enumerate(hints):
        causes = explain(conn, hint, start_ns, now_ns + 1) if index < HINTS_EXPLAINED else []
        hint["causes"] = causes
        hint["likely_cause"] = likely_cause(causes)
    return hints
