"""A trace's spans as a tree, with runs of similar siblings folded: shared by the text distiller and Mermaid.

Siblings are similar when their names match once numbers and hex ids are
blanked (``item 7`` and ``item 8``). A group of ``fold_min`` or more similar
siblings folds into one :class:`Run` whatever their critical-path flags: the
assembler rightly marks every member of a sequential loop critical, and a
thousand identical lines say no more than one line with a count. A run keeps
its failing members and its slowest member visible (:meth:`Run.shown`).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

FOLD_MIN = 3  # similar siblings folded from this many on
SHOWN_FAILED = 3  # failing members of a run drawn on their own, earliest first
_NUMBERS = re.compile(r"\b[0-9a-f]{8,}\b|\d+")


@dataclass
class Node:
    span: dict[str, Any]
    children: list["Node"] = field(default_factory=list)
    size: int = 1  # spans in this subtree
    errors: int = 0  # failed spans in this subtree
    critical: bool = False


def duration_ms(span: dict[str, Any]) -> float:
    value = span.get("duration_ms")
    if value is None:
        value = ((span.get("end_ns") or 0) - (span.get("start_ns") or 0)) / 1e6
    return float(value)


def failed(node: Node) -> bool:
    return node.span.get("status") == "error"


def build(spans: list[dict]) -> list[Node]:
    """Tree of nodes, children in start order; spans with a missing parent become roots."""
    nodes = {s["span_id"]: Node(s) for s in spans}
    roots: list[Node] = []
    for span in spans:
        parent = nodes.get(span.get("parent_span_id") or "")
        if parent is None or parent is nodes[span["span_id"]]:
            roots.append(nodes[span["span_id"]])
        else:
            parent.children.append(nodes[span["span_id"]])
    order = []  # post-order without recursion: deep traces must not hit the recursion limit
    stack = [(root, False) for root in roots]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        node.children.sort(key=lambda n: n.span.get("start_ns") or 0)
        stack.append((node, True))
        stack.extend((child, False) for child in node.children)
    for node in order:
        node.size = 1 + sum(child.size for child in node.children)
        node.errors = int(failed(node)) + sum(child.errors for child in node.children)
    roots.sort(key=lambda n: n.span.get("start_ns") or 0)
    mark_critical(roots)
    return roots


def mark_critical(roots: list[Node]) -> None:
    """Use the assembler's critical-path flags; derive them (latest-ending child) if absent."""
    if any("critical_path" in n.span for n in walk(roots)):
        for node in walk(roots):
            node.critical = bool(node.span.get("critical_path"))
        return
    if not roots:
        return
    node = max(roots, key=lambda n: duration_ms(n.span))
    while node is not None:
        node.critical = True
        node = max(node.children, key=lambda n: n.span.get("end_ns") or 0) if node.children else None


def walk(roots: list[Node]) -> Iterator[Node]:
    """Every node, depth first in start order, without recursion."""
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def name_pattern(name: str) -> str:
    """A span name with its numbers and hex ids replaced, so ``item 7`` and ``item 8`` are similar."""
    return _NUMBERS.sub("<n>", name)


@dataclass
class Run:
    """Similar siblings folded together, in start order."""

    members: list[Node]

    @property
    def durations(self) -> list[float]:
        return sorted(duration_ms(n.span) for n in self.members)

    @property
    def total_ms(self) -> float:
        return sum(self.durations)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.durations)

    @property
    def max_ms(self) -> float:
        return self.durations[-1]

    @property
    def failures(self) -> int:
        return sum(1 for n in self.members if failed(n))

    @property
    def errors_below(self) -> int:
        """Failed spans beneath the members (their own failures not counted)."""
        return sum(n.errors for n in self.members) - self.failures

    @property
    def spans_below(self) -> int:
        return sum(n.size - 1 for n in self.members)

    @property
    def critical(self) -> bool:
        return any(n.critical for n in self.members)

    @property
    def name(self) -> str:
        names = {n.span.get("name") or "?" for n in self.members}
        return names.pop() if len(names) == 1 else name_pattern(self.members[0].span.get("name") or "?")

    @property
    def services(self) -> list[str]:
        return sorted({n.span.get("service") or "?" for n in self.members})

    @property
    def slowest(self) -> Node:
        return max(self.members, key=lambda n: duration_ms(n.span))

    def shown(self, max_failed: int = SHOWN_FAILED) -> list[tuple[Node, str]]:
        """Members drawn on their own with why: the first failing ones (or with failures below), the slowest."""
        with_errors = [n for n in self.members if n.errors]
        picked = {id(n): n for n in with_errors[:max_failed]}
        slowest = self.slowest
        picked.setdefault(id(slowest), slowest)
        out = []
        for node in sorted(picked.values(), key=lambda n: n.span.get("start_ns") or 0):
            reasons = []
            if node.errors:
                reasons.append("failed" if failed(node) else "errors below")
            if node is slowest:
                reasons.append("slowest of the folded")
            out.append((node, "; ".join(reasons)))
        return out


def fold(children: list[Node], fold_min: int = FOLD_MIN) -> list[Node | Run]:
    """Siblings with one name pattern fold into a Run from ``fold_min`` on; items keep their first start."""
    by_key: dict[str, list[Node]] = {}
    for child in children:
        by_key.setdefault(name_pattern(child.span.get("name") or ""), []).append(child)
    out: list[Node | Run] = []
    for members in by_key.values():
        if len(members) >= max(2, fold_min):
            out.append(Run(members))
        else:
            out.extend(members)
    out.sort(key=lambda item: (item.members[0] if isinstance(item, Run) else item).span.get("start_ns") or 0)
    return out


def consecutive(items: list[T], key: Callable[[T], Any]) -> list[list[T]]:
    """Neighbours with one key grouped, order kept: the sequence diagram folds repeated calls in time order."""
    groups: list[list[T]] = []
    for item in items:
        if groups and key(groups[-1][0]) == key(item):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
