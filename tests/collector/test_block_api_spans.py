"""The trace API's block path builds the same span dicts as the general path (row dicts, then span_to_api)."""

from __future__ import annotations

import math

from collector_worker.storage import blocks
from collector_worker.storage.queries import api_spans_of_block, span_to_api

TRACE = "ab" * 16


def _span(span_id: str, parent: str | None, start: int, **extra) -> dict:
    span = {"trace_id": TRACE, "span_id": span_id, "parent_span_id": parent, "service": "api", "name": "op",
            "kind": "server", "start_ns": start, "end_ns": start + 1_234_567, "status_code": "unset",
            "status_message": None, "attributes": {"n": 1}, "events": [], "links": [],
            "resource": {"service.name": "api"}, "scope": None, "received_ns": start}
    span.update(extra)
    return span


def test_block_columns_answer_as_span_to_api_of_decoded_rows():
    spans = [
        _span("0000000000000001", None, 1_700_000_000_999_999_999, status_code="error", status_message="boom"),
        _span("0000000000000002", "0000000000000001", 1_700_000_001_000_000_000, kind="client", scope="lib",
              attributes={"x": math.inf, "s": "é", "nested": {"a": [1, 2]}},
              events=[{"name": "retry", "time_ns": 1_700_000_001_000_500_000, "attributes": {"try": 2}},
                      {"name": "bare"}],
              links=[{"trace_id": "cd" * 16, "span_id": "00000000000000ff"}]),
        _span("0000000000000003", "00000000000000aa", 1_700_000_001_000_000_000, events='[{"name": "text"}]',
              attributes='{"from": "staging text"}'),
        _span("0000000000000004", "0000000000000002", 1_699_999_999_000_000_000, resource=None, attributes={}),
    ]
    depth = {"0000000000000001": 0, "0000000000000002": 1, "0000000000000004": 2}
    self_time = {"0000000000000001": 5, "0000000000000002": 0}
    data = blocks.encode(spans, depth, self_time, {"0000000000000001"})
    rows = sorted(blocks.decode(data), key=lambda s: (s["start_ns"], s["span_id"]))
    cols = blocks.columns(data)
    order = sorted(range(len(cols.ids)), key=lambda i: (cols.starts[i], cols.ids[i]))
    assert api_spans_of_block(cols, order) == [span_to_api(r) for r in rows]
    assert [s["span_id"] for s in api_spans_of_block(cols, order[1:3])] == [r["span_id"] for r in rows[1:3]]
