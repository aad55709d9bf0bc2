"""HotSpans (tracer/celery/hot_spans.py) must build exactly the spans ``Tracer.start_span`` builds.

The SDK's random id generator and HotSpans' own draws come from the same
``random`` module, so seeding it before each path makes both produce the same
ids: the spans can then be compared field by field. The last tests run the
real Celery handlers (in-memory broker, Celery's own task tracer) with and
without HotSpans and compare what reaches the span stream.
"""

from __future__ import annotations

import random
import uuid
from importlib import metadata
from pathlib import Path

import pytest
import redis
from celery import Celery, signals
from celery.app.trace import build_tracer
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import Event, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from tests.tracer.tracer_helpers import stream_spans
from tracer import celery as celery_tracing
from tracer import otel_internals
from tracer.celery.hot_spans import HotSpans
from tracer.otel_internals import SpanFactory, describe
from tracer.manager import TracingManager

START = 1_700_000_000_000_000_000


@pytest.fixture(autouse=True)
def only_these_tests_handlers():
    """Celery's signals are process-wide: handlers another test connected (the session's ``tasks`` app, when
    this module runs in the same process) would trace these round trips too; off until the test ends."""
    others = [(tracing.manager, list(tracing.apps)) for tracing in list(celery_tracing.tracing._registry.values())]
    for manager, _ in others:
        celery_tracing.uninstrument_celery(manager)
    yield
    for manager, apps in others:
        for app in apps or [None]:
            celery_tracing.instrument_celery(manager, app)


@pytest.fixture
def make_manager(redis_url, tmp_path):
    made = []

    def make(**settings):
        manager = TracingManager(service_name="hot-spans", redis_url=redis_url, data_dir=str(tmp_path),
                                 **settings)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.shutdown()


def remote(flags: int, trace_state: TraceState | None = None):
    span_context = SpanContext(0x1234abcd << 64 | 0x99, 0xfeed, is_remote=True, trace_flags=TraceFlags(flags),
                               trace_state=trace_state)
    return trace.set_span_in_context(NonRecordingSpan(span_context), otel_context.Context())


def both_ways(manager, name, context, kind, links=None, current=None, seed=7):
    """(HotSpans' span, Tracer.start_span's span, sampled-out counts after each) from the same random state."""
    hot = HotSpans(manager.tracer)
    assert hot.usable
    results = []
    for start in (lambda: hot.start_span(name, context, kind, links, START),
                  lambda: manager.tracer.start_span(name, context=context, kind=kind, links=links or (),
                                                    start_time=START)):
        random.seed(seed)
        token = otel_context.attach(trace.set_span_in_context(current)) if current is not None else None
        try:
            before = manager._sampler.dropped
            span = start()
            results.append((span, manager._sampler.dropped - before))
        finally:
            if token is not None:
                otel_context.detach(token)
    return results


def assert_same(hot_result, sdk_result):
    (hot, hot_dropped), (sdk, sdk_dropped) = hot_result, sdk_result
    assert hot_dropped == sdk_dropped
    assert type(hot) is type(sdk)
    assert hot.get_span_context() == sdk.get_span_context()
    assert hot.get_span_context().trace_flags == sdk.get_span_context().trace_flags
    if hasattr(sdk, "_attributes"):
        assert describe(hot) == describe(sdk)


def hot_spans_sdk() -> bool:
    """Whether HotSpans must be on: with the opentelemetry-sdk deploy/requirements.lock pins, always; with another
    release (scripts/test_sdk_range.py), when the SDK's layout is the one it checks for. Off, the handlers call
    start_span, and the round trips below still compare that against every other internal forced off."""
    lock = (Path(__file__).resolve().parents[2] / "deploy" / "requirements.lock").read_text()
    if f"opentelemetry-sdk=={metadata.version('opentelemetry-sdk')}\n" in lock:
        return True
    return HotSpans(TracerProvider().get_tracer("probe")).usable


HOT_SPANS_SDK = hot_spans_sdk()
needs_hot_spans_sdk = pytest.mark.skipif(
    not HOT_SPANS_SDK, reason=f"HotSpans is off with opentelemetry-sdk {metadata.version('opentelemetry-sdk')} "
                              "(another layout): the handlers use start_span")


@needs_hot_spans_sdk
def test_hot_spans_are_used_with_the_sdk_and_sampler_tracing_manager_sets_up(make_manager):
    manager = make_manager()
    hot = HotSpans(manager.tracer)
    assert hot.usable and hot._counting is manager._sampler
    assert hot.factory._noop_end is not None


