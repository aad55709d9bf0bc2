"""Assembly on hand-built trees: self time, critical path, missing parents, clock skew, garbage."""

from __future__ import annotations

from collector_worker.assembler import CLOCK_SKEW_TOLERANCE_NS, assemble

TRACE = "1" * 32
MS = 1_000_000
BASE = 1_700_000_000_000_000_000


def span(span_id, parent, start_ms, end_ms, service="svc", name=None, kind="internal", status="unset",
         attributes=None, resource=None):
    """A span in the codec's decoded shape; ids are short names padded to 16 hex-ish chars."""
    return {
        "trace_id": TRACE, "span_id": span_id, "parent_span_id": parent, "name": name or span_id,
        "kind": kind, "start_ns": BASE + int(start_ms * MS), "end_ns": BASE + int(end_ms * MS),
        "status_code": status, "status_message": None, "service": service, "resource": resource or {},
        "attributes": attributes or {}, "events": [], "links": [], "scope": None,
    }


# time (ms)  0    10   20   30   40   50   60   70   80   90  100
# root       [==================================================]
#  A              [===================]                          (concurrent with B)
#  B                        [=========================]
#   B1                         [=====]
#   B2                                   [==========]
#  C                                                    [=====]
CONCURRENT_TREE = [
    span("root", None, 0, 100),
    span("A", "root", 10, 50),
    span("B", "root", 30, 80),
    span("B1", "B", 35, 45),
    span("B2", "B", 50, 70),
    span("C", "root", 85, 95),
]


def test_self_time_subtracts_union_of_concurrent_children():
    a = assemble(CONCURRENT_TREE)
    # root: children cover [10,80] ∪ [85,95] = 80 ms, so 20 ms are its own
    assert a.self_time_ns == {"root": 20 * MS, "A": 40 * MS, "B": 20 * MS, "B1": 10 * MS, "B2": 20 * MS,
                              "C": 10 * MS}
    assert a.depth == {"root": 0, "A": 1, "B": 1, "B1": 2, "B2": 2, "C": 1}


def test_critical_path_follows_last_finishing_children():
    a = assemble(CONCURRENT_TREE)
    # C ends last; before C starts (85) the last child to finish is B (80); inside B: B2 then B1.
    # A finishes at 50, after B started (30), so it overlaps B and never blocks the end: off the path.
    assert a.critical_path == {"root", "C", "B", "B2", "B1"}


def test_critical_path_picks_the_blocking_one_of_two_overlapping_children():
    # 0    10   20   30   40
    # p    [===================]
    #  fast [====]
    #  slow [==============]
    spans = [span("p", None, 0, 40), span("fast", "p", 0, 10), span("slow", "p", 0, 30)]
    a = assemble(spans)
    assert a.critical_path == {"p", "slow"}
    assert a.self_time_ns["p"] == 10 * MS


def test_children_outside_parent_are_clipped():
    # parent [10 .. 20]; child [15 .. 40] overflows, only [15, 20] counts against the parent
    spans = [span("p", None, 10, 20), span("c", "p", 15, 40)]
    a = assemble(spans)
    assert a.self_time_ns["p"] == 5 * MS
    assert a.critical_path == {"p", "c"}
    summary = a.summary
    assert summary["duration_ns"] == 30 * MS  # the trace still spans everything


def test_summary_fields():
    spans = CONCURRENT_TREE + [span("err", "C", 86, 90, service="db", status="error")]
    s = assemble(spans).summary
    assert s["root_span_id"] == "root" and s["root_service"] == "svc" and s["root_operation"] == "root"
    assert s["span_count"] == 7 and s["error_count"] == 1
    assert s["services"] == ["db", "svc"] and s["service_count"] == 2
    assert s["start_ns"] == BASE and s["duration_ns"] == 100 * MS
    assert s["incomplete"] is False and s["warnings"] == []


def test_missing_parent_makes_extra_roots_and_incomplete():
    spans = [
        span("orphan", "gone", 0, 50),  # earliest, but its parent never arrived
        span("root", None, 5, 60),
        span("kid", "orphan", 10, 20),
    ]
    a = assemble(spans)
    s = a.summary
    assert s["root_span_id"] == "root"  # a true root wins over an earlier orphan
    assert s["incomplete"] is True
    assert [(w["code"], w["span_id"]) for w in s["warnings"]] == [("missing_parent", "orphan")]
    assert a.depth["orphan"] == 0 and a.depth["kid"] == 1


