"""`contrail cleanup --all` storage: every trace data table emptied, the schema and names kept, storing goes on."""

from __future__ import annotations

from collector_worker.storage import queries, schema, search_keys
from collector_worker.storage.wipe import count_all, wipe_all, wiped_tables
from tests.web.seed import new_trace_id, span, standard_dataset, store


def test_wipe_all_empties_every_trace_table_and_storing_goes_on(engine, database_url):
    data = standard_dataset()
    store(database_url, data.all_spans)
    store(database_url, [span(new_trace_id(), "chat", "llm", start_ns=data.base_ns, duration_ms=3, kind="client",
                              attributes={"gen_ai.request.model": "m-1", "gen_ai.usage.input_tokens": 10})])
    store(database_url, [span(new_trace_id(), "waiting", start_ns=data.base_ns, duration_ms=1)], finalize=False)
    before = count_all(engine)
    postings = ("trace_search_keys",) if engine.dialect.name == "postgresql" else ("trace_operations", "trace_tags")
    for table in ("traces", "trace_blocks", *postings, "trace_tag_numbers", "pending_traces",
                  "stats", "stats_histogram", "dependencies", "llm_usage"):
        assert before[table] > 0, table
    with engine.connect() as conn:
        names_before = conn.execute(schema.names.select()).all()

    calls = []
    wiped = wipe_all(engine, progress=lambda done, total, table: calls.append((done, total, table)))
    assert wiped == before
    tables = wiped_tables(engine)
    assert calls == [(i, len(tables), t.name) for i, t in enumerate(tables, start=1)]
    assert set(count_all(engine).values()) == {0}
    with engine.connect() as conn:
        assert conn.execute(schema.names.select()).all() == names_before  # ids cached by running processes
        assert queries.search_traces(conn, queries.TraceQuery())["traces"] == []

    again = standard_dataset()
    store(database_url, again.all_spans)
    with engine.connect() as conn:
        found = queries.search_traces(conn, queries.TraceQuery(tags=[("user.id", "=", "u1")]))["traces"]
        assert {t["trace_id"] for t in found} == {again.ids["ask_slow"], again.ids["ask_fast"]}
        assert search_keys.lookup(conn, ["user.id"])
