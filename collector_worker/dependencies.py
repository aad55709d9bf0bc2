"""Service dependency edges: caller → callee from parent/child spans that cross services.

Edges are counted when a trace is finalized. A re-finalized trace applies only
the difference between its edge multiset before (the spans assembled last
time) and now, so counts stay exact however many late spans arrive.
"""

from __future__ import annotations

from collections import defaultdict
from operator import itemgetter
from typing import Any, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.engine import Connection

from .assembler import span_attributes
from .stats import RESOLUTIONS, bucket_of, sum_of, upsert_rows
from .storage import schema

EdgeKey = tuple[int, int, str, str, str]  # (resolution, bucket, caller, callee, kind)


_MESSAGING, _RPC, _HTTP = 1, 2, 4
_PREFIX_FLAGS = ((("messaging.", "celery."), _MESSAGING), (("rpc.",), _RPC), (("http.", "url."), _HTTP))


_key_flags: dict[str, int] = {}  # attribute keys repeat endlessly: classify each once
_KEY_FLAGS_LIMIT = 50_000


def _flags_of_key(key: Any) -> int:
    flags = _key_flags.get(key)
    if flags is None:
        flags = 0
        if isinstance(key, str):
            for prefixes, flag in _PREFIX_FLAGS:
                if key.startswith(prefixes):
                    flags |= flag
            if len(_key_flags) < _KEY_FLAGS_LIMIT:
                _key_flags[key] = flags
    return flags


# A span's attribute keys (in order) -> their flags: the spans of an operation repeat one key list. Bounded in
# entries and in the text each holds (a key list never seen before, or too long, is classified key by key).
_flags_of_keys: dict[tuple, int] = {}
_KEY_LISTS_LIMIT = 4096
_KEY_LIST_CHARS = 2048


def _prefix_flags(attrs: Mapping[str, Any]) -> int:
    """Which semantic-convention families the attribute keys belong to, as bit flags (one pass over the keys)."""
    keys = tuple(attrs)
    flags = _flags_of_keys.get(keys)
    if flags is None:
        flags = 0
        get = _key_flags.get
        for key in keys:
            f = get(key) if type(key) is str else None
            flags |= _flags_of_key(key) if f is None else f
        if (len(_flags_of_keys) < _KEY_LISTS_LIMIT
                and sum([len(k) if type(k) is str else 32 for k in keys]) <= _KEY_LIST_CHARS):
            _flags_of_keys[keys] = flags
    return flags


def _kind_of(pk: Any, ck: Any, flags: int) -> str:
    if pk == "producer" or ck == "consumer" or flags & _MESSAGING:
        return "messaging"
    if flags & _RPC:
        return "rpc"
    if (pk == "client" or ck == "server") and flags & _HTTP:
        return "http"
    return "other"


def edge_kind(parent: Mapping[str, Any], child: Mapping[str, Any]) -> str:
    """http, messaging, rpc or other, from span kinds and semantic-convention attributes."""
    flags = _prefix_flags(span_attributes(parent)) | _prefix_flags(span_attributes(child))
    return _kind_of(parent.get("kind"), child.get("kind"), flags)


def trace_edges(spans: Iterable[Mapping[str, Any]]) -> dict[EdgeKey, list[int]]:
    """Edge counts of one trace's spans: key → [calls, errors, total_ns]."""
    edges: dict[EdgeKey, list[int]] = defaultdict(lambda: [0, 0, 0])
    _add_edges(spans, edges, 1)
    return edges


_span_id = itemgetter("span_id")


