"""Spans this collector stored lately, by trace, so the finalizer need not read them back.

The consumer adds the rows of newly inserted spans after their transaction
committed; the finalizer takes a claimed trace's spans out and uses them only
when the trace was never finalized before and the database holds exactly as
many spans of it as were taken (so no other collector added any and none was
deleted). Otherwise the spans are read from the database as usual.

Bounded twice, whatever the backlog: by a span count and by an estimate of the
memory the held spans take (:func:`estimated_bytes`). Beyond either bound the
oldest traces are forgotten; forgetting costs only a read back when the trace
is finalized.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Iterable

DEFAULT_SPANS = 200_000
DEFAULT_BYTES = 64 * 1024 * 1024

# Memory of one held span: a decoded span dict with its fixed fields takes ~1.3 KB (tracemalloc, the
# collector benchmark's spans); its attributes, events and links take about 1.3 times their JSON length.
SPAN_OVERHEAD_BYTES = 1400
JSON_FACTOR = 1.5


def estimated_bytes(row: tuple) -> int:
    """Memory one held span is counted at, from its staging row (``writer.SPAN_COLUMNS`` order)."""
    return SPAN_OVERHEAD_BYTES + int(JSON_FACTOR * (len(row[11]) + len(row[12]) + len(row[13])))


class RecentSpans:
    """The held spans by trace, oldest trace first; ``limit`` spans and ``max_bytes`` estimated bytes at most."""

    def __init__(self, limit: int = DEFAULT_SPANS, max_bytes: int = DEFAULT_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self._traces: OrderedDict[str, list[Any]] = OrderedDict()  # trace id -> [spans, estimated bytes]
        self._count = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.forgotten = 0  # spans dropped for the bounds (read back from the database when finalized)

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        """Estimated memory of the spans held now."""
        return self._bytes

    def add(self, stored_rows: list[tuple[tuple, dict[str, Any]]]) -> None:
        """Remember ``(row, span)`` pairs from :func:`store_spans` (call after the commit)."""
        if not stored_rows or self.limit <= 0 or self.max_bytes <= 0:
            return
        spans = held_spans(stored_rows)
        added = 0
        with self._lock:
            traces = self._traces
            for (row, _), span in zip(stored_rows, spans):
                size = estimated_bytes(row)
                added += size
                found = traces.get(span["trace_id"])
                if found is None:
                    traces[span["trace_id"]] = [[span], size]
                else:
                    found[0].append(span)
                    found[1] += size
            self._count += len(spans)
            self._bytes += added
            while (self._count > self.limit or self._bytes > self.max_bytes) and traces:
                _, (dropped, size) = traces.popitem(last=False)
                self._count -= len(dropped)
                self._bytes -= size
                self.forgotten += len(dropped)

    def take(self, trace_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Remove and return what is held of these traces."""
        out = {}
        with self._lock:
            pop = self._traces.pop
            for trace_id in trace_ids:
                held = pop(trace_id, None)
                if held is not None:
                    out[trace_id] = held[0]
                    self._count -= len(held[0])
                    self._bytes -= held[1]
        return out


_PLAIN_VALUES = frozenset((str, int, float, bool))
_STR_ONLY = frozenset((str,))
_HOST_VALUES = frozenset((str, int, type(None)))


def held_spans(stored_rows: list[tuple[tuple, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The spans to hold for ``stored_rows``: assembles exactly as what the finalizer reads back.

    The usual decoded span is held as it is (not copied): its stored columns are the very objects of
    the row, its attributes are plain, and its resource's host keys survive JSON unchanged (assembly
    reads nothing else of the resource). Its assembly columns are absent, which assembly reads as
    never assembled. Any other span is held as the row's values (:func:`cached_span`).
    """
    out = []
    append = out.append
    plain, str_only = _PLAIN_VALUES.issuperset, _STR_ONLY.issuperset
    resources: dict[int, bool] = {}  # id(resource) -> host keys survive JSON (spans of an entry share one)
    for row, span in stored_rows:
        get = span.get
        attributes = get("attributes")
        if (row[3] is get("service") and row[4] is get("name") and row[5] is get("kind")
                and row[9] is get("status_code") and "depth" not in span
                and type(attributes) is dict and plain(map(type, attributes.values()))
                and str_only(map(type, attributes))):
            resource = get("resource")
            ok = resources.get(id(resource))
            if ok is None:
                ok = resources[id(resource)] = type(resource) is dict and \
                    _HOST_VALUES.issuperset((type(resource.get("host.name")), type(resource.get("host.id"))))
            if ok:
                append(span)
                continue
        append(cached_span(row, span))
    return out


def cached_span(row: tuple, span: dict[str, Any]) -> dict[str, Any]:
    """What the finalizer would read back for a stored row (``writer.SPAN_COLUMNS`` order)."""
    attributes = span.get("attributes")
    if not attributes:
        attributes = {}
    elif type(attributes) is not dict or not _PLAIN_VALUES.issuperset(map(type, attributes.values())) \
            or not _STR_ONLY.issuperset(map(type, attributes)):
        try:  # values JSON turns into something else: take what the database holds
            attributes = json.loads(row[11])
        except ValueError:
            attributes = {}
        if type(attributes) is not dict:
            attributes = {}
    return {"trace_id": row[0], "span_id": row[1], "parent_span_id": row[2], "service": row[3], "name": row[4],
            "kind": row[5], "start_ns": row[6], "end_ns": row[7], "status_code": row[9], "status_message": row[10],
            "attributes": attributes, "events": row[12], "links": row[13], "resource": row[14], "scope": row[15],
            "received_ns": row[16], "depth": None, "self_time_ns": None, "critical_path": False}
