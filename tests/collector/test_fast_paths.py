"""The collector's fast paths give exactly what the general code gives: the codec's inline row decoding
against ``_decode_row`` row by row, the writer's staging of decoded spans as they are against
``normalised_span``, and the spans ``RecentSpans`` holds against the staged rows read back from the database."""

from __future__ import annotations

import json

import msgpack
import pytest

from collector_worker import assembler, dependencies, finalizer, write_pipeline
from collector_worker.storage import staging
from collector_worker.storage.writer import normalised_span, prepare_spans
from tracer.codec import CodecError, _decode_row, decode_entry, encode_batch

T, T2 = "ab" * 16, "cd" * 16
A, B, C = "1" * 16, "2" * 16, "3" * 16


class Str(str):
    """A str subclass (packed as plain str)."""


def row(**over):
    base = dict(trace_id=T, span_id=A, parent=None, name="GET /x", kind="server", start=10, end=20,
                status="ok", message=None, resource=0, attributes={"k": "v", "n": 1}, events=[], links=[],
                scope=None)
    base.update(over)
    return [base[k] for k in ("trace_id", "span_id", "parent", "name", "kind", "start", "end", "status", "message",
                              "resource", "attributes", "events", "links", "scope")]


ROWS = [
    row(), row(span_id=B, parent=A), row(span_id=C, parent=A, resource=1, events=[["e", 11, {"a": 1}]]),
    row(links=[[T2, B, {}]], message="boom", status="error", scope="lib"),
    row(resource=-1), row(resource=True), row(resource=1.0), row(resource=7), row(resource="0"),
    row(parent=""), row(parent="0" * 16), row(parent=Str(B)), row(parent=5), row(parent="x" * 16),
    row(trace_id="0" * 32), row(trace_id=T.upper()), row(trace_id=T + "\n"), row(trace_id=Str(T)),
    row(trace_id=None), row(span_id="0" * 16), row(span_id=A[:-1]), row(span_id=7),
    row(name=""), row(name=Str("n")), row(name=3), row(kind="weird"), row(kind=["server"]), row(kind=Str("client")),
    row(start=0), row(start=30), row(start=True, end=True), row(start=1.5), row(end=None), row(start=2**63 + 5, end=2**64 - 1),
    row(status="bad"), row(status=["ok"]), row(attributes=[]), row(attributes=None),
    row(events=[["e"]]), row(events=[["e", "x", {}]]), row(events=5), row(events="ab"), row(events={"e": 1}),
    row(events=[["e", 1, [1]]]), row(links=[[T2]]), row(links=[[T2, B, 3]]), row(events=None, links=None),
    row(events=[["e", 1, None]], links=[[T2, B, None]]), row(message=""), row(message=0),
    row()[:-1], (*row(),), "not a row", None, row(resource=2), row(span_id=B),
]
RESOURCES = [["svc", {"host.name": "h1"}], ["svc-b", None], "broken"]


def reference(rows, resources):
    """What decode_entry returned before the inline path: _decode_row on every row."""
    spans, rejected = [], []
    for index, r in enumerate(rows):
        try:
            spans.append(_decode_row(r, resources))
        except CodecError as exc:
            rejected.append((index, str(exc)))
        except Exception as exc:  # anything else is named with its type
            rejected.append((index, f"{type(exc).__name__}: {exc}"))
    return spans, rejected


@pytest.mark.parametrize("resources", [RESOURCES, RESOURCES[:1], [], [[1, {}]]])
def test_inline_decoding_equals_decode_row(resources):
    rows = ROWS * 2  # resources are shared after their first row: the second round runs with them known
    decoded = decode_entry({b"v": b"1", b"enc": b"msgpack", b"n": str(len(rows)).encode(),
                            b"data": msgpack.packb({"resources": resources, "spans": rows}, use_bin_type=True)})
    rows = msgpack.unpackb(msgpack.packb(rows, use_bin_type=True), raw=False)  # what the decoder saw
    spans, rejected = reference(rows, resources)
    assert decoded.rejected == rejected
    assert decoded.spans == spans
    assert [list(s) for s in decoded.spans] == [list(s) for s in spans]  # same key order
    # The json encoding reaches the same loop through json.loads.
    as_json = {b"v": b"1", b"enc": b"json", b"n": str(len(rows)).encode(),
               b"data": json.dumps({"resources": resources, "spans": rows}).encode()}
    assert decode_entry(as_json).spans == spans


