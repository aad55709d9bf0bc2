"""Finalized traces by day: searched and fetched across days, re-finalized across days, dropped whole.

On SQLite closed days are sealed into period files (storage/periods.py) and retention deletes the
files; on PostgreSQL the same tests run against day partitions (sealing is a no-op there).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from collector_worker.retention import run_retention
from collector_worker.storage import ai_traces, block_store, partitions, periods, queries
from tests.collector.test_finalizer import BASE, S, finalize_all, ingest, make_span, sid, tid

DAY = 86400 * S
WEEK_NS = 7 * DAY


def trace(t, offset_ns, spans=4, service="api", status="unset", attributes=None):
    out = [make_span(t, sid(1), None, 0, 100 + spans, service=service, name="GET /items",
                     attributes={"user.id": t[-3:], "http.status_code": 500 if status == "error" else 200,
                                 **(attributes or {})}, status=status)]
    out += [make_span(t, sid(i), sid(1), i, i + 5, service="db", name="query") for i in range(2, spans + 1)]
    for s in out:
        s["start_ns"] += offset_ns
        s["end_ns"] += offset_ns
    return out


QUERIES = [
    queries.TraceQuery(limit=100),
    queries.TraceQuery(service="api", limit=100),
    queries.TraceQuery(service="db", operation="query", limit=100),
    queries.TraceQuery(tags=[("http.status_code", "=", "500")], limit=100),
    queries.TraceQuery(tags=[("http.status_code", ">", "499")], limit=100),
    queries.TraceQuery(tags=[("user.id", "=", tid(7)[-3:])], limit=100),
    queries.TraceQuery(status="error", limit=100),
    queries.TraceQuery(status="ok", sort="duration_desc", limit=100),
    queries.TraceQuery(min_duration_ns=104 * 1_000_000, limit=100),
    queries.TraceQuery(services=["api", "db"], sort="start_asc", limit=100),
    queries.TraceQuery(kind="internal", limit=100),
    queries.TraceQuery(start_ns=BASE - 2 * DAY - S, end_ns=BASE - DAY + 10 * S, limit=100),  # two days
    queries.TraceQuery(start_ns=BASE - DAY - S, limit=3),  # a page that ends inside a day
]


def store_days(engine, days=(3, 2, 1, 0), per_day=6):
    """``per_day`` traces on each of ``days`` days before BASE, every third with an error."""
    ids = {}
    for day in days:
        ids[day] = [tid(day * 100 + i) for i in range(per_day)]
        spans = [s for i, t in enumerate(ids[day])
                 for s in trace(t, -day * DAY + i * S, spans=3 + i, status="error" if i % 3 == 0 else "unset")]
        ingest(engine, spans, received_ns=BASE - day * DAY)
    finalize_all(engine, BASE + 5 * S)
    return ids


def pages(conn, q):
    """Every page of ``q``: its trace ids in order, with the total."""
    out, cursor = [], None
    while True:
        q.cursor = cursor
        found = queries.search_traces(conn, q)
        out.append(([t["trace_id"] for t in found["traces"]], found["total"]))
        cursor = found["next_cursor"]
        if cursor is None:
            q.cursor = None
            return out


def answers(engine):
    """Every query's pages (trace ids, in order, with totals) and every trace fetched whole."""
    out = []
    with engine.connect() as conn:
        for q in QUERIES:
            out.append(pages(conn, q))
        every = [t["trace_id"] for t in queries.search_traces(conn, queries.TraceQuery(limit=1000))["traces"]]
        fetched = {t: queries.get_trace(conn, t) for t in every}
        out.append(queries.tagged_trace_ids(conn, {"http.status_code": "500"}, [], None, None, 100))  # AI pages
        out.append(queries.tagged_trace_ids(conn, {}, ["user.id"], BASE - 2 * DAY, None, 100))
        out.append(ai_traces.traces_with_key(conn, "user.id", BASE - 3 * DAY, None, None, 100,
                                             tags=[("http.status_code", "500")], exclude=[tid(1)[-3:]]))  # sessions
        out.append(ai_traces.trace_rows(conn, every[:5]))
        out.append([queries.list_services(conn), queries.list_operations(conn, "db"), queries.last_finalized_ns(conn),
                    queries.service_exists(conn, "api"), queries.trace_exists(conn, every[-1])])
    return out, {t: (f["summary"], [s["span_id"] for s in f["spans"]]) for t, f in fetched.items()}


