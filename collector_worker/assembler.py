"""Trace assembly: a trace's raw spans → tree, self time, critical path, summary.

Pure functions over span dicts in the codec's decoded shape (the finalizer
and the API both call :func:`assemble`), no database. Everything is
iterative so a 10k-span trace or a deep chain never hits the recursion
limit, and garbage (duplicate ids, a span that is its own parent, parent
cycles) is handled without looping forever.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

CLOCK_SKEW_TOLERANCE_NS = 1_000_000  # 1 ms: less than this is jitter, not skew worth showing
MAX_TAGS_PER_TRACE = 2000
MAX_TAG_LENGTH = 255


@dataclass
class Assembly:
    """What assembly knows about one trace; ``summary`` keys match the ``traces`` columns."""

    summary: dict[str, Any]
    depth: dict[str, int] = field(default_factory=dict)
    self_time_ns: dict[str, int] = field(default_factory=dict)
    critical_path: set[str] = field(default_factory=set)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    operations: list[tuple[str, str, bool]] = field(default_factory=list)  # (service, name, had_error)
    tags: list[tuple[str, str, float | None]] = field(default_factory=list)  # (key, value, value_num)
    kinds: list[str] = field(default_factory=list)  # the span kinds the trace holds, sorted

    @property
    def clock_skew_ns(self) -> int:
        return int(self.summary.get("clock_skew_ns") or 0)

    @property
    def spans(self) -> dict[str, dict[str, Any]]:
        """span_id → {span_id, depth, self_time_ns, critical_path}."""
        return {span_id: {"span_id": span_id, **self.span_fields(span_id)} for span_id in self.depth}

    def span_fields(self, span_id: str) -> dict[str, Any]:
        """The assembly columns of one span, as the API and the ``spans`` table show them."""
        return {
            "depth": self.depth.get(span_id, 0),
            "self_time_ns": self.self_time_ns.get(span_id, 0),
            "critical_path": span_id in self.critical_path,
        }


def assemble(spans: Iterable[Mapping[str, Any]]) -> Assembly:
    """Assemble one trace from its spans (any order, duplicates ignored)."""
    unique: list[Mapping[str, Any]] = []
    index: dict[str, int] = {}
    for span in spans:
        span_id = span.get("span_id")
        if not isinstance(span_id, str) or span_id in index:
            continue
        index[span_id] = len(unique)
        unique.append(span)
    n = len(unique)
    if n == 0:
        return Assembly(summary=_empty_summary())

    starts: list[int] = []
    ends: list[int] = []
    parent = [-1] * n
    warnings: list[dict[str, Any]] = []
    missing_parent = False
    for i, span in enumerate(unique):  # times and parent links in one pass
        get = span.get
        start = int(get("start_ns") or 0)
        end = int(get("end_ns") or 0)
        starts.append(start)
        ends.append(end if end > start else start)
        pid = get("parent_span_id")
        if not pid:
            continue
        j = index.get(pid, -1)
        if j < 0:
            missing_parent = True
            warnings.append({"code": "missing_parent", "span_id": span["span_id"],
                             "message": f"parent span {pid} never arrived; shown as an extra root"})
        elif j != i:
            parent[i] = j

    parent, cycle_spans = _break_cycles(parent, starts)
    for i in cycle_spans:
        warnings.append({"code": "missing_parent", "span_id": unique[i]["span_id"],
                         "message": "span's parent chain loops back on itself; shown as an extra root"})

    children: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(parent):
        if p >= 0:
            children[p].append(i)

    roots = [i for i in range(n) if parent[i] < 0]
    true_roots = [i for i in roots if not unique[i].get("parent_span_id")]
    root = min(true_roots or roots, key=lambda i: (starts[i], -ends[i]))

    depth = _depths(roots, children, n)
    timing_parent, timing_children = _timing_tree(unique, parent, children)
    self_time = _self_times(starts, ends, timing_children)
    critical = _critical_path(root, starts, ends, timing_parent, timing_children)
    skew_ns, skew_warnings = _clock_skew(unique, starts, ends, parent)
    warnings.extend(skew_warnings)

    operations, error_count = _operations(unique)
    services = sorted({svc for svc, _ in operations})
    start_ns, end_ns = min(starts), max(ends)
    root_span = unique[root]
    summary = {
        "root_span_id": root_span["span_id"],
        "root_service": str(root_span.get("service") or ""),
        "root_operation": str(root_span.get("name") or ""),
        "start_ns": start_ns,
        "end_ns": end_ns,
        "duration_ns": end_ns - start_ns,
        "span_count": n,
        "error_count": error_count,
        "services": services,
        "service_count": len(services),
        "incomplete": missing_parent or bool(cycle_spans),
        "clock_skew_ns": skew_ns,
        "warnings": warnings,
    }
    ids = list(index)  # span ids in ``unique`` order
    return Assembly(
        summary=summary,
        depth=dict(zip(ids, depth)),
        self_time_ns=dict(zip(ids, self_time)),
        critical_path={ids[i] for i in critical},
        warnings=warnings,
        operations=[(svc, name, err) for (svc, name), err in operations.items()],
        tags=_tags(unique),
        kinds=sorted({s.get("kind") or "internal" for s in unique}),
    )


def _empty_summary() -> dict[str, Any]:
    return {"root_span_id": None, "root_service": "", "root_operation": "", "start_ns": 0, "end_ns": 0,
            "duration_ns": 0, "span_count": 0, "error_count": 0, "services": [], "service_count": 0,
            "incomplete": False, "clock_skew_ns": 0, "warnings": []}


def _break_cycles(parent: list[int], starts: list[int]) -> tuple[list[int], list[int]]:
    """Cut parent links that form loops; return the new links and the spans cut loose.

    Walks each chain once (colouring visited spans), so the whole pass is O(n).
    """
    n = len(parent)
    state = [0] * n  # 0 unvisited, 1 on the current walk, 2 done
    cut: list[int] = []
    for start in range(n):
        if state[start]:
            continue
        walk = []
        i = start
        while i >= 0 and state[i] == 0:
            state[i] = 1
            walk.append(i)
            i = parent[i]
        if i >= 0 and state[i] == 1:  # the walk came back to itself: a loop
            loop = walk[walk.index(i):]
            head = min(loop, key=lambda k: starts[k])
            parent[head] = -1
            cut.append(head)
        for k in walk:
            state[k] = 2
    return parent, cut


def _timing_tree(spans: list[Mapping[str, Any]], parent: list[int],
                 children: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """The tree that self time and the critical path are computed on.

    A message consumer (a Celery task run) is the child of its producer span
    (the publish), which ends when the message is sent, before the run starts;
    so, clipped to its parent, the run would count for nothing. The span that
    published is the one that waits for the work (a request handler collecting
    task results), so for timing a consumer under a producer counts as a child
    of the producer's parent. The tree shown (parent ids, depth) is unchanged.
    """
    moved = [i for i, p in enumerate(parent)
             if p >= 0 and parent[p] >= 0 and spans[i].get("kind") == "consumer"
             and spans[p].get("kind") == "producer"]
    if not moved:
        return parent, children
    timing_parent = list(parent)
    for i in moved:
        timing_parent[i] = parent[parent[i]]
    timing_children: list[list[int]] = [[] for _ in parent]
    for i, p in enumerate(timing_parent):
        if p >= 0:
            timing_children[p].append(i)
    return timing_parent, timing_children


def _depths(roots: list[int], children: list[list[int]], n: int) -> list[int]:
    depth = [0] * n
    stack = list(roots)
    while stack:
        i = stack.pop()
        for c in children[i]:
            depth[c] = depth[i] + 1
            stack.append(c)
    return depth


def _self_times(starts: list[int], ends: list[int], children: list[list[int]]) -> list[int]:
    """Own duration minus the union of the children's intervals clipped to the span."""
    result = []
    for i, kids in enumerate(children):
        s, e = starts[i], ends[i]
        if not kids:
            result.append(e - s)
            continue
        intervals = sorted((max(starts[c], s), min(ends[c], e)) for c in kids)
        covered = 0
        cur_s = cur_e = None
        for a, b in intervals:
            if b <= a:
                continue
            if cur_e is None or a > cur_e:
                if cur_e is not None:
                    covered += cur_e - cur_s
                cur_s, cur_e = a, b
            elif b > cur_e:
                cur_e = b
        if cur_e is not None:
            covered += cur_e - cur_s
        result.append(e - s - covered)
    return result