def test_spans_of_an_entry_share_their_resource():
    spans = decode_entry(encode_batch([row(), row(span_id=B), row(span_id=C, resource=1)],
                                      [("a", {"host.name": "h"}), ("b", {})])).spans
    assert spans[0]["resource"] is spans[1]["resource"] == {"host.name": "h"}
    assert spans[2]["service"] == "b" and spans[2]["resource"] == {}


class Loop(dict):
    pass


def odd_spans():
    """Spans every branch of row_values sees: defaults, NUL characters, over-long text, odd attributes."""
    circular: list = []
    circular.append(circular)
    shared = {"host.name": "h"}
    out = []
    for i, over in enumerate([
        {}, {"service": None}, {"service": ""}, {"service": "s\x00x"}, {"service": "s" * 300}, {"service": 5},
        {"name": "n" * 600}, {"name": "a\x00b"}, {"name": 7}, {"scope": "sc"}, {"scope": "x" * 300},
        {"scope": "a\x00"}, {"scope": 3}, {"status_message": "m"}, {"status_message": "m\x00"},
        {"status_message": ""}, {"kind": None}, {"status_code": None}, {"status_code": ""},
        {"attributes": {}}, {"attributes": None}, {"attributes": {1: "x", "b": b"y"}},
        {"attributes": {"l": circular}}, {"attributes": {"t": (1, 2), "s": {1}}}, {"attributes": Loop(a=1)},
        {"attributes": {"u": "ünï"}}, {"events": [{"name": "e", "time_ns": 1, "attributes": {}}]},
        {"events": None}, {"links": [{"trace_id": T2, "span_id": B, "attributes": {"x": 1}}]}, {"links": ()},
        {"resource": None}, {"resource": {}}, {"resource": {"host.name": "other"}}, {"resource": {"l": [1]}},
        {"resource": {"bad": {1, 2}}}, {"parent_span_id": A},
    ]):
        span = {"trace_id": T, "span_id": f"{i + 1:016x}", "parent_span_id": None, "name": "op", "kind": "server",
                "start_ns": 10 + i, "end_ns": 50 + 2 * i, "status_code": "ok", "status_message": None,
                "service": "svc", "resource": shared, "attributes": {"k": "v", "n": i, "f": 1.5, "b": True},
                "events": [], "links": [], "scope": None}
        span.update(over)
        out.append(span)
    return out


def test_spans_staged_as_they_are_equal_the_normalised_copy():
    spans = odd_spans()
    prepared = prepare_spans(spans + spans[:3], 123)  # duplicates: the first copy wins
    staged = [s for group in prepared.groups.values() for s in group]
    assert [(s["trace_id"], s["span_id"]) for s in staged] == [(s["trace_id"], s["span_id"]) for s in spans]
    as_is = sum(a is b for a, b in zip(staged, spans))
    assert 0 < as_is < len(spans)  # the usual span is staged as it is, the odd ones as a copy
    for got, span in zip(staged, spans):
        assert got == normalised_span(span) or got is span and got == {**normalised_span(span), **{
            k: v for k, v in span.items() if k not in normalised_span(span)}}
        assert staging.unpack(staging.pack([got])) == [got]  # what is read back is what was staged


def test_held_spans_assemble_as_read_back():
    spans = [s for s in odd_spans() if s["trace_id"] == T]
    spans.append({**spans[0], "span_id": "f" * 16, "resource": {"host.name": b"h"}})  # host that JSON changes
    spans.append({**spans[0], "span_id": "e" * 16, "resource": {"host.id": 1.5}})
    spans.append({**spans[0], "span_id": "d" * 16, "parent_span_id": "1" * 16, "depth": 3})
    held = prepare_spans(spans, 1).groups[(T, "")]
    for span in held:
        span["received_ns"] = 1
    back = staging.unpack(staging.row(T, held, 1)[-1])
    for span in back:
        span["received_ns"] = 1
    assert back == held
    x, y = assembler.assemble(held), assembler.assemble(back)
    assert (x.summary, x.depth, x.self_time_ns, x.critical_path, x.operations, x.tags) == \
        (y.summary, y.depth, y.self_time_ns, y.critical_path, y.operations, y.tags)
    assert dependencies.trace_edges(held) == dependencies.trace_edges(back)
    assert all("depth" not in s for s in held)  # a staged span is never taken for an assembled one


