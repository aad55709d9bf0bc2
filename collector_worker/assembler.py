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
from operator import itemgetter
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


_FIELDS = ("span_id", "parent_span_id", "start_ns", "end_ns", "kind", "service", "name", "status_code", "attributes")
_read_fields = itemgetter(*_FIELDS)


def _columns(spans: list[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """The fields assembly reads (``_FIELDS``), one tuple per field: every span's ``get`` of it, read once."""
    if set(map(type, spans)) == {dict}:
        try:
            return list(zip(*map(_read_fields, spans)))
        except KeyError:  # a field missing from some span: read as None below
            pass
    return list(zip(*[tuple(map(s.get, _FIELDS)) for s in spans]))


def assemble(spans: Iterable[Mapping[str, Any]]) -> Assembly:
    """Assemble one trace from its spans (any order, duplicates ignored).

    Each span's fields are read once, as columns. The usual shape (unique string ids, integer times, no
    parent loop) takes paths that skip what cannot change the result; anything else the general code.
    """
    spans = spans if type(spans) is list else list(spans)
    if len(spans) == 1:
        return _assemble_one(spans[0])
    if not spans:
        return Assembly(summary=_empty_summary())
    ids, pids, starts, ends, kinds, services, names, statuses, attributes = _columns(spans)
    n = len(ids)
    index = dict(zip(ids, range(n)))
    if len(index) != n or set(map(type, ids)) != {str}:  # duplicates or ids that are not strings
        unique: list[Mapping[str, Any]] = []
        index = {}
        for span, span_id in zip(spans, ids):
            if not isinstance(span_id, str) or span_id in index:
                continue
            index[span_id] = len(unique)
            unique.append(span)
        if not unique:
            return Assembly(summary=_empty_summary())
        spans = unique
        ids, pids, starts, ends, kinds, services, names, statuses, attributes = _columns(spans)
        n = len(ids)
    if {*map(type, starts), *map(type, ends)} == {int}:  # int(x or 0) is x: only an end before its start changes
        ends = [e if e > s else s for s, e in zip(starts, ends)]
    else:
        starts, ends = _times(starts, ends)

    parent = None
    if "" not in index:  # then a falsy parent id (None, "") maps to no span, as it must
        get = index.get
        try:
            parent = [get(p, -1) for p in pids]
        except TypeError:  # an unhashable parent id
            parent = None
    warnings: list[dict[str, Any]] = []
    cycle_spans: list[int] = []
    missing_parent = False
    if parent is not None:
        children, roots, depth, reached = _hierarchy(parent)
        if reached == n:  # every span hangs under a root: no span is its own parent, no parent loop
            for i in roots:
                pid = pids[i]
                if pid:  # a parent id that is no span's (a span's own id would not be a root here)
                    missing_parent = True
                    warnings.append(_missing_parent(ids[i], pid))
        else:
            parent = None
    if parent is None:
        parent, children, roots, depth, missing_parent, cycle_spans = _tree(ids, pids, index, starts, warnings)

    if len(roots) == 1:
        root = roots[0]
    else:
        true_roots = [i for i in roots if not pids[i]]
        root = min(true_roots or roots, key=lambda i: (starts[i], -ends[i]))

    if "consumer" in kinds:
        timing_parent, timing_children = _timing_tree(kinds, parent, children)
    else:  # the usual trace: no consumer span to move
        timing_parent, timing_children = parent, children
    self_time = _self_times(starts, ends, timing_children)
    critical = _critical_path(root, starts, ends, timing_parent, timing_children)
    skew_ns, skew_warnings = _clock_skew(spans, starts, ends, parent)
    if skew_warnings:
        warnings.extend(skew_warnings)

    plain_names = {*map(type, services), *map(type, names)} == {str}  # each is then its own text
    operations, error_count = _operations(services, names, statuses, plain_names)
    service_names = sorted({svc for svc, _ in operations})
    start_ns, end_ns = min(starts), max(ends)
    summary = {
        "root_span_id": ids[root],
        "root_service": str(services[root] or ""),
        "root_operation": str(names[root] or ""),
        "start_ns": start_ns,
        "end_ns": end_ns,
        "duration_ns": end_ns - start_ns,
        "span_count": n,
        "error_count": error_count,
        "services": service_names,
        "service_count": len(service_names),
        "incomplete": missing_parent or bool(cycle_spans),
        "clock_skew_ns": skew_ns,
        "warnings": warnings,
    }
    return Assembly(
        summary=summary,
        depth=dict(zip(ids, depth)),
        self_time_ns=dict(zip(ids, self_time)),
        critical_path={ids[i] for i in critical},
        warnings=warnings,
        operations=[(svc, name, err) for (svc, name), err in operations.items()],
        tags=_tags(spans, attributes),
        kinds=_kinds(kinds),
    )


def _assemble_one(span: Mapping[str, Any]) -> Assembly:
    """:func:`assemble` of a trace of one span (common: a lone job, a health check), without the tree work."""
    span_id = span.get("span_id")
    if not isinstance(span_id, str):
        return Assembly(summary=_empty_summary())
    get = span.get
    start = int(get("start_ns") or 0)
    end = int(get("end_ns") or 0)
    if end < start:
        end = start
    pid = get("parent_span_id")
    warnings: list[dict[str, Any]] = []
    missing_parent = bool(pid) and {span_id: 0}.get(pid, -1) < 0  # its own id: a root, not a missing parent
    if missing_parent:
        warnings.append(_missing_parent(span_id, pid))
    service, name = str(get("service") or ""), str(get("name") or "")
    error = bool(get("status_code") == "error")
    summary = {
        "root_span_id": span_id,
        "root_service": service,
        "root_operation": name,
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "span_count": 1,
        "error_count": 1 if error else 0,
        "services": [service],
        "service_count": 1,
        "incomplete": missing_parent,
        "clock_skew_ns": 0,
        "warnings": warnings,
    }
    return Assembly(
        summary=summary,
        depth={span_id: 0},
        self_time_ns={span_id: end - start},
        critical_path={span_id},
        warnings=warnings,
        operations=[(service, name, error)],
        tags=_tags((span,), (get("attributes"),)),
        kinds=_kinds((get("kind"),)),
    )


def _missing_parent(span_id: str, pid: Any) -> dict[str, Any]:
    """The warning on a span whose parent never arrived (the span is shown as an extra root)."""
    return {"code": "missing_parent", "span_id": span_id,
            "message": f"parent span {pid} never arrived; shown as an extra root"}


def _tree(ids: tuple[str, ...], pids: tuple[Any, ...], index: dict[str, int], starts: list[int],
          warnings: list[dict[str, Any]]) -> tuple[list[int], list[list[int]], list[int], list[int], bool, list[int]]:
    """The general tree: parent links (own-parent links and loops cut, with their warnings), children, roots,
    depths, whether a parent is missing and the spans cut loose from loops."""
    n = len(ids)
    parent = [-1] * n
    missing_parent = False
    for i, pid in enumerate(pids):
        if not pid:
            continue
        j = index.get(pid, -1)
        if j < 0:
            missing_parent = True
            warnings.append(_missing_parent(ids[i], pid))
        elif j != i:
            parent[i] = j
    parent, cycle_spans = _break_cycles(parent, starts)
    for i in cycle_spans:
        warnings.append({"code": "missing_parent", "span_id": ids[i],
                         "message": "span's parent chain loops back on itself; shown as an extra root"})
    children, roots, depth, _ = _hierarchy(parent)
    return parent, children, roots, depth, missing_parent, cycle_spans


def _times(raw_starts: tuple[Any, ...], raw_ends: tuple[Any, ...]) -> tuple[list[int], list[int]]:
    """Start and end of each span as integers (missing: 0), an end before its start moved to the start."""
    starts: list[int] = []
    ends: list[int] = []
    for s, e in zip(raw_starts, raw_ends):
        start = int(s or 0)
        end = int(e or 0)
        starts.append(start)
        ends.append(end if end > start else start)
    return starts, ends


def _children(parent: list[int]) -> tuple[list[list[int]], list[int]]:
    """Each span's children, and the roots (spans without a parent), in span order."""
    children: list[list[int]] = [[] for _ in parent]
    roots = []
    for i, p in enumerate(parent):
        if p >= 0:
            children[p].append(i)
        else:
            roots.append(i)
    return children, roots


def _kinds(kinds: tuple[Any, ...]) -> list[str]:
    """The span kinds the trace holds, sorted (a missing kind is internal)."""
    try:
        distinct = set(kinds)
    except TypeError:
        distinct = None
    if distinct is None or set(map(type, distinct)) != {str}:
        return sorted({k or "internal" for k in kinds})
    return sorted({k or "internal" for k in distinct})


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


def _timing_tree(kinds: list[Any], parent: list[int],
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
             if p >= 0 and parent[p] >= 0 and kinds[i] == "consumer" and kinds[p] == "producer"]
    if not moved:
        return parent, children
    timing_parent = list(parent)
    for i in moved:
        timing_parent[i] = parent[parent[i]]
    return timing_parent, _children(timing_parent)[0]


def _hierarchy(parent: list[int]) -> tuple[list[list[int]], list[int], list[int], int]:
    """Children of each span, the roots (in span order), the depth of every span below them, and how many
    spans the roots reach (fewer than all: some hang under a parent loop)."""
    n = len(parent)
    children, roots = _children(parent)
    depth = [0] * n
    stack = list(roots)
    reached = len(roots)
    while stack:
        i = stack.pop()
        kids = children[i]
        if kids:
            d = depth[i] + 1
            for c in kids:
                depth[c] = d
            stack += kids
            reached += len(kids)
    return children, roots, depth, reached


def _self_times(starts: list[int], ends: list[int], children: list[list[int]]) -> list[int]:
    """Own duration minus the union of the children's intervals clipped to the span."""
    result = [e - s for s, e in zip(starts, ends)]  # leaves: all of it
    for i, kids in enumerate(children):
        if not kids:
            continue
        s, e = starts[i], ends[i]
        if len(kids) == 1:
            c = kids[0]
            a, b = starts[c], ends[c]
            if a < s:
                a = s
            if b > e:
                b = e
            if b > a:
                result[i] -= b - a
            continue
        intervals = sorted([(a if (a := starts[c]) > s else s, b if (b := ends[c]) < e else e) for c in kids])
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
        result[i] -= covered
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
    A span's children are clipped (to its clipped interval) when the walk
    first enters it: spans the walk never enters need no clipping.
    """
    n = len(starts)
    cs: list[int] = [0] * n  # clipped start and end of each span whose parent the walk entered
    ce: list[int] = [0] * n
    cs[root], ce[root] = starts[root], ends[root]
    kids: list[list[int] | None] = [None] * n  # clipped children, last finishing first, once entered

    on_path: set[int] = set()
    current, cursor = root, None
    for _ in range(4 * n + 4):  # each span is entered downwards at most once; bound the loop anyway
        if cursor is None:  # entered from above: clip its children
            ps, pe = cs[current], ce[current]
            kept = []
            for c in children[current]:
                sc, ec = starts[c], ends[c]
                s = sc if sc > ps else ps
                e = ec if ec < pe else pe
                if sc > pe or ec < ps or e < s:
                    continue
                cs[c], ce[c] = s, e
                kept.append(c)
            if len(kept) > 1:
                kept.sort(key=ce.__getitem__, reverse=True)  # last finishing first
            kids[current] = kept
            child = kept[0] if kept else None
        else:
            child = None
            for c in kids[current]:
                if ce[c] < cursor:
                    child = c
                    break
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
    over through inject/extract) may legitimately outlive its parent. Children
    within the tolerance of their parent on both sides (nearly all) are passed
    over on their times alone.
    """
    tolerance = CLOCK_SKEW_TOLERANCE_NS
    largest = 0
    warnings = []
    for i, p in enumerate(parent):
        if p < 0:
            continue
        early = starts[p] - starts[i]
        if early <= tolerance and ends[i] - ends[p] <= tolerance:
            continue
        span, par = spans[i], spans[p]
        synchronous = par.get("kind") == "client" and span.get("kind") == "server"
        late = ends[i] - ends[p] if synchronous else 0
        amount = max(early, late)
        if amount <= tolerance:
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


def _operations(services: tuple[Any, ...], names: tuple[Any, ...], statuses: tuple[Any, ...],
                plain_names: bool) -> tuple[dict[tuple[str, str], bool], int]:
    """{(service, name): had_error} in first-seen order, and the number of spans with an error status.

    When every service and name is a string (``plain_names``: each is then its own text), the distinct pairs
    are found in one C-level pass and only the spans with an error status are looked at again.
    """
    if plain_names:
        ops = dict.fromkeys(zip(services, names), False)
        errors = statuses.count("error")
        if errors:
            for i, status in enumerate(statuses):
                if status == "error":
                    ops[(services[i], names[i])] = True
        return ops, errors
    ops = {}
    errors = 0
    for service, name, status in zip(services, names, statuses):
        key = (str(service or ""), str(name or ""))
        if status == "error":
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


def _tags(spans: list[Mapping[str, Any]], attributes: tuple[Any, ...]) -> list[tuple[str, str, float | None]]:
    """The trace's searchable (key, text, number) attribute pairs in first-seen order, at most MAX_TAGS_PER_TRACE."""
    seen: dict[tuple[str, str], float | None] = {}
    ints_seen: set[tuple[Any, int]] = set()
    for attrs, s in zip(attributes, spans):
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