def _critical_path(root: int, starts: list[int], ends: list[int], parent: list[int],
                   children: list[list[int]]) -> set[int]:
    """Spans on the critical path, computed the way Jaeger's UI does.

    Children are first clipped to their parent (a child entirely outside it
    is ignored). From the root, the walk goes into the last-finishing child;
    a span with no child finishing before the cursor owns the time back to
    its start, then the walk returns to its parent with the cursor at that
    start and picks the last child that finished before it. Time between
    children is owned by the parent; overlapping children never both count.
    """
    # Clip top-down so grandchildren are clipped to their clipped parent.
    n = len(starts)
    cs: list[int] = [0] * n  # clipped start and end of each span reached from the root
    ce: list[int] = [0] * n
    cs[root], ce[root] = starts[root], ends[root]
    kids: list[list[int]] = [[] for _ in range(n)]
    stack = [root]
    reached = 1
    while stack:
        p = stack.pop()
        ps, pe = cs[p], ce[p]
        kept = kids[p]
        for c in children[p]:
            sc, ec = starts[c], ends[c]
            s = sc if sc > ps else ps
            e = ec if ec < pe else pe
            if sc > pe or ec < ps or e < s:
                continue
            cs[c], ce[c] = s, e
            kept.append(c)
            stack.append(c)
            reached += 1
        if len(kept) > 1:
            kept.sort(key=ce.__getitem__, reverse=True)  # last finishing first

    on_path: set[int] = set()
    current, cursor = root, None
    for _ in range(4 * reached + 4):  # each span is entered downwards at most once; bound the loop anyway
        if cursor is None:
            child = kids[current][0] if kids[current] else None
        else:
            child = next((c for c in kids[current] if ce[c] < cursor), None)
        if child is not None:
            end = ce[current] if cursor is None else cursor
            if ce[child] != end:
                on_path.add(current)
            current, cursor = child, None
            continue
        on_path.add(current)
        if current == root:
            break
        current, cursor = parent[current], cs[current]
    return on_path


