"""Work handed to the export thread with ContrailSpanProcessor.defer: when it runs, and that nothing is lost."""

from __future__ import annotations

import threading

from tests.tracer.tracer_helpers import in_forked_child, stream_spans


def _ender(seen: list):
    """A deferred function that ends the span it is given and notes the thread it ran on."""

    def finish(span):
        seen.append(threading.current_thread().name)
        span.end()

    return finish


def test_deferred_work_runs_on_the_export_thread_before_the_next_export(make_manager, redis_url):
    tracing = make_manager(schedule_delay=30)  # the export thread sleeps until flushed
    processor = tracing._processor
    seen: list[str] = []
    span = tracing.tracer.start_span("deferred end")
    processor.defer(_ender(seen), span)
    assert seen == [] and span.end_time is None
    assert tracing.get_tracer_info()["spans_queued"] == 1  # waiting work is reported as queued
    assert tracing.flush(5)
    assert seen == ["contrail-export"]
    assert [s["name"] for s in stream_spans(redis_url)] == ["deferred end"]
    assert tracing.get_tracer_info()["spans_queued"] == 0


def test_a_full_batch_of_deferred_work_wakes_the_export_thread(make_manager, redis_url):
    tracing = make_manager(schedule_delay=30, max_export_batch_size=5)
    seen: list[str] = []
    for i in range(5):
        tracing._processor.defer(_ender(seen), tracing.tracer.start_span(f"s{i}"))
    from tests.support.servers import wait_until

    wait_until(lambda: len(stream_spans(redis_url)) == 5, timeout=10, message="5 deferred spans exported")
    assert set(seen) == {"contrail-export"}


def test_shutdown_runs_deferred_work_before_it_stops_taking_spans(make_manager, redis_url):
    tracing = make_manager(schedule_delay=30)
    seen: list[str] = []
    for i in range(3):
        tracing._processor.defer(_ender(seen), tracing.tracer.start_span(f"late{i}"))
    tracing.shutdown(timeout=5)
    info = tracing.get_tracer_info()
    assert sorted(s["name"] for s in stream_spans(redis_url)) == ["late0", "late1", "late2"]
    assert info["spans_dropped"] == 0 and len(seen) == 3


def test_defer_runs_inline_past_the_queue_bound_and_survives_a_failing_function(make_manager, redis_url):
    tracing = make_manager(schedule_delay=30, max_queue_size=2)
    processor = tracing._processor
    seen: list[str] = []

    def broken(_item):
        raise RuntimeError("deferred work failed")

    processor.defer(broken, None)
    processor.defer(_ender(seen), tracing.tracer.start_span("queued"))
    processor.defer(_ender(seen), tracing.tracer.start_span("inline"))  # bound reached: runs now, here
    assert seen == [threading.current_thread().name]
    assert tracing.flush(5)  # the failure is logged; the export goes on
    assert sorted(s["name"] for s in stream_spans(redis_url)) == ["inline", "queued"]
    assert seen[1] == "contrail-export"


def test_forked_child_does_not_run_the_parents_deferred_work(make_manager, redis_url):
    tracing = make_manager(schedule_delay=30)
    seen: list[str] = []
    tracing._processor.defer(_ender(seen), tracing.tracer.start_span("parent deferred"))
    # the child has its own (empty) deferred queue: it ends and exports only its own span
    in_forked_child(tracing, lambda: tracing._processor.defer(lambda span: span.end(),
                                                              tracing.tracer.start_span("child deferred")))
    assert tracing.flush(5)
    assert sorted(s["name"] for s in stream_spans(redis_url)) == ["child deferred", "parent deferred"]
    assert seen == ["contrail-export"]
