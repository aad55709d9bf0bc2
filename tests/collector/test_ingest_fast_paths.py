"""Ingest's fast paths after decoding give what the step-by-step code gives: admission's quick checks
against its rules applied one by one, the entry-at-a-time grouping and staging check against
``staged_span`` span by span, the staged rows built ahead against ``staging.row``, LLM usage summed over
the possible LLM spans against all spans in key order, and the insert that skips ``RETURNING``."""

from __future__ import annotations

import copy
import random

import pytest

from collector_worker import finalizer, validation
from collector_worker.conventions import map_ai_conventions
from collector_worker.storage import staging
from collector_worker.storage.writer import normalised_span, prepare_spans, staged_span, store_spans
from tracer import limits
from tracer.limits import SpanLimits, limit_span

NOW = 1_796_000_000 * 10**9
WEEK, HOUR = 7 * 86400 * 10**9, 3600 * 10**9
LIMITS = SpanLimits()


class Name(str):
    """A str subclass: staged as a normalised copy."""


def usual(trace: str, i: int, resource: dict) -> dict:
    start = NOW - 10 * WEEK + i * 1000
    return {"trace_id": trace, "span_id": f"{i + 1:016x}", "parent_span_id": None, "name": f"op-{i % 3}",
            "kind": "server", "start_ns": start, "end_ns": start + 500, "status_code": "ok", "status_message": None,
            "service": "svc", "resource": resource, "attributes": {"k": "v", "n": i, "f": 1.5, "b": True},
            "events": [], "links": [], "scope": None}


def odd_changes(span: dict) -> list[dict]:
    """One change each, at a rule's bound and past it."""
    start = span["start_ns"]
    out = [{"name": "n" * 512}, {"name": "n" * 513}, {"name": "a\x00"}, {"name": ""}, {"name": Name("x")},
           {"name": "n" * 16385}, {"name": 5}, {"scope": "s" * 255}, {"scope": "s" * 256}, {"scope": "\x00"},
           {"scope": ""}, {"scope": 3}, {"service": "s" * 255}, {"service": "s" * 256}, {"service": ""},
           {"service": "a\x00"}, {"service": None}, {"service": Name("svc")}, {"status_message": ""},
           {"status_message": "m"}, {"status_message": "m\x00"}, {"status_message": "m" * 16385},
           {"status_message": 0}, {"kind": ""}, {"kind": None}, {"status_code": ""}, {"depth": 1},
           {"attributes": {"k": None}}, {"attributes": {"k": [1]}}, {"attributes": {"k": b"b"}},
           {"attributes": {1: "x"}},
           {"attributes": {"k": "x" * 16384}}, {"attributes": {"k": "x" * 16385}}, {"attributes": None},
           {"attributes": {f"a{i}": i for i in range(129)}}, {"attributes": {f"a{i}": i for i in range(128)}},
           {"attributes": {"gen_ai.usage.input_tokens": "many"}}, {"attributes": {"gen_ai.system": "openai"}},
           {"events": [{"name": "e", "time_ns": start, "attributes": {}}]}, {"events": None}, {"events": ()},
           {"events": [{"name": "e", "time_ns": 1.0, "attributes": {}}]}, {"events": [{"name": "e", "time_ns": 1}]},
           {"events": [{"name": "e", "time_ns": 1, "attributes": {"v": None}}]},
           {"events": [{"name": "e", "time_ns": 1, "attributes": {}}] * 129},
           {"links": [{"trace_id": "1" * 32, "span_id": "2" * 16, "attributes": {}}]},
           {"links": [{"trace_id": "1" * 32, "span_id": "2" * 16, "attributes": {"l": (1,)}}]},
           {"resource": {"b": b"x"}}, {"resource": None}, {"resource": {}},
           {"start_ns": validation.EARLIEST_NS, "end_ns": validation.EARLIEST_NS + 1},
           {"start_ns": validation.EARLIEST_NS - 1, "end_ns": validation.EARLIEST_NS + 1},
           {"start_ns": start, "end_ns": start + WEEK}, {"start_ns": start, "end_ns": start + WEEK + 1},
           {"start_ns": start, "end_ns": start - 1},
           {"start_ns": NOW + HOUR, "end_ns": NOW + HOUR}, {"start_ns": NOW, "end_ns": NOW + HOUR + 1},
           {"start_ns": 1.5}, {"end_ns": None}]
    return out


def entries(seed: int) -> list[tuple[str, list[dict]]]:
    """Entries of usual spans, most with one span changed, some with a span twice or one of an earlier entry."""
    rng = random.Random(seed)
    resource = {"host.name": "h"}
    out: list[tuple[str, list[dict]]] = []
    changes = odd_changes(usual("0" * 32, 0, resource))
    for e, change in enumerate(changes * 2 + [{}] * 10):
        traces = [f"{rng.getrandbits(128):032x}" for _ in range(rng.randrange(1, 4))]
        spans = [usual(traces[i % len(traces)] if i % 5 else traces[0], e * 100 + i, resource)
                 for i in range(rng.choice([1, 7, 20]))]
        rng.choice(spans).update(change)
        if rng.random() < 0.15:
            spans.append(spans[0])
        if out and rng.random() < 0.15:
            spans.append(rng.choice(out[-1][1]))
        out.append((f"{1000 + e}-0", spans))
    return out


def admitted_by_the_rules(span: dict) -> tuple:
    """admit_span's rules applied one by one, each as its own function does it, sizes cut by the full walk."""
    reason = validation.time_reason(span, NOW)
    if reason:
        return reason, span
    map_ai_conventions(span, LIMITS.value_length)
    validation._check_tokens(span)
    limit_span(span, LIMITS)
    return None, span


