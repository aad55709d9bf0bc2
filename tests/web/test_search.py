"""GET /api/v1/traces: every filter, sorting, paging and the 400 paths, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.web.seed import new_trace_id, span, store


def ids(client, query: str) -> list[str]:
    response = client.get("/api/v1/traces?" + query)
    assert response.status_code == 200, response.get_json()
    return [t["trace_id"] for t in response.get_json()["traces"]]


def test_lists_all_newest_first_with_summary_shape(client, dataset):
    body = client.get("/api/v1/traces").get_json()
    t = dataset.ids
    assert [s["trace_id"] for s in body["traces"]] == [t["orphan"], t["invoice"], t["ask_fast"], t["health"],
                                                        t["ask_slow"]]
    assert body["total"] == 5 and body["next_cursor"] is None
    slow = body["traces"][-1]
    assert slow["root_service"] == "gateway" and slow["root_operation"] == "POST /ask"
    assert slow["duration_ms"] == pytest.approx(800.0)
    assert slow["span_count"] == 3 and slow["error_count"] == 2
    assert slow["services"] == ["gateway", "llm", "retrieval"]
    assert slow["start_ns"] == dataset.base_ns and slow["start_time"].endswith("Z")
    assert slow["incomplete"] is False
    orphan = body["traces"][0]
    assert orphan["incomplete"] is True


def test_service_and_operation_filters(client, dataset):
    t = dataset.ids
    assert set(ids(client, "service=retrieval")) == {t["ask_slow"], t["ask_fast"]}
    assert set(ids(client, "service=retrieval&operation=rerank")) == {t["ask_fast"]}
    assert set(ids(client, "operation=POST%20/ask")) == {t["ask_slow"], t["ask_fast"]}
    assert ids(client, "service=nobody") == []


def test_services_touched_needs_all(client, dataset):
    t = dataset.ids
    assert set(ids(client, "services=gateway,llm")) == {t["ask_slow"]}
    assert set(ids(client, "services=gateway&services=retrieval")) == {t["ask_slow"], t["ask_fast"]}


def test_tag_filters_equal_and_numeric(client, dataset):
    t = dataset.ids
    assert set(ids(client, "tag=user.id=u1")) == {t["ask_slow"], t["ask_fast"]}
    assert set(ids(client, "tag=user.id=u1&tag=tokens>100")) == {t["ask_slow"]}
    assert set(ids(client, "tag=tokens<100")) == {t["ask_fast"]}
    assert set(ids(client, "tag=http.status_code=500")) == {t["ask_slow"]}
    assert ids(client, "tag=user.id=nobody") == []


def test_status_filter(client, dataset):
    t = dataset.ids
    assert set(ids(client, "status=error")) == {t["ask_slow"]}
    assert t["ask_slow"] not in ids(client, "status=ok") and len(ids(client, "status=ok")) == 4


def test_duration_filters_apply_to_the_whole_trace(client, dataset):
    t = dataset.ids
    assert set(ids(client, "min_duration=500ms")) == {t["ask_slow"], t["invoice"]}
    assert set(ids(client, "min_duration=1s")) == {t["invoice"]}
    assert set(ids(client, "max_duration=0.1s")) == {t["health"], t["orphan"]}
    assert set(ids(client, "min_duration=250&max_duration=900")) == {t["ask_slow"], t["ask_fast"]}


def test_time_range_iso_ns_and_lookback(client, dataset):
    t, base = dataset.ids, dataset.base_ns
    assert set(ids(client, f"start={base + 1_500_000_000}")) == {t["ask_fast"], t["invoice"], t["orphan"]}
    assert set(ids(client, f"end={base + 1_500_000_000}")) == {t["ask_slow"], t["health"]}
    from collector_worker.storage.queries import iso_time

    assert set(ids(client, f"start={iso_time(base + 2_500_000_000)}")) == {t["invoice"], t["orphan"]}
    assert len(ids(client, "lookback=1h")) == 5
    assert ids(client, "lookback=1m") == []  # the data set starts ten minutes ago


def test_sorting(client, dataset):
    t = dataset.ids
    assert ids(client, "sort=duration_desc")[:2] == [t["invoice"], t["ask_slow"]]
    assert ids(client, "sort=duration_asc")[0] == t["health"]
    assert ids(client, "sort=start_asc") == [t["ask_slow"], t["health"], t["ask_fast"], t["invoice"], t["orphan"]]


@pytest.mark.parametrize("sort", ["start_desc", "start_asc", "duration_desc", "duration_asc"])
def test_cursor_pages_are_stable_and_complete(client, dataset, database_url, sort):
    everything = ids(client, f"sort={sort}&limit=100")
    seen, cursor, pages = [], None, 0
    while True:
        query = f"sort={sort}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get("/api/v1/traces?" + query).get_json()
        assert body["total"] == (5 if pages == 0 else 6)
        seen += [s["trace_id"] for s in body["traces"]]
        pages += 1
        if pages == 1:  # a trace sorting first arrives meanwhile: it must not shift the next pages
            if sort.endswith("desc"):  # newest and longest
                first = span(new_trace_id(), "late", start_ns=dataset.base_ns + 10**10, duration_ms=5000)
            else:  # oldest and shortest
                first = span(new_trace_id(), "early", start_ns=dataset.base_ns - 10**10, duration_ms=0.001)
            store(database_url, [first])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == everything


def test_kind_filter_matches_traces_holding_a_span_of_that_kind(client, dataset):
    t = dataset.ids
    assert set(ids(client, "kind=server")) == {t["ask_slow"], t["health"], t["ask_fast"]}
    assert set(ids(client, "kind=client")) == {t["ask_slow"]}
    assert set(ids(client, "kind=internal")) == {t["ask_fast"]}
    assert set(ids(client, "kind=consumer")) == {t["invoice"], t["orphan"]}
    assert ids(client, "kind=producer") == []
    assert set(ids(client, "kind=server&service=retrieval&tag=user.id=u1")) == {t["ask_slow"], t["ask_fast"]}


def test_kind_filter_follows_a_late_span_of_a_new_kind(client, database_url):
    trace_id = new_trace_id()
    root = span(trace_id, "publish", start_ns=10**18, duration_ms=10, kind="server")
    store(database_url, [root])
    assert ids(client, "kind=producer") == [] and ids(client, "kind=server") == [trace_id]
    store(database_url, [span(trace_id, "send", start_ns=10**18 + 10**6, duration_ms=2, kind="producer",
                              parent=root["span_id"])])
    assert ids(client, "kind=producer") == [trace_id] and ids(client, "kind=server") == [trace_id]


@pytest.mark.parametrize("query, parameter", [
    ("limit=0", "limit"), ("limit=-5", "limit"), ("limit=1001", "limit"), ("limit=abc", "limit"),
    ("limit=99999999999999999999999", "limit"),
    ("min_duration=fast", "min_duration"), ("min_duration=-3ms", "min_duration"), ("max_duration=1e400", "max_duration"),
    ("min_duration=2s&max_duration=1s", "max_duration"),
    ("start=yesterday", "start"), ("end=2026-13-45", "end"), ("start=99999999999999999999", "start"),
    ("start=9999-12-31T00:00:00Z", "start"),
    ("start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z", "end"),
    ("lookback=forever", "lookback"), ("lookback=0s", "lookback"),
    ("start=2026-01-01T00:00:00Z&lookback=1h", "lookback"),
    ("sort=random", "sort"), ("status=maybe", "status"), ("kind=SERVER", "kind"), ("kind=span", "kind"),
    ("tag=novalue", "tag"), ("tag==x", "tag"), ("tag=tokens>lots", "tag"), ("tag=tokens<nan", "tag"),
    ("cursor=not-a-cursor", "cursor"), ("service=a%00b", "service"), ("operation=" + "x" * 600, "operation"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, query, parameter):
    response = client.get("/api/v1/traces?" + query)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_parameter" and error["parameter"] == parameter and error["message"]


def test_cursor_of_another_sort_is_refused(client, dataset):
    cursor = client.get("/api/v1/traces?limit=1").get_json()["next_cursor"]
    response = client.get(f"/api/v1/traces?limit=1&sort=duration_desc&cursor={cursor}")
    assert response.status_code == 400 and response.get_json()["error"]["parameter"] == "cursor"
