"""TracingManager API: parentage, errors, logs, spans arriving in the real Redis stream."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanKind

from tracer import TracingManager, get_current_span

from tests.tracer.tracer_helpers import by_name, stream_entries, stream_spans


def test_start_finish_span_arrives_with_ids_parent_service_attributes(make_manager, redis_url):
    tracing = make_manager(service_name="orders")
    root = tracing.start_span("process_order", tags={"order.id": 42, "note": "x"})
    child = tracing.start_span("charge", parent_span=root, kind="client")
    tracing.finish_span(child, tags={"amount": 9.5})
    tracing.finish_span(root, tags={"success": True})
    assert tracing.flush(5)

    spans = by_name(stream_spans(redis_url))
    root_ctx, child_ctx = root.get_span_context(), child.get_span_context()
    assert spans["process_order"]["trace_id"] == format(root_ctx.trace_id, "032x")
    assert spans["process_order"]["span_id"] == format(root_ctx.span_id, "016x")
    assert spans["process_order"]["parent_span_id"] is None
    assert spans["charge"]["trace_id"] == spans["process_order"]["trace_id"]
    assert spans["charge"]["span_id"] == format(child_ctx.span_id, "016x")
    assert spans["charge"]["parent_span_id"] == spans["process_order"]["span_id"]
    assert spans["charge"]["kind"] == "client"
    assert spans["process_order"]["attributes"] == {"order.id": 42, "note": "x", "success": True}
    assert spans["charge"]["attributes"] == {"amount": 9.5}
    for span in spans.values():
        assert span["service"] == "orders"
        assert span["resource"]["service.name"] == "orders"
        assert "host.name" in span["resource"] and "telemetry.sdk.version" in span["resource"]
        assert span["end_ns"] >= span["start_ns"] > 0


def test_default_parent_is_current_span_and_parent_accepts_context_and_span_context(make_manager, redis_url):
    tracing = make_manager()
    with tracing.span("outer") as outer:
        assert get_current_span() is outer
        implicit = tracing.start_span("implicit")
        assert get_current_span() is outer  # start_span does not make its span current
        tracing.finish_span(implicit)
    by_ctx = tracing.start_span("by_span_context", parent_span=outer.get_span_context())
    tracing.finish_span(by_ctx)
    by_context = tracing.start_span("by_context", parent_span=trace.set_span_in_context(outer))
    tracing.finish_span(by_context)
    orphan = tracing.start_span("orphan")
    tracing.finish_span(orphan)
    assert tracing.flush(5)

    spans = by_name(stream_spans(redis_url))
    outer_id = spans["outer"]["span_id"]
    for name in ("implicit", "by_span_context", "by_context"):
        assert spans[name]["parent_span_id"] == outer_id, name
        assert spans[name]["trace_id"] == spans["outer"]["trace_id"]
    assert spans["orphan"]["parent_span_id"] is None
    assert spans["orphan"]["trace_id"] != spans["outer"]["trace_id"]


def test_bad_parent_type_is_a_clear_error(make_manager):
    tracing = make_manager()
    with pytest.raises(TypeError, match="parent_span must be"):
        tracing.start_span("x", parent_span="not a span")
    with pytest.raises(ValueError, match="unknown span kind"):
        tracing.start_span("x", kind="sideways")


def test_finish_span_error_and_logs_become_events(make_manager, redis_url):
    tracing = make_manager()
    span = tracing.start_span("failing")
    try:
        raise ValueError("card declined")
    except ValueError as exc:
        tracing.finish_span(span, logs=["retrying", {"event": "charge", "attempt": 2, "blob": {"a": 1}}], error=exc)
    assert tracing.flush(5)

    (stored,) = stream_spans(redis_url)
    assert stored["status_code"] == "error"
    assert stored["status_message"] == "ValueError: card declined"
    assert stored["attributes"]["error.type"] == "ValueError"
    names = [e["name"] for e in stored["events"]]
    assert names == ["retrying", "charge", "exception"]
    charge = stored["events"][1]["attributes"]
    assert charge == {"attempt": 2, "blob": "{'a': 1}"}
    exception = stored["events"][2]["attributes"]
    assert exception["exception.type"] == "ValueError"
    assert exception["exception.message"] == "card declined"
    assert "Traceback" in exception["exception.stacktrace"]


def test_finish_span_twice_and_on_none_is_harmless(make_manager, redis_url):
    tracing = make_manager()
    span = tracing.start_span("once")
    tracing.finish_span(span)
    tracing.finish_span(span, tags={"late": 1})
    tracing.finish_span(None)
    assert tracing.flush(5)
    (stored,) = stream_spans(redis_url)
    assert "late" not in stored["attributes"]


def test_span_context_manager_sets_current_records_exception_and_reraises(make_manager, redis_url):
    tracing = make_manager()
    with pytest.raises(KeyError):
        with tracing.span("work", kind=SpanKind.SERVER, user="ann") as span:
            assert get_current_span() is span
            tracing.checkpoint("loaded", rows=3)
            raise KeyError("missing")
    assert get_current_span() is INVALID_SPAN
    tracing.checkpoint("nowhere")  # no current span: nothing happens
    assert tracing.flush(5)
    (stored,) = stream_spans(redis_url)
    assert stored["kind"] == "server"
    assert stored["attributes"]["user"] == "ann"
    assert stored["status_code"] == "error"
    assert [e["name"] for e in stored["events"]] == ["loaded", "exception"]
    assert stored["events"][0]["attributes"] == {"rows": 3}


def test_tags_are_truncated_and_unsupported_values_become_text(make_manager, redis_url):
    tracing = make_manager(max_attribute_length=20)
    span = tracing.start_span("t", tags={"long": "x" * 100, "obj": {"k": [1, 2]}, "none": None, "seq": [1, 2]})
    tracing.finish_span(span)
    assert tracing.flush(5)
    (stored,) = stream_spans(redis_url)
    assert len(stored["attributes"]["long"]) == 20
    assert stored["attributes"]["obj"] == "{'k': [1, 2]}"
    assert stored["attributes"]["seq"] == [1, 2]
    assert "none" not in stored["attributes"]


def test_spans_go_out_as_one_entry_per_batch(make_manager, redis_url):
    tracing = make_manager(max_export_batch_size=10, schedule_delay=30)
    for i in range(35):
        tracing.finish_span(tracing.start_span(f"s{i}"))
    assert tracing.flush(5)
    sizes = [int(fields[b"n"]) for _, fields in stream_entries(redis_url)]
    # The thread wakes when a full batch is queued and then drains what is there, so a batch the
    # application is still filling may go out short: sizes depend on timing, the bounds do not.
    assert sizes[0] == 10 and max(sizes) == 10 and sum(sizes) == 35 and len(sizes) >= 4
    names = [s["name"] for s in stream_spans(redis_url)]
    assert names == [f"s{i}" for i in range(35)]
    info = tracing.get_tracer_info()
    assert info["batches_exported"] == len(sizes) and info["spans_exported"] == 35 and info["spans_started"] == 35


def test_queue_full_drops_are_counted(make_manager, redis_url):
    tracing = make_manager(max_queue_size=5, max_export_batch_size=100, schedule_delay=60)
    for i in range(12):
        tracing.finish_span(tracing.start_span(f"s{i}"))
    info = tracing.get_tracer_info()
    assert info["spans_queued"] == 5
    assert info["spans_dropped"] == 7
    assert tracing.flush(5)
    assert [s["name"] for s in stream_spans(redis_url)] == [f"s{i}" for i in range(5)]


def test_tracer_info_masks_password(tmp_path):
    tracing = TracingManager(service_name="m", redis_url="redis://user:hunter2@127.0.0.1:1/0",
                             spool_dir=str(tmp_path), schedule_delay=60)
    try:
        info = tracing.get_tracer_info()
        assert "hunter2" not in info["redis_url"]
        assert info["redis_url"] == "redis://user:***@127.0.0.1:1/0"
        assert info["service_name"] == "m" and info["enabled"] is True and info["sample_rate"] == 1.0
    finally:
        tracing.shutdown(timeout=2)


def test_own_provider_not_global(make_manager):
    tracing = make_manager()
    assert trace.get_tracer_provider() is not tracing.tracer_provider
    assert tracing.tracer.start_span("direct").is_recording()


def test_settings_come_from_environment(monkeypatch, make_manager):
    monkeypatch.setenv("CONTRAIL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("CONTRAIL_SAMPLE_RATE", "0.5")
    tracing = make_manager(service_name=None)
    assert tracing.service_name == "from-env"
    assert tracing.settings.sample_rate == 0.5
