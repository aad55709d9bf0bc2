"""The fast per-trace figures equal the straightforward reference (reference_figures.py) on varied traces.

Assembly, edges, usage rows and statistics skip work on the usual shapes (columns read once, distinct
pairs found in C, loops only where an answer can differ); deep, wide, broken, skewed, LLM and oddly
typed traces (trace_shapes.py) must give exactly what the span-by-span code gives, down to the order of
every dict and list and the exception a malformed trace raises.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import pytest

from collector_worker import assembler, dependencies, llm_usage, stats
from tests.collector import reference_figures as reference
from tests.collector.trace_shapes import varied_traces

TRACES = varied_traces(1500, seed=11)


def outcome(fn, *args):
    """What ``fn`` returns, or the type and text of what it raises, as comparable text."""
    try:
        return repr(fn(*args))
    except Exception as exc:  # a malformed trace must fail the same way
        return f"raised {type(exc).__name__}: {exc}"


def assembly_of(assemble, spans):
    a = assemble(copy.deepcopy(spans))
    return (a.summary, list(a.depth.items()), list(a.self_time_ns.items()), sorted(a.critical_path), a.warnings,
            a.operations, [(k, type(k), v, type(v), repr(num)) for k, v, num in a.tags], a.kinds)


def edges_of(edge_difference, spans):
    into = defaultdict(lambda: [0, 0, 0])
    edge_difference([s for s in spans if s.get("depth") is not None], copy.deepcopy(spans), into=into)
    return list(into.items())


def first_edges_of(spans):
    """The edges of a first finalization through the assembly's links, as the finalizer may count them."""
    spans = copy.deepcopy(spans)
    into = defaultdict(lambda: [0, 0, 0])
    try:
        a = assembler.assemble(spans, keep_links=True)
    except Exception:  # a trace assembly refuses is never counted
        return None
    dependencies.assembly_edges(a, spans, into)
    return list(into.items())


def stats_of(add_spans, spans):
    acc = stats.Accumulator()
    add_spans(acc, copy.deepcopy(spans))
    return list(acc.stats.items()), list(acc.hist.items())


@pytest.mark.parametrize("part", range(3))
def test_assembly_equals_reference(part):
    for spans in TRACES[part::3]:
        assert outcome(assembly_of, assembler.assemble, spans) == outcome(assembly_of, reference.assemble, spans)


def test_edges_equal_reference():
    for spans in TRACES:
        got = outcome(edges_of, dependencies.edge_difference, spans)
        assert got == outcome(edges_of, reference.edge_difference, spans)


def test_edges_from_the_assembly_equal_reference():
    linked = 0
    for spans in TRACES:
        got = outcome(first_edges_of, spans)
        if got == "None":
            continue
        linked += assembler.assemble(copy.deepcopy(spans), keep_links=True).links is not None
        assert got == outcome(edges_of, reference.edge_difference, [{k: v for k, v in s.items() if k != "depth"}
                                                                     for s in spans])
    assert linked > len(TRACES) // 2  # most traces take the links; the others the general code


def test_usage_and_statistics_equal_reference():
    spans = [s for t in TRACES for s in t if type(s.get("end_ns")) is int]
    for i in range(0, len(spans), 2000):
        batch = spans[i:i + 2000]
        assert outcome(llm_usage.aggregate_usage, batch) == outcome(reference.aggregate_usage, batch)
        assert (outcome(stats_of, lambda acc, s: acc.add_spans("span", s), batch)
                == outcome(stats_of, lambda acc, s: reference.add_spans(acc, "span", s), batch))


def test_the_traces_take_every_path():
    """The comparison is only worth something if the shapes reach the general code as well as the fast one."""
    shapes = {"duplicates": 0, "missing parent": 0, "loop": 0, "llm": 0, "json attributes": 0, "odd tag": 0}
    for spans in TRACES:
        ids = [s.get("span_id") for s in spans]
        shapes["duplicates"] += len(set(map(str, ids))) != len(ids)
        warnings = outcome(lambda: assembler.assemble(spans).warnings)
        shapes["missing parent"] += "never arrived" in warnings
        shapes["loop"] += "loops back" in warnings
        shapes["llm"] += any(isinstance(s.get("attributes"), dict) and "gen_ai.operation.name" in s["attributes"]
                             for s in spans)
        shapes["json attributes"] += any(isinstance(s.get("attributes"), str) for s in spans)
        shapes["odd tag"] += any(isinstance(s.get("attributes"), dict) and any(
            type(v) in (float, bool, list) for v in s["attributes"].values()) for s in spans)
    assert all(count >= 5 for count in shapes.values()), shapes
