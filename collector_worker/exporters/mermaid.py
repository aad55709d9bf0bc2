"""Mermaid export: a trace as a ``sequenceDiagram`` across its services.

Participants are services (safe ids, readable aliases). Every span whose
parent lives in another service, and every message consumer (a Celery task
run, even one its own service queued, such as a retry), is a call arrow from the parent's service,
with its return arrow carrying the duration (asynchronous ``-)`` arrows for
messaging consumers, which have no return). Calls are drawn nested, in time
order; runs of identical sibling calls are folded into one arrow with a count.
Errors become notes: a call's own, and those of the spans inside it (a failed
database query in a task run); a Celery attempt that was retried says so. Text is sanitised to the characters Mermaid's sequence
grammar accepts in messages, so the output always parses. The span tree
itself, one service or many, is mermaid_flowchart's ``flowchart``.
"""

from __future__ import annotations

import re
from typing import Any

from tracer.units import format_duration_ms

from .span_tree import consecutive

MAX_TEXT = 80
MAX_CALLS = 400  # arrows drawn before the rest are summarised in a note

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# ';' and '#' end or escape a statement, '%%' starts a comment, ':' and '<>' confuse the lexer.
_TEXT_UNSAFE = re.compile(r"[;#%<>{}\[\]\"`\\|:\r\n\t]")


def text(value: Any, limit: int = MAX_TEXT) -> str:
    cleaned = _TEXT_UNSAFE.sub(" ", str(value))
    cleaned = re.sub(r"-{2,}|>>|--", "-", cleaned)
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 3].rstrip() + "..."
    return cleaned or "span"


class _Participants:
    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def id_for(self, service: str) -> str:
        if service not in self.ids:
            base = "s_" + (_ID_UNSAFE.sub("_", service) or "unknown")
            ident, n = base, 2
            taken = set(self.ids.values())
            while ident in taken:
                ident, n = f"{base}_{n}", n + 1
            self.ids[service] = ident
        return self.ids[service]


def _calls(spans: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """Cross-service calls, each with the calls made beneath it (nested, in time order)."""
    by_id = {s["span_id"]: s for s in spans}
    nodes: dict[str, dict] = {}
    roots: list[dict] = []
    for span in spans:  # spans are sorted by start time
        parent = by_id.get(span.get("parent_span_id") or "")
        if parent is None:
            continue
        message = span.get("kind") == "consumer" and parent.get("kind") == "producer"
        if parent.get("service") == span.get("service") and not message:  # a task queued by its own service
            continue                                                          # (a retry) is still drawn
        node = {"span": span, "caller": parent["service"], "callee": span["service"], "children": [], "inner": []}
        nodes[span["span_id"]] = node

    def enclosing_call(span: dict) -> dict | None:
        ancestor = by_id.get(span.get("parent_span_id") or "")
        seen = 0
        while ancestor is not None and seen < len(by_id):
            if ancestor["span_id"] in nodes:
                return nodes[ancestor["span_id"]]
            ancestor = by_id.get(ancestor.get("parent_span_id") or "")
            seen += 1
        return None

    for span_id, node in nodes.items():
        enclosing = enclosing_call(node["span"])
        (enclosing["children"] if enclosing else roots).append(node)
    for span in spans:  # errors of spans that are not calls belong to the call they happened in
        if span.get("status") == "error" and span["span_id"] not in nodes:
            owner = enclosing_call(span)
            if owner is not None:
                owner["inner"].append(span)
    for node in nodes.values():
        node["children"].sort(key=lambda n: n["span"]["start_ns"])
    roots.sort(key=lambda n: n["span"]["start_ns"])
    return roots, nodes


def _fold(nodes: list[dict]) -> list[list[dict]]:
    """Consecutive calls with the same caller, callee and name become one group."""
    return consecutive(nodes, lambda node: (node["caller"], node["callee"], node["span"]["name"]))


def render(trace: dict) -> str:
    spans = sorted(trace.get("spans") or [], key=lambda s: (s.get("start_ns") or 0))
    participants = _Participants()
    for span in spans:
        participants.id_for(span.get("service") or "unknown")
    lines = ["sequenceDiagram"]
    for service, ident in participants.ids.items():
        lines.append(f"    participant {ident} as {text(service, 60)}")
    if not spans:
        lines.append("    Note over s_empty: empty trace")
        return "\n".join(lines) + "\n"

    roots = [s for s in spans if not s.get("parent_span_id") or s["parent_span_id"] not in
             {x["span_id"] for x in spans}]
    root = max(roots, key=lambda s: s.get("duration_ms") or 0) if roots else spans[0]
    root_id = participants.id_for(root.get("service") or "unknown")
    lines.append(f"    Note over {root_id}: {text(root.get('name'))} {format_duration_ms(root.get('duration_ms') or 0)}"
                 + (" error" if root.get("status") == "error" else ""))

    call_roots, _ = _calls(spans)
    drawn = 0
    skipped = 0

    def emit(groups: list[list[dict]], indent: str) -> None:
        nonlocal drawn, skipped
        for group in groups:
            if drawn >= MAX_CALLS:
                skipped += len(group)
                continue
            drawn += 1
            first = group[0]
            caller = participants.id_for(first["caller"])
            callee = participants.id_for(first["callee"])
            span = first["span"]
            name = text(span.get("name"))
            durations = [n["span"].get("duration_ms") or 0.0 for n in group]
            errors = [n["span"] for n in group if n["span"].get("status") == "error"]
            asynchronous = span.get("kind") == "consumer"
            label = name if len(group) == 1 else f"{name} x {len(group)}"
            lines.append(f"{indent}{caller}{'-)' if asynchronous else '->>'}{callee}: {label}")
            inner = [e for n in group for e in n["inner"]]
            if inner:  # before the calls beneath: a failure usually comes before the retry it causes
                first_error = inner[0]
                message = f"{first_error.get('name')} {first_error.get('status_message') or ''}"
                lines.append(f"{indent}Note over {callee}: {len(inner)} error(s) inside {text(message, 60)}")
            children = sorted((c for n in group for c in n["children"]), key=lambda c: c["span"]["start_ns"])
            emit(_fold(children), indent)
            if errors:
                message = errors[0].get("status_message") or "error"
                extra = f" ({len(errors)} of {len(group)})" if len(group) > 1 else ""
                lines.append(f"{indent}Note over {callee}: error{extra} {text(message, 60)}")
            if len(group) == 1:
                took = format_duration_ms(durations[0])
            else:
                took = f"{format_duration_ms(sum(durations))} total, max {format_duration_ms(max(durations))}"
            retried = any((n["span"].get("attributes") or {}).get("celery.state") == "RETRY" for n in group)
            status = "error" if errors else "retried" if retried else "ok"
            if asynchronous:
                lines.append(f"{indent}Note over {callee}: {text(took, 60)} {status}")
            else:
                lines.append(f"{indent}{callee}-->>{caller}: {status} {text(took, 60)}")

    emit(_fold(call_roots), "    ")
    if skipped:
        lines.append(f"    Note over {root_id}: {skipped} more calls not drawn")
    if not call_roots:
        errors = [s for s in spans if s.get("status") == "error"]
        if errors:
            lines.append(f"    Note over {root_id}: {len(errors)} error(s) {text(errors[0].get('status_message') or '', 60)}")
        if len(spans) > 1:  # nothing crossed a service: point at the diagram that shows the spans
            lines.append(f"    Note over {root_id}: {len(spans)} spans in one call, diagram=flowchart draws them")
    return "\n".join(lines) + "\n"