# --------------------------------------------------------------------------- leasing the next batch ahead


def test_leasing_ahead_gives_the_rows_of_claiming_each_pass(engine):
    from sqlalchemy import func, select

    from collector_worker.storage import schema
    from tests.collector.test_finalizer_batch import BASE, S, ingest, snapshot, trace_spans
    from collector_worker.settings import CollectorSettings

    n = finalizer.MAX_TRACES_PER_CALL + 60
    settings = CollectorSettings(quiet_period=2.0)
    ingest(engine, [s for i in range(n) for s in trace_spans(i, "a")], BASE)
    ingest(engine, [s for i in range(n) for s in trace_spans(i, "b")], BASE)
    sqlite = engine.dialect.name == "sqlite"
    ahead = finalizer.ClaimAhead()

    def leased(name):
        p = schema.pending_traces
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(p).where(p.c.claimed_by == name)).scalar_one()

    now = BASE + 5 * S
    assert finalizer.finalize_ready(engine, settings, "c1", now_ns=now, ahead=ahead) == finalizer.MAX_TRACES_PER_CALL
    if sqlite:  # the write transaction leased the next two batches' worth; nobody else may take them
        assert len(ahead.claimed) == 2 * n - finalizer.MAX_TRACES_PER_CALL == leased("c1")
    else:  # PostgreSQL: no shared write lock, nothing leased ahead
        assert not ahead and leased("c1") == 0
    total = finalizer.MAX_TRACES_PER_CALL
    while (k := finalizer.finalize_ready(engine, settings, "c1", now_ns=now, ahead=ahead)):
        total += k
    assert total == 2 * n and not ahead and leased("c1") == 0

    a, b = snapshot(engine, "a"), snapshot(engine, "b")
    assert len(a["traces"]) == n
    for part in ("traces", "ops", "tags", "spans", "stats", "hist", "deps"):
        assert a[part] == b[part], part

    # Late spans: leased ahead, then the collector stops; the leases are given back for anyone to take.
    ingest(engine, [s for i in range(n) for s in trace_spans(i, "a", 8, 9)], BASE + 6 * S)
    later = BASE + 10 * S
    assert finalizer.finalize_ready(engine, settings, "c1", now_ns=later, ahead=ahead) == \
        finalizer.MAX_TRACES_PER_CALL
    if sqlite:
        assert len(ahead.claimed) == 60
        assert finalizer.finalize_ready(engine, settings, "c2", now_ns=later) == 0  # all leased to c1
        ahead.release(engine, "c1")
        assert not ahead and leased("c1") == 0
    assert finalizer.finalize_ready(engine, settings, "c2", now_ns=later) == 60


def test_stale_leases_ahead_are_given_back_not_used(sqlite_engine):
    engine = sqlite_engine
    from tests.collector.test_finalizer_batch import BASE, S, ingest, trace_spans
    from collector_worker.settings import CollectorSettings

    settings = CollectorSettings(quiet_period=2.0)
    ingest(engine, [s for i in range(finalizer.MAX_TRACES_PER_CALL + 5) for s in trace_spans(i, "a")], BASE)
    ahead = finalizer.ClaimAhead()
    now = BASE + 5 * S
    assert finalizer.finalize_ready(engine, settings, "c1", now_ns=now, ahead=ahead) == \
        finalizer.MAX_TRACES_PER_CALL
    assert len(ahead.claimed) == 5
    # Far later than half a lease: the held leases may have expired and gone to another collector.
    much_later = now + finalizer.LEASE_NS
    assert ahead.take(much_later) is None and len(ahead.claimed) == 5
    assert finalizer.finalize_ready(engine, settings, "c1", now_ns=much_later, ahead=ahead) == 5
    assert not ahead


