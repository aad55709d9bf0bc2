"""enabled=False is a no-op without threads or connections; head sampling is parent-based."""

from __future__ import annotations

import threading

from opentelemetry.trace import INVALID_SPAN

from tracer import TracingManager

from tests.tracer.tracer_helpers import stream_spans


def test_disabled_manager_is_a_noop(tmp_path):
    threads_before = {t.ident for t in threading.enumerate()}
    tracing = TracingManager(service_name="off", enabled=False, redis_url="redis://127.0.0.1:1/0",
                             spool_dir=str(tmp_path))
    assert tracing.enabled is False
    assert {t.ident for t in threading.enumerate()} == threads_before

    def plain(x):
        return x

    assert tracing.with_tracing("x")(plain) is plain
    assert tracing.with_tracing(plain) is plain
    assert tracing.trace_database_operation("SELECT")(plain) is plain
    span = tracing.start_span("nothing", tags={"a": 1})
    assert span is INVALID_SPAN and not span.is_recording()
    tracing.finish_span(span, error=ValueError("x"))
    with tracing.span("nothing") as s:
        assert not s.is_recording()
        tracing.checkpoint("no-op")
    with tracing.trace_external_call("svc", "http://x"):
        pass
    assert tracing.inject_span_context(None, {}) == {}
    assert tracing.flush() is True
    info = tracing.get_tracer_info()
    assert info["enabled"] is False and info["spans_started"] == 0
    tracing.shutdown()
    assert list(tmp_path.iterdir()) == []


def test_disabled_by_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CONTRAIL_ENABLED", "false")
    tracing = TracingManager(service_name="env-off", spool_dir=str(tmp_path))
    assert tracing.enabled is False
    assert tracing.start_span("x") is INVALID_SPAN


def test_sample_rate_zero_records_nothing_but_counts(make_manager, redis_url):
    tracing = make_manager(sample_rate=0.0)
    for _ in range(20):
        with tracing.span("root"):
            with tracing.span("child"):
                pass
    assert tracing.flush(5)
    assert stream_spans(redis_url) == []
    info = tracing.get_tracer_info()
    assert info["spans_sampled_out"] == 40
    assert info["spans_exported"] == 0


def test_ratio_sampling_is_parent_based(make_manager, redis_url):
    tracing = make_manager(sample_rate=0.5)
    kept_roots = 0
    for _ in range(400):
        with tracing.span("root") as root:
            with tracing.span("child") as child:
                assert child.is_recording() == root.is_recording()  # children follow their parent
            kept_roots += root.is_recording()
    assert 120 < kept_roots < 280  # a 0.5 ratio; bounds are > 6 standard deviations wide
    assert tracing.flush(5)
    spans = stream_spans(redis_url)
    assert len(spans) == 2 * kept_roots
    assert tracing.get_tracer_info()["spans_sampled_out"] == 2 * (400 - kept_roots)


def test_sampled_remote_parent_is_kept_even_at_rate_zero(make_manager, redis_url):
    tracing = make_manager(sample_rate=0.0)
    parent = tracing.extract_span_context(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    span = tracing.start_span("continued", parent_span=parent)
    assert span.is_recording()
    tracing.finish_span(span)
    unsampled = tracing.extract_span_context(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"})
    assert not tracing.start_span("dropped", parent_span=unsampled).is_recording()
    assert tracing.flush(5)
    (stored,) = stream_spans(redis_url)
    assert stored["parent_span_id"] == "00f067aa0ba902b7"