def test_only_orphans_picks_earliest():
    a = assemble([span("x", "gone1", 5, 10), span("y", "gone2", 1, 10)])
    assert a.summary["root_span_id"] == "y" and a.summary["incomplete"] is True


def test_clock_skew_between_services_is_reported_not_adjusted():
    # api [0 .. 100] calls db on another host whose clock is 7 ms behind: the child starts 7 ms early
    spans = [span("api", None, 0, 100, service="api", kind="client"),
             span("db", "api", -7, 50, service="db", kind="server")]
    a = assemble(spans)
    s = a.summary
    assert s["clock_skew_ns"] == 7 * MS
    skew = [w for w in s["warnings"] if w["code"] == "clock_skew"]
    assert len(skew) == 1 and skew[0]["span_id"] == "db" and "7.000 ms" in skew[0]["message"]
    assert s["start_ns"] == BASE - 7 * MS  # times are shown as recorded


def test_no_skew_within_tolerance_same_host_or_async_consumer():
    tolerance_ms = CLOCK_SKEW_TOLERANCE_NS / MS
    spans = [
        span("api", None, 0, 100, service="api", kind="client"),
        span("ok", "api", -tolerance_ms / 2, 50, service="db", kind="server"),
        span("same", "api", -5, 50, service="api"),  # same service and host: one clock
        span("send", "api", 10, 11, service="api", kind="producer"),
        span("task", "send", 200, 900, service="worker", kind="consumer"),  # runs after the producer ended
    ]
    s = assemble(spans).summary
    assert s["clock_skew_ns"] == 0
    assert [w for w in s["warnings"] if w["code"] == "clock_skew"] == []


def test_skew_within_one_service_across_hosts():
    spans = [span("a", None, 0, 10, kind="client", resource={"host.name": "h1"}),
             span("b", "a", 0, 30, kind="server", resource={"host.name": "h2"})]
    assert assemble(spans).summary["clock_skew_ns"] == 20 * MS


def test_work_handed_to_another_service_may_outlive_its_parent():
    # orders hands its context to billing (inject/extract); billing's span ends long after reserve ended.
    same_host = {"host.name": "h1"}
    spans = [span("reserve", None, 0, 10, service="orders", resource=same_host),
             span("invoice", "reserve", 5, 3000, service="billing", resource=same_host),
             span("later", "reserve", 20, 40, service="billing", resource={"host.name": "h2"})]
    s = assemble(spans).summary
    assert s["clock_skew_ns"] == 0 and s["warnings"] == []
    # but one host cannot start a child before its parent, whatever the services: still no skew (one clock)
    early = [span("reserve", None, 0, 10, service="orders", resource=same_host),
             span("invoice", "reserve", -5, 8, service="billing", resource=same_host)]
    assert assemble(early).summary["clock_skew_ns"] == 0


def test_garbage_cycles_self_parent_and_duplicates_terminate():
    spans = [
        span("a", "b", 0, 10), span("b", "a", 1, 9),  # a loop
        span("self", "self", 2, 3),
        span("a", None, 0, 999),  # duplicate id: first copy wins
    ]
    a = assemble(spans)
    assert a.summary["span_count"] == 3
    assert a.summary["incomplete"] is True
    assert a.depth["a"] == 0 and a.depth["b"] == 1  # the loop is cut at its earliest span
    assert a.depth["self"] == 0


def test_empty_input():
    a = assemble([])
    assert a.summary["span_count"] == 0 and a.critical_path == set()


def test_deep_and_wide_traces_without_recursion():
    n = 12_000
    chain = [span(f"s{i}", f"s{i - 1}" if i else None, i * 0.001, 20_000 - i * 0.001) for i in range(n)]
    a = assemble(chain)
    assert a.depth[f"s{n - 1}"] == n - 1
    assert len(a.critical_path) == n  # every nested span blocks its parent's end
    wide = [span("r", None, 0, 1000)] + [span(f"w{i}", "r", i * 0.01, i * 0.01 + 5) for i in range(n)]
    a = assemble(wide)
    assert a.summary["span_count"] == n + 1 and max(a.depth.values()) == 1
    assert f"w{n - 1}" in a.critical_path