def _host(span: Mapping[str, Any]) -> Any:
    resource = span.get("resource")
    if isinstance(resource, str):
        return _host_of_json(resource)
    if isinstance(resource, Mapping):
        return resource.get("host.name") or resource.get("host.id")
    return None


@functools.lru_cache(maxsize=4096)
def _host_of_json(text: str) -> Any:
    """Host of a stored resource; resources repeat across spans (one per process), so parse each once."""
    try:
        resource = json.loads(text)
    except ValueError:
        return None
    if isinstance(resource, Mapping):
        return resource.get("host.name") or resource.get("host.id")
    return None


def _clock_skew(spans: list[Mapping[str, Any]], starts: list[int], ends: list[int],
                parent: list[int]) -> tuple[int, list[dict[str, Any]]]:
    """Cross-host children that start before (or, for synchronous calls, end after) their parent.

    Spans from one host share a clock, so only pairs on different (or unknown)
    hosts are checked. Only a server span answering a client span must end
    before its caller; any other child (messaging, fire-and-forget work handed
    over through inject/extract) may legitimately outlive its parent.
    """
    largest = 0
    warnings = []
    for i, p in enumerate(parent):
        if p < 0:
            continue
        early = starts[p] - starts[i]
        span, par = spans[i], spans[p]
        synchronous = par.get("kind") == "client" and span.get("kind") == "server"
        late = ends[i] - ends[p] if synchronous else 0
        amount = max(early, late)
        if amount <= CLOCK_SKEW_TOLERANCE_NS:
            continue
        host = _host(span)
        if host is not None and host == _host(par):
            continue  # one host, one clock
        if host is None and _host(par) is None and span.get("service") == par.get("service"):
            continue
        largest = max(largest, amount)
        where = "starts before" if early >= late else "ends after"
        warnings.append({
            "code": "clock_skew", "span_id": span["span_id"], "skew_ns": amount,
            "message": (f"span of {span.get('service')} {where} its parent in {par.get('service')} "
                        f"by {amount / 1e6:.3f} ms: the hosts' clocks disagree"),
        })
    return largest, warnings


