"""Mermaid export of the span tree: a ``flowchart TD`` with one box per span, parent above child.

The sequence diagram (mermaid.py) draws only calls between services; this
draws every span, so a one-service trace shows its shape too. Runs of
similar siblings fold into one box (``x N``, total, p50, max, errors) exactly
as the text distiller folds them (span_tree), with the failing members and
the slowest hanging off the fold by a dotted edge. Boxes are drawn critical
path first, then the paths to failed spans, then breadth first; past
``MAX_NODES`` the rest become ``+N spans not drawn`` boxes (one per parent
for the ``MAX_HIDDEN_BOXES`` parents hiding most, one for all the others).
Labels go through the same sanitiser as the sequence diagram, so the output
always parses.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

from tracer.units import format_duration_ms

from .mermaid import text
from .span_tree import Node, Run, build, duration_ms, failed, fold

MAX_NODES = 300  # boxes drawn before the rest are summarised per parent
MAX_HIDDEN_BOXES = 20  # "+N spans not drawn" boxes; the remainder is summed into one under the root


@dataclass
class _Shown:
    node: Node
    reason: str


def _node_label(node: Node) -> str:
    span = node.span
    label = (f"{text(span.get('name'))} - {text(span.get('service') or '?', 40)}"
             f" - {format_duration_ms(duration_ms(span))}")
    if failed(node):
        label += f" - error {text(span.get('status_message') or '', 60)}".rstrip()
    return label


def _run_label(run: Run) -> str:
    services = run.services
    where = services[0] if len(services) == 1 else f"{services[0]} +{len(services) - 1} services"
    name = run.name.replace("<n>", "N")  # the sanitiser would drop the brackets of the number placeholder
    label = (f"{text(name)} x {len(run.members)} - {text(where, 40)} - {format_duration_ms(run.total_ms)} total,"
             f" p50 {format_duration_ms(run.p50_ms)}, max {format_duration_ms(run.max_ms)}")
    if run.failures:
        label += f" - {run.failures} error(s)"
    if run.spans_below:
        label += f" - +{run.spans_below} spans below"
    return label


def _spans_in(item: Any) -> int:
    if isinstance(item, Run):
        return sum(n.size for n in item.members)
    return 0 if isinstance(item, _Shown) else item.size  # a shown member is counted in its run


def render(trace: dict) -> str:
    roots = build(trace.get("spans") or [])
    lines = ["flowchart TD"]
    if not roots:
        lines.append('    empty["empty trace"]')
        return "\n".join(lines) + "\n"
    ids = (f"n{i}" for i in itertools.count())
    order = itertools.count()
    critical: list[str] = []
    errors: list[str] = []
    folded: list[str] = []
    hidden: dict[str, int] = {}
    queue: list[tuple] = []

    def push(item: Any, depth: int, parent: str | None, edge: str) -> None:
        node = item.members[0] if isinstance(item, Run) else item.node if isinstance(item, _Shown) else item
        members = item.members if isinstance(item, Run) else [node]
        rank = 0 if any(n.critical for n in members) else 1 if any(n.errors for n in members) else 2
        priority = (rank, depth, node.span.get("start_ns") or 0, next(order))
        heapq.heappush(queue, (priority, item, depth, parent, edge))

    for root in roots:
        push(root, 0, None, "")
    drawn = 0
    while queue:
        _priority, item, depth, parent, edge = heapq.heappop(queue)
        if drawn >= MAX_NODES:
            if parent is not None and _spans_in(item):
                hidden[parent] = hidden.get(parent, 0) + _spans_in(item)
            continue
        drawn += 1
        ident = next(ids)
        if isinstance(item, Run):
            lines.append(f'    {ident}["{_run_label(item)}"]')
            folded.append(ident)
            if item.critical:
                critical.append(ident)
            if item.failures:
                errors.append(ident)
            for member, reason in item.shown():
                push(_Shown(member, reason), depth + 1, ident, f"-.->|{text(reason, 40)}|")
        else:
            node = item.node if isinstance(item, _Shown) else item
            lines.append(f'    {ident}["{_node_label(node)}"]')
            if node.critical:
                critical.append(ident)
            if failed(node):
                errors.append(ident)
            for child in fold(node.children):
                push(child, depth + 1, ident, "-->")
        if parent is not None:
            lines.append(f"    {parent} {edge} {ident}")
    ranked = sorted(hidden.items(), key=lambda kv: kv[1], reverse=True)
    rest = ranked[MAX_HIDDEN_BOXES:]
    boxes = [(parent, f"+{count} span{'' if count == 1 else 's'} not drawn")
             for parent, count in ranked[:MAX_HIDDEN_BOXES]]
    if rest:
        hidden_spans = sum(count for _, count in rest)
        boxes.append(("n0", f"+{hidden_spans} more spans not drawn, under {len(rest)} other boxes"))
    for parent, label in boxes:
        ident = next(ids)
        lines.append(f'    {ident}["{label}"]')
        lines.append(f"    {parent} -.-> {ident}")
    lines.append("    classDef critical stroke-width:3px")
    lines.append("    classDef error fill:#fde2e2,stroke:#c62828")
    lines.append("    classDef folded stroke-dasharray:4 2")
    for name, members in (("critical", critical), ("error", errors), ("folded", folded)):
        for start in range(0, len(members), 50):
            lines.append(f"    class {','.join(members[start:start + 50])} {name}")
    return "\n".join(lines) + "\n"