def test_admission_gives_what_its_rules_give_one_by_one(monkeypatch):
    for _, spans in entries(1):
        for span in spans:
            quick, ruled = copy.deepcopy(span), copy.deepcopy(span)
            before = validation.counters()
            reason = validation.admit_span(quick, LIMITS, NOW)
            counted = {k: v - before[k] for k, v in validation.counters().items()}
            with monkeypatch.context() as patch:
                patch.setattr(limits, "within_limits", lambda span, limits: False)  # limit_span's full walk
                expected_reason, expected = admitted_by_the_rules(ruled)
            assert (reason is None) == (expected_reason is None) and repr(quick) == repr(expected), span
            assert counted["span_times_rejected"] == (1 if reason else 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grouping_entry_at_a_time_gives_what_span_by_span_staging_gives(seed):
    parts = entries(seed)
    spans = [span for _, part in parts for span in part]
    prepared = prepare_spans(spans, 77, runs=[(source, len(part)) for source, part in parts])
    by_key, groups, resources = {}, {}, {}
    for source, part in parts:
        for span in part:
            key = (span["trace_id"], span["span_id"])
            if key not in by_key:
                by_key[key] = span
                groups.setdefault((key[0], source), []).append(staged_span(span, resources))
    assert list(prepared.by_key) == list(by_key) and all(prepared.by_key[k] is v for k, v in by_key.items())
    assert prepared.keys == sorted(by_key)
    assert list(prepared.groups) == list(groups)
    as_is = 0
    for key, group in groups.items():
        got = prepared.groups[key]
        assert [a is by_key[(a["trace_id"], a["span_id"])] for a in got] == \
            [b is by_key[(b["trace_id"], b["span_id"])] for b in group]
        assert repr(got) == repr(group)
        for span in got:  # a span staged as it is holds what its normalised copy holds
            norm = normalised_span(by_key[(span["trace_id"], span["span_id"])])
            assert span == norm or span == {**norm, **{k: v for k, v in span.items() if k not in norm}}
        assert prepared.rows[key] == staging.row(key[0], group, 77, key[1])
        as_is += sum(a is by_key[(a["trace_id"], a["span_id"])] for a in got)
    assert 0 < as_is < len(by_key)  # both kinds were there
    assert prepare_spans(spans, 77, [s for s, part in parts for _ in part]).groups.keys() == groups.keys()


def test_usage_of_the_possible_llm_spans_in_key_order_equals_all_spans_in_key_order():
    rng = random.Random(5)
    spans = []
    for i in range(400):
        span = usual(f"{rng.getrandbits(128):032x}", i, {})
        span["start_ns"] = NOW - rng.randrange(3) * 60 * 10**9
        if i % 3 == 0:
            span["attributes"] = {"gen_ai.request.model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
                                  "gen_ai.usage.input_tokens": rng.randrange(1, 5000),
                                  "gen_ai.usage.output_tokens": rng.randrange(1, 900)}
        elif i % 7 == 0:
            span["attributes"] = rng.choice([{"gen_ai.operation.name": "chat"}, {"openinference.span.kind": "LLM"},
                                             None, {"llm.token_count.total": 9}])
        spans.append(span)
    quick = finalizer.SpanFigures(spans, sort_usage=True)
    ordered = finalizer.SpanFigures(sorted(spans, key=lambda s: (s["trace_id"], s["span_id"])))
    assert quick.usage and repr(quick.usage) == repr(ordered.usage)  # float sums, bit for bit
    assert sorted(quick.acc.stats.items()) == sorted(ordered.acc.stats.items())
    assert sorted(quick.acc.hist.items()) == sorted(ordered.acc.hist.items())


def test_rows_of_new_traces_go_in_without_returning_and_a_row_already_there_is_refused(sqlite_engine):
    spans = [usual("a" * 32, i, {}) for i in range(3)] + [usual("b" * 32, 9, {})]
    prepared = prepare_spans(spans, 5, ["1-0"] * 4)
    rows = [prepared.rows[key] for key in sorted(prepared.groups)]
    with sqlite_engine.begin() as conn:
        assert staging.insert(conn, rows[:1], all_new=True) == [(rows[0][0], rows[0][1])]
    with pytest.raises(RuntimeError, match="already there"):
        with sqlite_engine.begin() as conn:
            staging.insert(conn, rows, all_new=True)
    with sqlite_engine.begin() as conn:  # that transaction was rolled back: the second row is not there
        assert staging.insert(conn, rows) == [(rows[1][0], rows[1][1])]
        assert store_spans(conn, spans, 5, sources=["1-0"] * 4) == []  # all staged already


def test_a_group_another_part_adds_to_is_packed_again():
    spans = [usual("a" * 32, i, {}) for i in range(4)]
    prepared = prepare_spans(spans, 5, runs=[("1-0", 2), ("2-0", 1), ("1-0", 1)])
    assert prepared.rows[("a" * 32, "1-0")] == staging.row("a" * 32, [spans[0], spans[1], spans[3]], 5, "1-0")


def test_a_row_that_cannot_be_packed_fails_only_if_it_is_stored(sqlite_engine):
    spans = [usual("a" * 32, 0, {}), {**usual("a" * 32, 1, {}), "attributes": {"lone": "\ud800"}}]  # not UTF-8
    prepared = prepare_spans(spans, 5, ["1-0", "2-0"])
    assert ("a" * 32, "2-0") not in prepared.rows
    with sqlite_engine.begin() as conn:
        assert store_spans(conn, spans, 5, prepared=prepared, trace_span_limit=1) == spans[:1]  # capped: left out
    with pytest.raises(UnicodeEncodeError):
        with sqlite_engine.begin() as conn:
            store_spans(conn, spans, 5, prepared=prepared, trace_span_limit=2)
