"""Per-trace figures on varied traces (trace_shapes.py): what every assembly must satisfy, and statistics
of a batch against those of its spans one by one.

Assembly and statistics skip work on the usual shapes (columns read once, loops handled only where
found); deep, wide, broken, skewed, LLM and oddly typed traces must still give consistent figures.
"""

from __future__ import annotations

import copy

import pytest

from collector_worker import assembler, stats
from tests.collector.trace_shapes import varied_traces

TRACES = varied_traces(1500, seed=11)


def assembled(spans):
    try:
        return assembler.assemble(copy.deepcopy(spans))
    except Exception:  # noqa: BLE001 - a malformed trace the finalizer keeps unassembled
        return None


@pytest.mark.parametrize("part", range(3))
def test_every_assembly_accounts_for_each_span_once(part):
    checked = 0
    for spans in TRACES[part::3]:
        a = assembled(spans)
        if a is None:
            continue
        ids = {s["span_id"] for s in spans if isinstance(s.get("span_id"), str)}
        assert set(a.depth) == ids and set(a.self_time_ns) == ids
        assert a.summary["span_count"] == len(ids)
        assert a.critical_path <= ids
        assert all(depth >= 0 for depth in a.depth.values())
        if len(ids) == len(spans):  # no duplicate or missing ids: each span is its own entry
            for s in spans:
                if type(s.get("start_ns")) is int and type(s.get("end_ns")) is int and s["end_ns"] >= s["start_ns"]:
                    assert 0 <= a.self_time_ns[s["span_id"]] <= s["end_ns"] - s["start_ns"]
        checked += 1
    assert checked > len(TRACES[part::3]) // 2


def test_statistics_of_a_batch_equal_those_of_its_spans_one_by_one():
    spans = [s for t in TRACES for s in t if type(s.get("end_ns")) is int]
    whole, single = stats.Accumulator(), stats.Accumulator()
    whole.add_spans("span", copy.deepcopy(spans))
    for s in copy.deepcopy(spans):
        single.add_spans("span", [s])
    assert whole.stats == single.stats and whole.hist == single.hist


def test_the_traces_take_every_path():
    """The checks are only worth something if the shapes reach the general code as well as the fast one."""
    shapes = {"duplicates": 0, "missing parent": 0, "loop": 0, "llm": 0, "json attributes": 0, "odd tag": 0}
    for spans in TRACES:
        ids = [s.get("span_id") for s in spans]
        shapes["duplicates"] += len(set(map(str, ids))) != len(ids)
        a = assembled(spans)
        warnings = repr(a.warnings) if a is not None else ""
        shapes["missing parent"] += "never arrived" in warnings
        shapes["loop"] += "loops back" in warnings
        shapes["llm"] += any(isinstance(s.get("attributes"), dict) and "gen_ai.operation.name" in s["attributes"]
                             for s in spans)
        shapes["json attributes"] += any(isinstance(s.get("attributes"), str) for s in spans)
        shapes["odd tag"] += any(isinstance(s.get("attributes"), dict) and any(
            type(v) in (float, bool, list) for v in s["attributes"].values()) for s in spans)
    assert all(count >= 5 for count in shapes.values()), shapes