def test_a_busy_write_lock_gets_the_next_leased_batch_assembled_and_written_with_the_first(sqlite_engine):
    engine = sqlite_engine
    import threading

    from collector_worker.storage.writer import write_lock
    from tests.collector.test_finalizer_batch import BASE, S, ingest, snapshot, trace_spans
    from collector_worker.settings import CollectorSettings

    full = finalizer.MAX_TRACES_PER_CALL
    n = 3 * full // 2
    settings = CollectorSettings(quiet_period=2.0)
    ingest(engine, [s for i in range(n) for s in trace_spans(i, "a")], BASE)
    ingest(engine, [s for i in range(n) for s in trace_spans(i, "b")], BASE)
    ahead = finalizer.ClaimAhead()
    now = BASE + 5 * S
    assert finalizer.finalize_ready(engine, settings, "c1", now_ns=now, ahead=ahead) == full
    assert len(ahead.claimed) == 2 * n - full
    lock = write_lock(engine)
    done: list = []
    with lock:  # as if the ingest thread were writing
        worker = threading.Thread(target=lambda: done.append(
            finalizer.finalize_ready(engine, settings, "c1", now_ns=now, ahead=ahead)))
        worker.start()
        for _ in range(6000):  # the worker took the spare leases: it found the lock taken
            if len(ahead.claimed) < 2 * n - 2 * full or not worker.is_alive():
                break
            threading.Event().wait(0.01)
    worker.join(60)
    assert done == [2 * n - full]  # both held batches in one pass
    assert not ahead and finalizer.finalize_ready(engine, settings, "c1", now_ns=now, ahead=ahead) == 0
    a, b = snapshot(engine, "a"), snapshot(engine, "b")
    assert len(a["traces"]) == n
    for part in ("traces", "ops", "tags", "spans", "stats", "hist", "deps"):
        assert a[part] == b[part], part


def test_span_figures_computed_ahead_write_what_recording_them_writes(tmp_path):
    from sqlalchemy import select

    from collector_worker import llm_usage, stats
    from collector_worker.storage import open_engine, schema
    from tests.collector.test_finalizer_batch import trace_spans

    spans = [s for i in range(40) for s in trace_spans(i, "a")]
    for i, s in enumerate(spans[::7]):
        s["attributes"] = {**s["attributes"], "gen_ai.request.model": "gpt-4o-mini",
                           "gen_ai.usage.input_tokens": 100 + i, "gen_ai.usage.output_tokens": 7}
    tables = (schema.stats, schema.stats_histogram, schema.llm_usage)
    results = []
    for name, write in (("ahead", lambda conn: finalizer.SpanFigures(spans).write(conn)),
                        ("recorded", lambda conn: (stats.record_spans(conn, spans, scope="span"),
                                                   llm_usage.record_llm_usage(conn, spans)))):
        engine = open_engine(f"sqlite:///{tmp_path / name}.db")
        with engine.begin() as conn:
            write(conn)
        with engine.connect() as conn:
            results.append([sorted(tuple(r) for r in conn.execute(select(t))) for t in tables])
        engine.dispose()
    assert results[0] == results[1] and all(results[0])


def test_write_pipeline_gives_the_rows_of_finalizing_in_one_thread(sqlite_engine):
    engine = sqlite_engine
    from tests.collector.test_finalizer_batch import BASE, S, finalize_all, ingest, snapshot, trace_spans
    from collector_worker.settings import CollectorSettings

    n = 5 * finalizer.MAX_TRACES_PER_CALL // 2
    recent = finalizer.RecentSpans()
    rows: list = []
    from collector_worker.storage.writer import store_spans
    with engine.begin() as conn:  # "a" as the consumer stores it, held for the finalizer
        finalizer.on_spans_stored(conn, store_spans(conn, [s for i in range(n) for s in trace_spans(i, "a")],
                                                    BASE, stored_rows=rows))
    recent.add(rows)
    written: list = []
    ahead = finalizer.ClaimAhead()
    pipeline = write_pipeline.WritePipeline(engine, CollectorSettings(quiet_period=0.0), "c1", recent, ahead,
                                       on_written=written.append)
    try:
        handed = []
        while (k := pipeline.step()):
            handed.append(k)
    finally:
        pipeline.close()
    assert sum(handed) == sum(written) == n and not ahead
    assert recent.hits == n
    ingest(engine, [s for i in range(n) for s in trace_spans(i, "b")], BASE)  # "b" the usual way
    assert finalize_all(engine, BASE + 10 * S) == n
    a, b = snapshot(engine, "a"), snapshot(engine, "b")
    assert len(a["traces"]) == n
    for part in ("traces", "ops", "tags", "spans", "stats", "hist", "deps"):
        assert a[part] == b[part], part