@needs_hot_spans_sdk
@pytest.mark.parametrize("sample_rate", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("parent", ["root", "sampled", "unsampled", "sampled+random", "tracestate", "local"])
def test_hot_span_is_the_span_start_span_builds(make_manager, sample_rate, parent):
    manager = make_manager(sample_rate=sample_rate)
    context, current = None, None
    if parent == "sampled":
        context = remote(0x01)
    elif parent == "unsampled":
        context = remote(0x00)
    elif parent == "sampled+random":
        context = remote(0x03)
    elif parent == "tracestate":
        context = remote(0x01, TraceState([("vendor", "v1"), ("other", "o2")]))
    elif parent == "local":
        current = manager.tracer.start_span("caller")
    for seed in range(12):  # with rate 0.5, some roots are sampled and some are not
        hot, sdk = both_ways(manager, "run add", context, SpanKind.CONSUMER, current=current, seed=seed)
        assert_same(hot, sdk)
        if parent in ("root", "local", "sampled"):
            assert isinstance(sdk[0], trace.Span)


@needs_hot_spans_sdk
def test_hot_span_with_links_goes_through_the_sdk_constructor(make_manager):
    manager = make_manager()
    links = [Link(SpanContext(0xaa, 0xbb, is_remote=True, trace_flags=TraceFlags(1)), {"celery.link": "x"})]
    hot, sdk = both_ways(manager, "run callback", remote(0x01), SpanKind.CONSUMER, links=links)
    assert_same(hot, sdk)
    assert len(hot[0].links) == 1


class AnnotatingSampler(Sampler):
    """Not the manager's sampler: HotSpans must call it as start_span does (attributes, trace state)."""

    def __init__(self):
        self.calls = []

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None):
        self.calls.append((name, kind, attributes, tuple(links or ())))
        decision = Decision.RECORD_ONLY if trace_id % 2 else Decision.RECORD_AND_SAMPLE
        return SamplingResult(decision, {"sampler.says": name}, TraceState([("s", str(trace_id % 7))]))

    def get_description(self):
        return "annotating"


@needs_hot_spans_sdk
def test_any_other_sampler_is_called_as_start_span_calls_it(make_manager):
    manager = make_manager()
    sampler = manager.tracer.sampler = AnnotatingSampler()
    for seed in range(6):
        hot, sdk = both_ways(manager, "publish add", None, SpanKind.PRODUCER, seed=seed)
        assert_same(hot, sdk)
        assert hot[0].attributes == {"sampler.says": "publish add"}
    assert sampler.calls[0] == sampler.calls[1] == ("publish add", SpanKind.PRODUCER, None, ())


@needs_hot_spans_sdk
def test_span_objects_made_ahead_by_prepare_are_the_same_spans(make_manager):
    manager = make_manager()
    hot = HotSpans(manager.tracer)
    hot.prepare()
    hot.prepare()  # one is kept ready, not more
    assert len(hot.factory._spares) == 1
    spare = hot.factory._spares[0]
    random.seed(3)
    span = hot.start_span("run add", remote(0x01), SpanKind.CONSUMER, None, START)
    random.seed(3)
    plain = manager.tracer.start_span("run add", context=remote(0x01), kind=SpanKind.CONSUMER, start_time=START)
    assert span is spare and hot.factory._spares == []
    assert describe(span) == describe(plain)
    other = hot.start_span("run add", remote(0x01), SpanKind.CONSUMER, None, START)  # none ready: made now
    assert other is not span and other._attributes is not span._attributes and other._lock is not span._lock


@needs_hot_spans_sdk
def test_a_tracer_disabled_by_its_configurator_gives_the_same_non_recording_span(make_manager):
    manager = make_manager()
    manager.tracer._set_tracer_config(sdk_trace._TracerConfig(is_enabled=False))
    hot, sdk = both_ways(manager, "run add", remote(0x01), SpanKind.CONSUMER)
    assert_same(hot, sdk)
    assert not hot[0].is_recording()