def _add_edges(spans: Iterable[Mapping[str, Any]], into: dict[EdgeKey, list[int]], sign: int) -> None:
    """Add ``sign`` × the edge counts of one trace's spans into ``into`` (no intermediate mapping)."""
    spans = spans if type(spans) is list else list(spans)
    by_id: dict[str, Mapping[str, Any]] = dict(zip(map(_span_id, spans), spans))
    if len(by_id) != len(spans):  # a duplicated span id: its first copy counts
        by_id = {}
        for s in spans:
            span_id = s["span_id"]
            if span_id not in by_id:
                by_id[span_id] = s
    flags: dict[str, int] = {}  # per span, computed at most once however many children it has
    get_row = into.get
    get_span = by_id.get
    for child_id, child in by_id.items():
        cget = child.get
        pid = cget("parent_span_id")
        if not pid:
            continue
        parent = get_span(pid)
        if parent is None or parent is child:
            continue
        pget = parent.get
        caller, callee = pget("service"), cget("service")
        if type(caller) is not str or not caller:
            caller = str(caller or "")
        if type(callee) is not str or not callee:
            callee = str(callee or "")
        if caller == callee:
            continue
        pf = flags.get(pid)
        if pf is None:
            pf = flags[pid] = _prefix_flags(span_attributes(parent))
        cf = flags.get(child_id)
        if cf is None:
            cf = flags[child_id] = _prefix_flags(span_attributes(child))
        kind = _kind_of(pget("kind"), cget("kind"), pf | cf)
        start = child["start_ns"]
        if type(start) is not int:
            start = int(start)
        end = child["end_ns"]
        duration = (end if type(end) is int else int(end)) - start
        if duration < 0:
            duration = 0
        error = sign if cget("status_code") == "error" else 0
        duration *= sign
        seconds = start // 1_000_000_000
        for resolution in RESOLUTIONS:
            key = (resolution, seconds - seconds % resolution, caller, callee, kind)
            row = get_row(key)
            if row is None:
                row = into[key] = [0, 0, 0]
            row[0] += sign
            row[1] += error
            row[2] += duration


def edge_difference(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]],
                    into: dict[EdgeKey, list[int]] | None = None) -> dict[EdgeKey, list[int]]:
    """Add (edges(after) - edges(before)) into ``into``; what a re-finalization must apply."""
    into = defaultdict(lambda: [0, 0, 0]) if into is None else into
    before, after = list(before), list(after)
    if len(before) == len(after):  # nothing new since the last assembly: no difference
        return into
    if before:
        _add_edges(before, into, -1)
    if after:
        _add_edges(after, into, 1)
    return into


def record_edges(conn: Connection, edges: Mapping[EdgeKey, list[int]]) -> None:
    """Apply edge counts (possibly negative) as additive upserts."""
    rows = [(k[0], k[1], k[2][:255], k[3][:255], k[4], v[0], v[1], v[2]) for k, v in sorted(edges.items()) if any(v)]
    upsert_rows(conn, schema.dependencies, _EDGE_COLUMNS, rows, ("calls", "errors", "total_ns"))


_EDGE_COLUMNS = ("resolution", "bucket", "caller", "callee", "kind", "calls", "errors", "total_ns")


def query_dependencies(conn: Connection, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """Edges with calls in [start_ns, end_ns); hourly rollups for windows of a day or more."""
    start_s, end_s = int(start_ns) // 1_000_000_000, int(end_ns) // 1_000_000_000
    resolution = 3600 if end_s - start_s >= 86400 else 60
    d = schema.dependencies
    q = (select(d.c.caller, d.c.callee, d.c.kind, sum_of(conn, d.c.calls), sum_of(conn, d.c.errors),
                sum_of(conn, d.c.total_ns))
         .where(d.c.resolution == resolution, d.c.bucket >= bucket_of(int(start_ns), resolution), d.c.bucket < end_s)
         .group_by(d.c.caller, d.c.callee, d.c.kind)
         .order_by(d.c.caller, d.c.callee, d.c.kind))
    out = []
    for caller, callee, kind, calls, errors, total in conn.execute(q):
        calls, errors, total = int(calls or 0), int(errors or 0), int(total or 0)
        if calls <= 0:
            continue
        out.append({"caller": caller, "callee": callee, "kind": kind, "calls": calls, "errors": errors,
                    "error_rate": round(errors / calls, 6), "avg_ms": round(total / calls / 1e6, 3)})
    return out
