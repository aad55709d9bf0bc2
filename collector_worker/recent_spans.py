"""Spans this collector staged lately, by trace and staged row, so the finalizer need not read them back.

The consumer adds each staged row's spans (the very dicts it packed) after
their transaction committed; the finalizer takes a claimed trace's rows out and
uses those whose keys are still staged in the database, reading back only the
staged rows it does not hold (another collector staged them, or they were
forgotten). A row's key is a digest of its span ids, so a held row and the
database row of the same key hold the same spans.

Bounded twice, whatever the backlog: by a span count and by an estimate of the
memory the held spans take (:func:`estimated_bytes`). When full, rows arriving
are not held (forgetting costs only a read back when their trace is
finalized): finalizers take traces oldest first, so under a backlog the oldest
held traces are the next ones needed, and evicting them for the newest would
leave the finalizer nothing to take. Room is made as the finalizer takes
traces: held traces received before the oldest it just took were finalized by
another collector (or queued again later) and are dropped then.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Iterable

DEFAULT_SPANS = 200_000
DEFAULT_BYTES = 64 * 1024 * 1024

# Memory of one held span: a decoded span dict with its fixed fields takes ~1.3 KB (tracemalloc, the
# collector benchmark's spans); what it holds beyond (attributes, events, links, resource) about 1.5 times
# its packed (msgpack) length.
SPAN_OVERHEAD_BYTES = 1400
PACKED_FACTOR = 1.5


def estimated_bytes(span_count: int, packed_bytes: int) -> int:
    """Memory a held row of ``span_count`` spans, ``packed_bytes`` long when staged, is counted at."""
    return SPAN_OVERHEAD_BYTES * span_count + int(PACKED_FACTOR * packed_bytes)


class RecentSpans:
    """The held rows by trace, oldest trace first; ``limit`` spans and ``max_bytes`` estimated bytes at most.

    ``hits`` counts traces finalized from memory alone, ``misses`` traces that needed a read back,
    ``forgotten`` spans dropped for the bounds.
    """

    def __init__(self, limit: int = DEFAULT_SPANS, max_bytes: int = DEFAULT_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        # trace id -> [{batch id: spans}, span count, estimated bytes, received_ns of its first row]
        self._traces: OrderedDict[str, list[Any]] = OrderedDict()
        self._count = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.forgotten = 0

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        """Estimated memory of the spans held now."""
        return self._bytes

    def counters(self) -> dict[str, int]:
        """What /metrics and the collector report show of the cache."""
        return {"recent_spans_held": self._count, "recent_spans_bytes": self._bytes,
                "recent_spans_hits": self.hits, "recent_spans_misses": self.misses,
                "recent_spans_forgotten": self.forgotten}

    def add(self, stored_rows: list[tuple[str, str, list[dict[str, Any]], int]]) -> None:
        """Remember ``(trace_id, batch_id, spans, packed_bytes)`` rows from ``store_spans`` (after the commit);
        rows beyond the bounds are not held."""
        if not stored_rows or self.limit <= 0 or self.max_bytes <= 0:
            return
        with self._lock:
            traces = self._traces
            for trace_id, batch, spans, packed in stored_rows:
                size = estimated_bytes(len(spans), packed)
                if self._count + len(spans) > self.limit or self._bytes + size > self.max_bytes:
                    self.forgotten += len(spans)
                    continue
                found = traces.get(trace_id)
                if found is None:
                    traces[trace_id] = [{batch: spans}, len(spans), size,
                                        spans[0].get("received_ns", 0) if spans else 0]
                else:
                    found[0][batch] = spans
                    found[1] += len(spans)
                    found[2] += size
                self._count += len(spans)
                self._bytes += size

    def take(self, trace_ids: Iterable[str], before_ns: int | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Remove and return what is held of these traces: trace id -> batch id -> spans.

        ``before_ns``: also drop held traces first received before it (the oldest pending time of the
        traces taken: those were finalized elsewhere or come again later, and would only take room).
        """
        out = {}
        with self._lock:
            traces = self._traces
            pop = traces.pop
            for trace_id in trace_ids:
                held = pop(trace_id, None)
                if held is not None:
                    out[trace_id] = held[0]
                    self._count -= held[1]
                    self._bytes -= held[2]
            if before_ns is not None:
                while traces:
                    trace_id, held = next(iter(traces.items()))
                    if held[3] >= before_ns:
                        break
                    del traces[trace_id]
                    self._count -= held[1]
                    self._bytes -= held[2]
                    self.forgotten += held[1]
        return out