def test_the_event_given_is_recorded_right_after_start(make_manager, monkeypatch):
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    manager = make_manager()
    hot = HotSpans(manager.tracer)
    event = Event("celery.dequeued", {"celery.queue_wait_ms": 1.5}, START + 1)
    span = hot.start_span("run add", remote(0x01), SpanKind.CONSUMER, None, START, event=event)
    plain = manager.tracer.start_span("run add", context=remote(0x01), kind=SpanKind.CONSUMER, start_time=START)
    plain._add_event(event)
    for s in (span, plain):
        s.add_event("user event")  # the bound of one event drops the oldest, on both
    assert [e.name for e in span.events] == [e.name for e in plain.events] == ["user event"]
    assert span.dropped_events == plain.dropped_events == 1


def test_an_unexpected_sdk_shape_means_start_span(make_manager, monkeypatch):
    manager = make_manager()
    monkeypatch.setattr(otel_internals, "_PER_SPAN", otel_internals._PER_SPAN | {"_new_field"})
    hot = HotSpans(manager.tracer)
    assert not hot.usable
    span = hot.start_span("run add", remote(0x01), SpanKind.CONSUMER, None, START)
    assert span.get_span_context().trace_id == 0x1234abcd << 64 | 0x99 and span.is_recording()
    assert not HotSpans(trace.NoOpTracer()).usable


# --------------------------------------------------------------------------- through the Celery handlers


def run_round_trip(manager, use_hot: bool, monkeypatch, outer=None):
    """Publish one task and run it with Celery's own task tracer; user code inside adds a child span.

    ``outer``: a context to publish in (a remote parent with tracestate, baggage).
    """
    app = Celery(f"hot-{use_hot}-{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")

    @app.task(name="tests.hot.add")
    def add(x, y):
        trace.get_current_span().set_attribute("user.in_task", True)
        trace.get_current_span().add_event("user event", {"step": 1})
        with manager.tracer.start_as_current_span("user work"):
            pass
        return x + y

    if not use_hot:
        force_public_api(monkeypatch)
    tracing = celery_tracing.instrument_celery(manager, app)
    tracing._hot = None
    celery_tracing.tracing._HOT_BY_TRACER.pop(manager.tracer, None)  # made again, with or without the SDK's
    assert tracing.hot_spans().usable is (use_hot and manager.enabled and HOT_SPANS_SDK)
    headers: dict = {}

    def capture(**kwargs):
        headers.update(kwargs.get("headers") or {})

    signals.after_task_publish.connect(capture, weak=False)
    token = otel_context.attach(outer) if outer is not None else None
    try:
        with manager.tracer.start_as_current_span("caller") as caller:
            add.apply_async((1, 2))
        if token is not None:
            otel_context.detach(token)
            token = None
        task_id = headers["id"]
        run = build_tracer(add.name, add, app=app)
        retval = run(task_id, (1, 2), {}, {**headers, "delivery_info": {"routing_key": "celery"},
                                           "hostname": "w@h"})
        assert retval[0] == 3 if isinstance(retval, tuple) else True
    finally:
        if token is not None:
            otel_context.detach(token)
        signals.after_task_publish.disconnect(capture)
        celery_tracing.uninstrument_celery(manager)
    return caller, headers


def force_public_api(monkeypatch):
    """Every shortcut of tracer/otel_internals.py off: what an SDK of another shape gets (undo() restores)."""
    monkeypatch.setattr(SpanFactory, "_prepare", lambda self: False)
    monkeypatch.setattr(otel_internals, "DIRECT_SPAN_CONTEXT", False)
    monkeypatch.setattr(otel_internals, "SPAN_FIELDS", False)
    monkeypatch.setattr(otel_internals, "READ_DIRECT", False)
    monkeypatch.setattr(otel_internals, "span_fields", otel_internals._read_public)
    monkeypatch.setattr(otel_internals, "context_with_span", otel_internals._context_with_span_public)
    monkeypatch.setattr(otel_internals, "current_span", otel_internals._current_span_public)
    monkeypatch.setattr(otel_internals, "has_baggage", otel_internals._has_baggage_public)


def normalised(spans):
    """Spans with ids replaced by the name of the span they point to, and timings left out."""
    names = {s["span_id"]: s["name"] for s in spans}
    out = {}
    for s in spans:
        attrs = {k: (type(v).__name__ if k in ("celery.queue_wait_ms", "celery.published_ns", "celery.task_id",
                                                "messaging.message.id", "celery.root_id") else v)
                 for k, v in s["attributes"].items()}
        out[s["name"]] = {
            "parent": names.get(s["parent_span_id"]), "kind": s["kind"], "status": s["status_code"],
            "status_message": s["status_message"], "attributes": attrs, "attribute_order": list(attrs),
            "events": [(e["name"], sorted(e["attributes"])) for e in s["events"]],
            "links": s["links"], "resource": {k: v for k, v in s["resource"].items() if k != "process.pid"},
            "service": s["service"], "scope": s["scope"], "traces": len({x["trace_id"] for x in spans}),
        }
    return out


