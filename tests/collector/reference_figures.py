"""The straightforward form of the finalizer's per-trace figures, kept as the reference the fast code must equal.

Assembly, dependency edges, LLM usage rows and span statistics as they were computed span by span before
the columnar fast paths (see test_figures_reference.py): any difference on any input is a bug in a fast path.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from typing import Any, Iterable, Mapping

from collector_worker import pricing
from collector_worker.assembler import (CLOCK_SKEW_TOLERANCE_NS, MAX_TAG_LENGTH, MAX_TAGS_PER_TRACE, Assembly,
                                        span_attributes, tag_value)
from collector_worker.dependencies import edge_kind
from collector_worker.llm_usage import llm_call_of
from collector_worker.stats import RESOLUTIONS, Accumulator, bin_for, error_scope


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


def add_edges(spans: Iterable[Mapping[str, Any]], into: dict, sign: int) -> None:
    """``sign`` × the edge counts of one trace's spans, added into ``into``."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for s in spans:
        by_id.setdefault(s["span_id"], s)
    for child_id, child in by_id.items():
        pid = child.get("parent_span_id")
        if not pid:
            continue
        parent = by_id.get(pid)
        if parent is None or parent is child:
            continue
        caller, callee = str(parent.get("service") or ""), str(child.get("service") or "")
        if caller == callee:
            continue
        kind = edge_kind(parent, child)
        start = int(child["start_ns"])
        duration = max(0, int(child["end_ns"]) - start) * sign
        error = sign if child.get("status_code") == "error" else 0
        seconds = start // 1_000_000_000
        for resolution in RESOLUTIONS:
            row = into.setdefault((resolution, seconds - seconds % resolution, caller, callee, kind), [0, 0, 0])
            row[0] += sign
            row[1] += error
            row[2] += duration


def edge_difference(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]], into: dict) -> dict:
    before, after = list(before), list(after)
    if len(before) != len(after):
        if before:
            add_edges(before, into, -1)
        if after:
            add_edges(after, into, 1)
    return into


def aggregate_usage(spans: Iterable[Mapping[str, Any]], table: pricing.PriceTable | None = None) -> list[dict]:
    table = table or pricing.current_table()
    sums: dict[tuple, list] = {}
    for span in spans:
        call = llm_call_of(span)
        if call is None:
            continue
        cost = table.cost(call["model"], call["input_tokens"], call["output_tokens"], call["cache_read_tokens"])
        if not math.isfinite(cost):
            cost = 0.0
        service = "" if span.get("service") is None else str(span.get("service"))[:255]
        service = (service.replace("\x00", "\ufffd") if "\x00" in service else service) or "unknown_service"
        seconds = call["start_ns"] // 1_000_000_000
        for resolution in (60, 3600):
            key = (resolution, seconds - seconds % resolution, service, call["model"], call["user_id"], call["agent"])
            row = sums.setdefault(key, [0, 0, 0, 0, 0, 0.0, 0])
            for i, value in enumerate((1, int(call["error"]), call["input_tokens"], call["output_tokens"],
                                       call["cache_read_tokens"], cost, call["duration_ns"])):
                row[i] += value
    columns = ("resolution", "bucket", "service", "model", "user_id", "agent")
    additive = ("calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cost", "total_ns")
    return [dict(zip(columns, key), **dict(zip(additive, sums[key]))) for key in sorted(sums)]


def add_spans(acc: Accumulator, scope: str, spans: Iterable[Mapping[str, Any]]) -> None:
    """Each span counted on its own, as ``Accumulator.add_spans`` counts them all at once."""
    minutes: dict[tuple, list[int]] = {}
    bins: dict[tuple, int] = defaultdict(int)
    error_bins: dict[tuple, int] = defaultdict(int)
    for s in spans:
        start = int(s["start_ns"])
        duration = max(0, int(s["end_ns"]) - start)
        b = bin_for(duration)
        seconds = start // 1_000_000_000
        key = (str(s.get("service") or ""), str(s.get("name") or ""), seconds - seconds % 60)
        row = minutes.setdefault(key, [0, 0, 0, 0])
        row[0] += 1
        if s.get("status_code") == "error":
            row[1] += 1
            error_bins[key + (b,)] += 1
        row[2] += duration
        row[3] = max(row[3], duration)
        bins[key + (b,)] += 1
    for (service, operation, minute), (count, errors, total, longest) in minutes.items():
        for resolution in RESOLUTIONS:
            key = (scope, resolution, minute - minute % resolution, service[:255], operation[:512])
            row = acc.stats.setdefault(key, [0, 0, 0, 0])
            row[0] += count
            row[1] += errors
            row[2] += total
            row[3] = max(row[3], longest)
    for hist_scope, counted in ((scope, bins), (error_scope(scope), error_bins)):
        for (service, operation, minute, b), count in counted.items():
            for resolution in RESOLUTIONS:
                acc.hist[(hist_scope, resolution, minute - minute % resolution, service[:255], operation[:512], b)] += count