def _operations(spans: list[Mapping[str, Any]]) -> tuple[dict[tuple[str, str], bool], int]:
    """{(service, name): had_error} in first-seen order, and the number of spans with an error status."""
    ops: dict[tuple[str, str], bool] = {}
    errors = 0
    for s in spans:
        get = s.get
        key = (str(get("service") or ""), str(get("name") or ""))
        if get("status_code") == "error":
            errors += 1
            ops[key] = True
        elif key not in ops:
            ops[key] = False
    return ops, errors


def span_attributes(span: Mapping[str, Any]) -> Mapping[str, Any]:
    """A span's attributes as a mapping, whether decoded already or still JSON text (a stored row); {} if unreadable."""
    attrs = span.get("attributes")
    if type(attrs) is dict:  # the usual case, decoded once by the caller: skip the ABC checks
        return attrs
    if isinstance(attrs, str):
        try:
            attrs = json.loads(attrs)
        except ValueError:
            return {}
    return attrs if isinstance(attrs, Mapping) else {}


def tag_value(value: Any) -> tuple[str, float | None] | None:
    """The searchable (text, number) form of an attribute value, or None if it is not searchable."""
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int):
        text = str(value)
        return (text, float(value)) if len(text) <= MAX_TAG_LENGTH else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return repr(value), value
    if isinstance(value, str) and len(value) <= MAX_TAG_LENGTH:
        return (value.replace("\x00", "\ufffd") if "\x00" in value else value), None
    return None


def _tags(spans: list[Mapping[str, Any]]) -> list[tuple[str, str, float | None]]:
    seen: dict[tuple[str, str], float | None] = {}
    ints_seen: set[tuple[Any, int]] = set()
    for s in spans:
        attrs = s.get("attributes")
        if type(attrs) is not dict:
            attrs = span_attributes(s)
        for item in attrs.items():
            key, value = item
            if type(value) is str:  # most attributes: skip the general conversion
                if item in seen:  # the same pair on an earlier span of the trace (only valid keys enter)
                    continue
                if len(value) > MAX_TAG_LENGTH:
                    continue
                if "\x00" in value:  # PostgreSQL text cannot hold NUL: replaced, as the writer does
                    value = value.replace("\x00", "\ufffd")
                    pair = (key, value)
                    if pair in seen:
                        continue
                else:
                    pair = item
                num = None
            else:
                if type(value) is int:  # ints with equal values have equal texts: each pair is looked at once
                    if item in ints_seen:
                        continue
                    ints_seen.add(item)
                tv = tag_value(value)
                if tv is None:
                    continue
                pair, num = (key, tv[0]), tv[1]
                if pair in seen:  # only valid keys ever enter ``seen``
                    continue
            if type(key) is not str or not key or len(key) > MAX_TAG_LENGTH:
                continue
            if "\x00" in key:
                pair = (key.replace("\x00", "\ufffd"), pair[1])
            seen[pair] = num
            if len(seen) >= MAX_TAGS_PER_TRACE:
                return [(k, v, n) for (k, v), n in seen.items()]
    return [(k, v, num) for (k, v), num in seen.items()]