@pytest.mark.parametrize("outer", ["none", "tracestate+baggage"])
def test_handlers_record_the_same_spans_with_and_without_sdk_internals(make_manager, redis_url, monkeypatch, outer):
    manager = make_manager()
    recorded, sent = {}, {}
    context = None
    if outer != "none":
        context = otel_baggage.set_baggage("tenant", "t1", remote(0x01, TraceState([("vendor", "v1")])))
    for use_hot in (False, True):
        caller, headers = run_round_trip(manager, use_hot, monkeypatch, context)
        sent[use_hot] = {k: headers.get(k) for k in ("tracestate", "baggage")}
        assert manager.flush(10)  # exported through the public accessors too, when use_hot is False
        monkeypatch.undo()
        spans = [s for s in stream_spans(redis_url) if s["trace_id"] == format(
            caller.get_span_context().trace_id, "032x")]
        assert sorted(s["name"] for s in spans) == ["caller", "publish tests.hot.add", "run tests.hot.add",
                                                    "user work"]
        by_name = {s["name"]: s for s in spans}
        assert headers["traceparent"].split("-")[2] == by_name["publish tests.hot.add"]["span_id"]
        recorded[use_hot] = normalised(spans)
        client = redis.Redis.from_url(redis_url)
        client.delete("contrail:spans")  # the next round may reuse the remote parent's trace id
        client.close()
    assert recorded[True] == recorded[False]
    assert sent[True] == sent[False]
    if outer != "none":
        assert sent[True] == {"tracestate": "vendor=v1", "baggage": "tenant=t1"}
    run = recorded[True]["run tests.hot.add"]
    assert run["parent"] == "publish tests.hot.add" and recorded[True]["user work"]["parent"] == "run tests.hot.add"
    assert run["attributes"]["user.in_task"] is True and run["status"] == "ok"
    # the dequeued event happened when the task started: before what the task recorded, on both paths
    assert run["events"] == [("celery.dequeued", ["celery.published_ns", "celery.queue_wait_ms"]),
                             ("user event", ["step"])]


def test_sampled_out_publishes_still_carry_the_decision(make_manager, redis_url, monkeypatch):
    manager = make_manager(sample_rate=0.0)
    _, headers = run_round_trip(manager, True, monkeypatch)
    # not sampled; the random trace id flag as the SDK sets it (since opentelemetry-sdk 1.42)
    assert headers["traceparent"].endswith("-02" if hasattr(trace.TraceFlags, "RANDOM_TRACE_ID") else "-00")
    assert manager.flush(10)
    assert stream_spans(redis_url) == []
    assert manager.get_tracer_info()["spans_sampled_out"] >= 3  # caller, publish, run (user span too)


def test_disabled_manager_adds_nothing(make_manager, monkeypatch):
    manager = make_manager(enabled=False)
    _, headers = run_round_trip(manager, True, monkeypatch)
    assert "traceparent" not in headers and celery_tracing.PUBLISHED_HEADER not in headers


def test_deferred_ends_keep_the_times_the_handlers_took(make_manager, redis_url, monkeypatch):
    """Publish and run spans are ended by the export thread, later, but with the end times of their signals."""
    import time

    manager = make_manager(schedule_delay=30)  # the export thread sleeps until flushed
    before = time.time_ns()
    caller, _ = run_round_trip(manager, True, monkeypatch)
    after = time.time_ns()
    time.sleep(0.05)  # a flush now would end them now, if the ends were taken late
    queued = manager.get_tracer_info()["spans_queued"]
    assert queued >= 3  # caller (ended) + publish and run waiting for the export thread
    assert manager.flush(10)
    spans = {s["name"]: s for s in stream_spans(redis_url)}
    for name in ("publish tests.hot.add", "run tests.hot.add"):
        span = spans[name]
        assert before <= span["start_ns"] <= span["end_ns"] <= after, name
    assert spans["run tests.hot.add"]["start_ns"] >= spans["publish tests.hot.add"]["end_ns"]