def test_operations_and_tags():
    spans = [
        span("r", None, 0, 10, attributes={"http.status_code": 200, "ok": True, "ratio": 0.5, "user": "u1",
                                           "blob": "x" * 300, "list": [1, 2]}),
        span("c", "r", 1, 2, name="r", status="error", attributes={"user": "u1"}),
        span("d", "r", 1, 2, service="db", name="SELECT"),
    ]
    a = assemble(spans)
    # "c" is also named "r": one operation, which had an error
    assert sorted(a.operations) == [("db", "SELECT", False), ("svc", "r", True)]
    tags = {(k, v): num for k, v, num in a.tags}
    assert tags == {("http.status_code", "200"): 200.0, ("ok", "true"): None, ("ratio", "0.5"): 0.5,
                    ("user", "u1"): None}


def test_accepts_stored_rows_with_json_text():
    rows = [dict(span("r", None, 0, 10), attributes='{"a": "b"}', resource='{"host.name": "h"}')]
    a = assemble(rows)
    assert a.tags == [("a", "b", None)]
    assert a.spans["r"] == {"span_id": "r", "depth": 0, "self_time_ns": 10 * MS, "critical_path": True}


# time (ms)   0    100  200  300  400  500
# handler     [=========================]          server span that waits for two task results
#  publish a   [=]                                  producer spans end as soon as the message is sent
#  publish b     [=]
#   run a          [=========]                      consumer spans, children of their publish
#   run b             [=================]
#    db q                 [====]                    a span inside run b
CELERY_TREE = [
    span("handler", None, 0, 500, service="api", kind="server"),
    span("pub_a", "handler", 10, 20, service="api", kind="producer"),
    span("pub_b", "handler", 30, 40, service="api", kind="producer"),
    span("run_a", "pub_a", 50, 250, service="worker", kind="consumer"),
    span("run_b", "pub_b", 80, 480, service="worker", kind="consumer"),
    span("db_q", "run_b", 200, 300, service="worker", kind="client"),
]


def test_task_runs_count_against_the_span_that_published_them():
    """Self time and the critical path see a run as time the publisher's parent spent waiting."""
    a = assemble(CELERY_TREE)
    # the handler's own time: [0,10] + [20,30] + [40,50] + [480,500] = 50 ms; the runs cover the rest
    assert a.self_time_ns["handler"] == 50 * MS
    assert a.self_time_ns["pub_a"] == 10 * MS and a.self_time_ns["run_b"] == 300 * MS
    # run b ends last; before it starts (80) the last thing to finish is publish b (40), before that
    # publish a (20); run a overlaps run b and never blocks the end
    assert a.critical_path == {"handler", "run_b", "db_q", "pub_b", "pub_a"}
    # the tree shown is still publish → run
    assert a.depth == {"handler": 0, "pub_a": 1, "pub_b": 1, "run_a": 2, "run_b": 2, "db_q": 3}


def test_a_run_under_a_root_publish_keeps_its_parent_for_timing():
    """A script that only enqueues has nothing that waits: the run stays outside the short root."""
    spans = [span("pub", None, 0, 10, kind="producer"), span("run", "pub", 20, 120, kind="consumer")]
    a = assemble(spans)
    assert a.critical_path == {"pub"} and a.self_time_ns["pub"] == 10 * MS


def test_tags_repeated_across_spans_are_posted_once_and_equal_numbers_of_other_types_apart():
    """A trace's spans repeat attribute pairs; each pair is tagged once, in first-seen order. Values that
    compare equal but print differently (1, True, 1.0) are different tags, and a NUL is replaced."""
    a = assemble([
        span("root", None, 0, 100, attributes={"k": 1, "m": "GET", "z": "a\x00b"}),
        span("A", "root", 10, 20, attributes={"k": True, "m": "GET", "z": "a\x00b"}),
        span("B", "root", 30, 40, attributes={"k": 1.0, "m": "POST", "n": [1, 2]}),
        span("C", "root", 50, 60, attributes={"k": 1, "m": "GET", "big": 10 ** 300}),
    ])
    assert a.tags == [("k", "1", 1.0), ("m", "GET", None), ("z", "a\ufffdb", None), ("k", "true", None),
                      ("k", "1.0", 1.0), ("m", "POST", None)]