def sealed_files(engine) -> dict[str, int]:
    return periods.file_sizes(engine)


def seal_all(engine, now_ns=None):
    """Seal every closed day, then purge the main file's copies (as two retention passes would)."""
    now_ns = now_ns or time.time_ns()
    periods.seal(engine, now_ns, WEEK_NS)
    periods.seal(engine, now_ns + periods.PURGE_DELAY_NS, WEEK_NS)


def main_rows(engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM main.traces").scalar_one())


def test_searches_and_fetches_read_across_days_the_same_before_and_after_sealing(engine):
    ids = store_days(engine)
    before = answers(engine)
    assert len(before[1]) == 24 and all(before[0])
    two_days = before[0][len(QUERIES) - 2][0][0]
    assert set(two_days) == set(ids[2]) | set(ids[1])  # a window over two days finds both days' traces
    seal_all(engine)
    if engine.dialect.name == "sqlite":
        assert sorted(sealed_files(engine)) == [periods.file_name(partitions.day_of(BASE - d * DAY)) for d in (3, 2, 1)]
        assert main_rows(engine) == 6 + 0  # BASE's day is the fourth: a pass seals three periods at most
        seal_all(engine)  # the next passes seal the rest
        assert main_rows(engine) == 0 and len(sealed_files(engine)) == 4
    assert answers(engine) == before


def test_searches_of_one_shape_with_other_values_find_their_own_traces(engine):
    """A search runs a statement built once per filter shape and layout; each search's values reach it."""
    ids = store_days(engine, days=(2, 1, 0), per_day=3)
    seal_all(engine)
    every = [t for day in (2, 1, 0) for t in ids[day]]
    with engine.connect() as conn:
        for sort in ("start_desc", "duration_asc"):
            for t in every + list(reversed(every)):
                found = queries.search_traces(conn, queries.TraceQuery(tags=[("user.id", "=", t[-3:])], sort=sort,
                                                                       min_duration_ns=1, limit=5))
                assert [f["trace_id"] for f in found["traces"]] == [t] and found["total"] == 1
        for day in (2, 1, 0):
            window = queries.TraceQuery(start_ns=BASE - day * DAY - S, end_ns=BASE - day * DAY + 10 * S, limit=2)
            pages, cursor = [], None
            while True:
                window.cursor = cursor
                found = queries.search_traces(conn, window)
                pages += [f["trace_id"] for f in found["traces"]]
                cursor = found["next_cursor"]
                if cursor is None:
                    break
            assert pages == list(reversed(ids[day]))


def test_numeric_tag_filters_page_the_same_whether_their_matches_are_walked_or_driven(engine, monkeypatch):
    """A part where a numeric tag filter matches many traces is walked in sort order, one with few matches
    is read through the filter's postings (``queries.dense_parts``); both must give the same pages."""
    ids = store_days(engine, days=(2, 1, 0), per_day=6)
    seal_all(engine)
    seal_all(engine)
    numeric = [queries.TraceQuery(tags=[("http.status_code", ">", "499")], limit=2),
               queries.TraceQuery(tags=[("http.status_code", "<", "201")], sort="duration_desc", limit=4),
               queries.TraceQuery(tags=[("http.status_code", "<", "201"), ("http.status_code", ">", "199")],
                                  service="api", sort="start_asc", limit=3),
               queries.TraceQuery(tags=[("http.status_code", ">", "999")], limit=2)]

    answers_by_plan = {}
    for walk_at in (1, 10**9):
        monkeypatch.setattr(queries, "WALK_AT", walk_at)
        with engine.connect() as conn:
            parts = periods.parts(conn)
            shape = queries._shape(numeric[0], [("http.status_code", ">", "499")])
            tags, names = queries._names(conn, numeric[0])
            dense = queries.dense_parts(conn, shape, parts, queries._values(numeric[0], tags, names))
            if engine.dialect.name == "sqlite":
                assert len(parts) == 4 and dense == (False, *(walk_at == 1,) * 3)  # the main file holds none
            answers_by_plan[walk_at] = [pages(conn, q) for q in numeric]
    assert answers_by_plan[1] == answers_by_plan[10**9]
    errors = [t for day in (0, 1, 2) for i, t in enumerate(ids[day]) if i % 3 == 0]
    found = [t for page, _ in answers_by_plan[1][0] for t in page]
    assert sorted(found) == sorted(errors) and answers_by_plan[1][0][0][1] == len(errors)
    assert answers_by_plan[1][3] == [([], 0)]


def test_a_late_span_refinalizes_a_sealed_trace_in_place_and_across_days(engine):
    ids = store_days(engine, days=(2, 1), per_day=4)
    seal_all(engine)
    target, mover = ids[2][1], ids[1][2]
    late = make_span(target, sid(40), sid(1), 50, 60, service="late-svc", name="late-op",
                     attributes={"late": "yes"})
    late["start_ns"] -= 2 * DAY - 1 * S
    late["end_ns"] -= 2 * DAY - 1 * S
    earlier = make_span(mover, sid(41), None, 0, 10, service="early-svc", name="early-op")  # a new root, a day earlier
    earlier["start_ns"] -= 2 * DAY
    earlier["end_ns"] -= 2 * DAY
    ingest(engine, [late, earlier], received_ns=BASE + 60 * S)
    finalize_all(engine, BASE + 120 * S)

    def check():
        with engine.connect() as conn:
            got = queries.get_trace(conn, target)
            assert sid(40) in {s["span_id"] for s in got["spans"]} and got["summary"]["span_count"] == 5
            moved = queries.get_trace(conn, mover)
            assert moved["summary"]["start_ns"] == earlier["start_ns"] and moved["summary"]["span_count"] == 6
            every = [t["trace_id"] for t in queries.search_traces(conn, queries.TraceQuery(limit=1000))["traces"]]
            assert sorted(every) == sorted(ids[2] + ids[1])  # each trace once, the old copies hidden
            assert [t["trace_id"] for t in queries.search_traces(
                conn, queries.TraceQuery(service="late-svc"))["traces"]] == [target]
            assert [t["trace_id"] for t in queries.search_traces(
                conn, queries.TraceQuery(tags=[("late", "=", "yes")]))["traces"]] == [target]
            assert [t["trace_id"] for t in queries.search_traces(conn, queries.TraceQuery(
                start_ns=BASE - 2 * DAY - S, end_ns=BASE - 2 * DAY + 60 * S, service="early-svc"))["traces"]] == [mover]
            numbers = block_store.trace_numbers(conn, [mover])
            assert partitions.day_of_no(numbers[mover]) == partitions.day_of(earlier["start_ns"])

    check()
    seal_all(engine)  # the late rows are sealed too and the superseded copies deleted from the files
    check()
    if engine.dialect.name == "sqlite":
        assert main_rows(engine) == 0
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM superseded_traces").scalar_one() == 0


def test_retention_drops_a_sealed_day_by_deleting_its_file(sqlite_engine, sqlite_url):
    engine = sqlite_engine
    ids = store_days(engine, days=(3, 1), per_day=200)
    seal_all(engine)
    files = sealed_files(engine)
    old_file = periods.file_name(partitions.day_of(BASE - 3 * DAY))
    directory = periods.periods_dir(engine.url.database)
    assert old_file in files and files[old_file] > 100_000

    result = run_retention(engine, BASE - 2 * DAY)

    assert result["traces"] == 200 and result["trace_blocks"] == 200
    assert not (directory / old_file).exists() and not Path(f"{directory / old_file}-wal").exists()
    assert sum(sealed_files(engine).values()) == sum(files.values()) - files[old_file]
    with engine.connect() as conn:
        kept = [t["trace_id"] for t in queries.search_traces(conn, queries.TraceQuery(limit=1000))["traces"]]
        assert sorted(kept) == sorted(ids[1])
        assert queries.get_trace(conn, ids[3][0]) is None
    # this process holds no descriptor of the deleted file: its space is back in the filesystem
    held = [p.resolve() for p in Path(f"/proc/{__import__('os').getpid()}/fd").iterdir() if p.exists()]
    assert not any(str(p).startswith(str(directory / old_file)) for p in held)


def test_late_spans_of_a_dropped_sealed_day_are_counted_as_spans(sqlite_engine):
    """Late spans staged for a trace of a sealed day (one staging row holding three spans) when its file
    is dropped: the pass reports three spans, as the dry run predicts."""
    from collector_worker.retention import count_expired

    engine = sqlite_engine
    ids = store_days(engine, days=(3, 1), per_day=2)
    seal_all(engine)
    late = [make_span(ids[3][0], sid(70 + i), sid(1), 10 + i, 20 + i, service="late") for i in range(3)]
    for s in late:
        s["start_ns"] -= 3 * DAY
        s["end_ns"] -= 3 * DAY
    ingest(engine, late, received_ns=BASE)

    predicted = count_expired(engine, BASE - 2 * DAY)
    result = run_retention(engine, BASE - 2 * DAY)

    assert result["traces"] == 2 and result["spans"] == (3 + 4) + 3
    assert predicted == result


def test_a_file_dropped_under_a_connection_that_attached_it_reads_until_its_next_checkout(sqlite_engine):
    engine = sqlite_engine
    store_days(engine, days=(3, 1), per_day=3)
    seal_all(engine)
    with engine.connect() as reader:  # attached every period file at checkout
        run_retention(engine, BASE - 2 * DAY)
        found = queries.search_traces(reader, queries.TraceQuery(limit=100))  # still sees the old layout
        assert found["total"] == 6
    with engine.connect() as reader:
        assert queries.search_traces(reader, queries.TraceQuery(limit=100))["total"] == 3


def test_retention_while_collectors_ingest_and_finalize(sqlite_engine):
    """A day dropped and days sealed while another thread ingests, re-finalizes and finalizes: nothing
    kept is lost or shown twice, and both files check out intact."""
    engine = sqlite_engine
    ids = store_days(engine, days=(4, 2), per_day=50)
    seal_all(engine)
    errors, stop = [], threading.Event()
    written: list[str] = []

    def collector():
        n = 0
        try:
            while not stop.is_set() or n < 20:
                t = tid(5000 + n)
                late = make_span(ids[2][n % 50], sid(60 + n % 30), sid(1), 1, 2, service="late")
                late["start_ns"] -= 2 * DAY
                late["end_ns"] -= 2 * DAY
                ingest(engine, trace(t, -DAY // 2, spans=3) + [late], received_ns=BASE)
                finalize_all(engine, BASE + 10 * S)
                written.append(t)
                n += 1
        except Exception as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=collector)
    worker.start()
    try:
        for step in range(3):
            run_retention(engine, BASE - 3 * DAY)
            periods.seal(engine, time.time_ns() + (step + 1) * periods.PURGE_DELAY_NS, WEEK_NS)
    finally:
        stop.set()
        worker.join(timeout=300)
    assert not errors
    seal_all(engine, time.time_ns() + 10 * periods.PURGE_DELAY_NS)
    with engine.connect() as conn:
        every = [t["trace_id"] for t in queries.search_traces(conn, queries.TraceQuery(limit=1000))["traces"]]
        assert sorted(every) == sorted(ids[2] + written)
        assert all(queries.get_trace(conn, t) is not None for t in ids[2][:10] + written[:10])
    for path in [Path(engine.url.database), *periods.periods_dir(engine.url.database).glob("*.db")]:
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()


def test_period_length_keeps_any_retention_within_the_attach_limit():
    assert periods.period_length(7 * DAY) == 1  # the default week: a file per day
    for days in range(1, 400):
        length = periods.period_length(days * DAY)
        alive = -(-(days + 1) // length) + (1 if length > 1 else 0)  # a partly expired period included
        assert alive <= 9, days  # SQLite attaches 10 files at most; one is kept for the sealer


@pytest.mark.postgres
def test_postgres_array_postings_answer_every_search_as_sqlite_posting_tables_do(sqlite_url, postgres_url):
    """The same traces stored on both backends: every filter (service, operation, services touched, tag
    equality and ranges, kind, status, duration, time), the service and operation lists and the AI pages'
    tag lookups give the same answers from PostgreSQL's GIN-indexed arrays as from SQLite's tables."""
    from collector_worker.storage import open_engine

    found = []
    for url in (sqlite_url, postgres_url):
        engine = open_engine(url)
        try:
            store_days(engine, days=(2, 1, 0), per_day=8)
            late = make_span(tid(101), sid(40), sid(1), 50, 60, service="late-svc", name="late-op",
                             attributes={"late": "yes"})
            ingest(engine, [late], received_ns=BASE + 60 * S)  # a re-finalization replaces the postings
            finalize_all(engine, BASE + 120 * S)
            found.append(answers(engine))
        finally:
            engine.dispose()
    sqlite_answers, postgres_answers = found
    assert postgres_answers == sqlite_answers
    searched = [pages for pages in sqlite_answers[0][:len(QUERIES)]]
    assert all(pages[0][0] for pages in searched)  # every query matched something
    assert sqlite_answers[0][len(QUERIES) + 4][0][0]["name"] == "api"  # list_services
    assert sqlite_answers[0][len(QUERIES) + 2]  # AI sessions: traces with a key, a tag, values excluded
