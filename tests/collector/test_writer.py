"""The idempotent span writer on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os

from sqlalchemy import func, select

from collector_worker.storage import block_store, schema, staging
from collector_worker.storage.writer import invalid_reason, store_spans


def make_span(trace_id: str, span_id: str, parent: str | None = None, **extra) -> dict:
    span = {
        "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": "GET /orders",
        "kind": "server", "start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_000_250_000_000,
        "status_code": "ok", "status_message": None, "service": "orders", "resource": {"host.name": "a"},
        "attributes": {"http.status_code": 200}, "events": [], "links": [], "scope": None,
    }
    span.update(extra)
    return span


def random_ids(count: int) -> list[str]:
    return [os.urandom(8).hex() for _ in range(count)]


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def staged(engine) -> list[dict]:
    """Every staged span, as readers get it."""
    with engine.connect() as conn:
        return staging.all_rows(conn)


def test_same_spans_twice_store_once_and_return_nothing_new(engine):
    trace = os.urandom(16).hex()
    spans = [make_span(trace, sid) for sid in random_ids(5)]
    with engine.begin() as conn:
        first = store_spans(conn, spans, received_ns=1000)
    with engine.begin() as conn:
        second = store_spans(conn, spans, received_ns=2000)
    assert sorted(s["span_id"] for s in first) == sorted(s["span_id"] for s in spans)
    assert second == []
    assert len(staged(engine)) == 5
    assert count(engine, schema.spans) == 1  # one staging row: the trace's spans of the batch
    with engine.connect() as conn:
        pending = conn.execute(select(schema.pending_traces)).mappings().all()
    # The redelivered batch changed nothing, not even the pending mark.
    assert [(p["trace_id"], p["first_seen_ns"], p["last_seen_ns"]) for p in pending] == [(trace, 1000, 1000)]


def test_new_span_of_known_trace_moves_last_seen_and_keeps_first_seen(engine):
    trace = os.urandom(16).hex()
    old, new = random_ids(2)
    with engine.begin() as conn:
        store_spans(conn, [make_span(trace, old)], received_ns=1000)
    with engine.begin() as conn:
        returned = store_spans(conn, [make_span(trace, old), make_span(trace, new, parent=old)], received_ns=5000)
    assert [s["span_id"] for s in returned] == [new]
    with engine.connect() as conn:
        row = conn.execute(select(schema.pending_traces)).mappings().one()
    assert (row["first_seen_ns"], row["last_seen_ns"]) == (1000, 5000)


def test_staged_spans_hold_what_json_holds(engine):
    trace, sid = os.urandom(16).hex(), os.urandom(8).hex()

    class Opaque:
        def __str__(self):
            return "opaque-value"

    span = make_span(trace, sid, attributes={"b": b"raw", "o": Opaque(), "n": 1.5, "t": (1, 2)},
                     events=[{"name": "exception", "time_ns": 5, "attributes": {"m": "boom"}}],
                     links=[{"trace_id": trace, "span_id": sid, "attributes": {}}], status_code="error",
                     status_message="boom")
    with engine.begin() as conn:
        store_spans(conn, [span], received_ns=7)
    (row,) = staged(engine)
    assert json.dumps(row["attributes"], separators=(",", ":")) == '{"b":"raw","o":"opaque-value","n":1.5,"t":[1,2]}'
    assert row["events"] == [{"name": "exception", "time_ns": 5, "attributes": {"m": "boom"}}]
    assert row["links"][0]["span_id"] == sid
    assert row["resource"] == {"host.name": "a"}
    assert row["duration_ns"] == 250_000_000
    assert row["received_ns"] == 7
    assert (row["status_code"], row["status_message"]) == ("error", "boom")


def test_overlong_text_is_cut_and_nul_replaced_not_rejected(engine):
    trace, sid = os.urandom(16).hex(), os.urandom(8).hex()
    span = make_span(trace, sid, name="x" * 2000, service="svc\x00name", attributes={"k\x00": "v\x00"})
    with engine.begin() as conn:
        assert len(store_spans(conn, [span], received_ns=1)) == 1
    (row,) = staged(engine)
    assert row["name"] == "x" * 512
    assert row["service"] == "svc\ufffdname"
    assert row["attributes"] == {"k\x00": "v\x00"}


def test_duplicates_inside_one_batch_store_one_row(engine):
    trace, sid = os.urandom(16).hex(), os.urandom(8).hex()
    with engine.begin() as conn:
        returned = store_spans(conn, [make_span(trace, sid), make_span(trace, sid, name="second copy")],
                               received_ns=1)
    assert len(returned) == 1
    assert [s["name"] for s in staged(engine)] == ["GET /orders"]


def test_batches_larger_than_one_statement_are_chunked(engine):
    traces = [os.urandom(16).hex() for _ in range(400)]
    spans = [make_span(trace, sid) for trace in traces for sid in random_ids(10)]  # 4000 rows, > 1 statement
    with engine.begin() as conn:
        returned = store_spans(conn, spans, received_ns=1)
    assert len(returned) == 4000
    assert len(staged(engine)) == 4000
    assert count(engine, schema.spans) == 400  # a row per trace
    assert count(engine, schema.pending_traces) == 400


def test_row_layout_matches_insert_columns_and_schema():
    row = staging.row("a" * 32, [make_span("a" * 32, "b" * 16)], received_ns=1)
    assert len(row) == len(staging.ROW_COLUMNS)
    assert set(staging.ROW_COLUMNS) == {c.name for c in schema.spans.columns}
    assert staging.ids_of(row[6]) == ["b" * 16] and row[1] == staging.batch_id(row[6])


def test_times_beyond_64_bits_are_reported_not_stored():
    assert invalid_reason(make_span("a" * 32, "b" * 16)) is None
    assert "out of range" in invalid_reason(make_span("a" * 32, "b" * 16, end_ns=2**64))


def test_resources_of_every_shape_are_stored(engine):
    trace = os.urandom(16).hex()
    resources = [{"host.name": "a"}, {"host.name": "a"}, {"process.command_args": ["python", "app.py"]},
                 {"nested": {"k": 1}}, {}]
    spans = [make_span(trace, sid, resource=r) for sid, r in zip(random_ids(5), resources)]
    with engine.begin() as conn:
        store_spans(conn, spans, received_ns=1)
    stored = {row["span_id"]: row["resource"] for row in staged(engine)}
    assert stored == {s["span_id"]: s["resource"] for s in spans}


def test_staging_rows_are_deleted_by_key_without_scanning_the_staging_table(sqlite_engine):
    """The finalizer deletes the staging rows it merged; on SQLite by index, whatever the table holds."""
    trace_id = random_ids(1)[0] + random_ids(1)[0]
    spans = [make_span(trace_id, span_id) for span_id in random_ids(4)]
    statements: list[str] = []
    with sqlite_engine.begin() as conn:
        store_spans(conn, spans[:3], 1)
        store_spans(conn, spans[3:], 2)
        keys = staging.keys(conn, [trace_id])[trace_id]
        first = staging.batch_id(staging.packed_ids(spans[:3]))
        assert set(keys) == {first, staging.batch_id(staging.packed_ids(spans[3:]))}
        conn.connection.driver_connection.set_trace_callback(statements.append)
        block_store.delete_staged(conn, [(trace_id, first)])
        conn.connection.driver_connection.set_trace_callback(None)
        deletes = {s for s in statements if s.startswith("DELETE")}
        assert deletes
        for statement in deletes:
            plan = " ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"))
            assert "SCAN spans" not in plan, plan
    assert [s["span_id"] for s in staged(sqlite_engine)] == [spans[3]["span_id"]]


def test_a_row_per_trace_and_entry_and_spans_stored_from_another_entry_are_left_out(engine):
    """The same entry stored again hits its own key; a span another entry already staged is not staged twice."""
    trace = os.urandom(16).hex()
    a, b, c = (make_span(trace, sid) for sid in random_ids(3))
    with engine.begin() as conn:
        assert len(store_spans(conn, [a, b], 1, sources=["1-0", "1-0"])) == 2
    with engine.begin() as conn:
        assert store_spans(conn, [a, b], 2, sources=["1-0", "1-0"]) == []
        assert [s["span_id"] for s in store_spans(conn, [b, c], 3, sources=["2-0", "2-0"])] == [c["span_id"]]
    assert sorted(s["span_id"] for s in staged(engine)) == sorted(s["span_id"] for s in (a, b, c))
    assert count(engine, schema.spans) == 2  # one row per trace and entry
