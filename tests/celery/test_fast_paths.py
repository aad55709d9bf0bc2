"""The shortcuts the Celery handlers take must record exactly what the plain SDK / general paths record.

Spans go through a real TracingManager into a private Redis and are read back
from the stream, so what is compared is what the collector would receive.
"""

from __future__ import annotations

import logging

import pytest
from celery.app.task import Context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from tests.tracer.tracer_helpers import by_name, stream_spans
from tracer import celery as celery_tracing
from tracer import otel_internals, propagation
from tracer.celery import carrier, messages, worker
from tracer.manager import TracingManager

ATTRS = {
    "messaging.system": "celery",
    "celery.task_id": "0c1b6c0e-1d9a-4e0e-9d3e-6b7f5f5a2c11",  # longer than the limit below: truncated
    "celery.retries": 2,
    "celery.queue_wait_ms": 1.5,
    "celery.internal_error": True,
    "celery.hostname": "w@h",
}


@pytest.fixture
def manager(redis_url, tmp_path):
    manager = TracingManager(service_name="fast-paths", redis_url=redis_url, data_dir=str(tmp_path),
                             max_attribute_length=12)
    yield manager
    manager.shutdown()


def exported(manager, redis_url):
    assert manager.flush(10)
    return by_name(stream_spans(redis_url))


def test_own_attributes_are_exported_exactly_as_set_attributes_would(manager, redis_url):
    fast = manager.tracer.start_span("fast", kind=SpanKind.CONSUMER)
    fast.set_attribute("celery.state", "STARTED")  # set before: re-set by the shortcut, as the SDK would
    otel_internals.set_own_attributes(fast, {**ATTRS, "celery.state": "SUCCESS"})
    fast.end()
    plain = manager.tracer.start_span("plain", kind=SpanKind.CONSUMER)
    plain.set_attribute("celery.state", "STARTED")
    plain.set_attributes({**ATTRS, "celery.state": "SUCCESS"})
    plain.end()
    spans = exported(manager, redis_url)
    assert spans["fast"]["attributes"] == spans["plain"]["attributes"]
    assert list(spans["fast"]["attributes"]) == list(spans["plain"]["attributes"])  # same order
    assert spans["fast"]["attributes"]["celery.task_id"] == ATTRS["celery.task_id"][:12]
    assert fast.attributes == plain.attributes


def test_the_sdk_internals_the_shortcuts_use_are_there(manager):
    """If an SDK upgrade moves them, the shortcuts silently fall back to the slow path: catch that here."""
    span = manager.tracer.start_span("live")
    assert type(span._attributes._dict) is dict and span._attributes._immutable is False
    assert span._attributes.max_value_len == 12 and isinstance(span._attributes.maxlen, int)
    assert callable(span._add_event) and otel_internals.SdkEvent is not None
    span.end()


def test_own_attributes_fall_back_to_the_sdk_for_anything_unusual(manager, redis_url, caplog):
    odd = manager.tracer.start_span("odd")
    otel_internals.set_own_attributes(odd, {"celery.tags": ("a", "b"), "celery.retries": 1})  # a sequence
    odd.end()
    with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
        otel_internals.set_own_attributes(odd, {"celery.state": "LATE"})  # ended: ignored with the SDK's warning
    assert "ended span" in caplog.text
    otel_internals.set_own_attributes(trace.INVALID_SPAN, {"celery.state": "X"})  # no-op span
    spans = exported(manager, redis_url)
    assert spans["odd"]["attributes"] == {"celery.tags": ["a", "b"], "celery.retries": 1}


def test_own_event_is_exported_exactly_as_add_event_would(manager, redis_url):
    event = {"celery.queue_wait_ms": 2.25, "celery.published_ns": 1_700_000_000_000_000_000}
    fast = manager.tracer.start_span("fast")
    otel_internals.add_own_event(fast, "celery.dequeued", dict(event), 1_700_000_000_000_000_123)
    fast.end()
    otel_internals.add_own_event(fast, "celery.late", dict(event), 5)  # ended: not recorded, like add_event
    plain = manager.tracer.start_span("plain")
    plain.add_event("celery.dequeued", dict(event), timestamp=1_700_000_000_000_000_123)
    plain.end()
    spans = exported(manager, redis_url)
    assert spans["fast"]["events"] == spans["plain"]["events"]
    assert spans["fast"]["events"] == [{"name": "celery.dequeued", "time_ns": 1_700_000_000_000_000_123,
                                        "attributes": event}]


def general_carrier(request):
    """What _carrier answers without its shortcut for task requests (nested headers, then attributes)."""
    found = {}
    nested = getattr(request, "headers", None)
    for key in carrier.CARRIER_KEYS:
        if isinstance(nested, dict) and nested.get(key) is not None:
            found[key] = nested[key]
        elif getattr(request, key, None) is not None:
            found[key] = getattr(request, key)
    return found


@pytest.mark.parametrize("message", [
    # protocol 2: the message headers are merged into the request, Context keeps the custom ones in .headers
    {"id": "t1", "task": "add", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
     "contrail_published_ns": 123, "retries": 0},
    {"id": "t2", "task": "add", "traceparent": "garbage", "tracestate": "k=v", "baggage": "u=1",
     "contrail_links": "[]"},
    # protocol 1: the application headers arrive as request.headers
    {"id": "t3", "task": "add", "headers": {"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-00",
                                            "contrail_published_ns": 7}},
    {"id": "t4", "task": "add"},
    {"id": "t5", "task": "add", "headers": None, "traceparent": None},
])
def test_carrier_of_a_task_request_matches_the_general_path(message):
    request = Context(message)
    assert carrier.request_carrier(request) == general_carrier(request)


@pytest.mark.parametrize("message", [
    {"root_id": "r", "parent_id": "p", "group": "g", "eta": "2026-01-01T00:00:00", "expires": 3.5, "retries": 2},
    {"root_id": "r"},  # retries is Context's class default (0)
    {},
    {"retries": "x", "group": None},  # garbage retries: left out
])
def test_ids_of_a_task_request_match_attribute_lookups(message):
    request = Context(message)
    expected = {}
    for attr, key in messages.ID_ATTRIBUTES:
        if getattr(request, key, None):
            expected[attr] = str(getattr(request, key))
    try:
        expected["celery.retries"] = int(request.retries)
    except (TypeError, ValueError):
        pass
    assert messages.ids(request, messages.get_attr) == expected
    assert messages.ids(dict(message), messages.get_mapping) == {
        k: v for k, v in expected.items() if k != "celery.retries" or "retries" in message}


def test_task_success_is_not_a_signal_of_its_own():
    """Status OK comes from task_postrun's state: one signal less per task, same span."""
    assert "task_success" not in celery_tracing.SIGNAL_NAMES
    assert "task_postrun" in celery_tracing.SIGNAL_NAMES


@pytest.mark.parametrize("pool, in_process", [
    ("solo", True), ("threads", True), ("eventlet", True), ("gevent", True), ("prefork", False),
    ("processes", False), ("celery.concurrency.solo:TaskPool", True), ("myapp.pools:Custom", False), (None, False)])
def test_pools_that_run_tasks_in_the_workers_process(pool, in_process):
    assert worker.runs_tasks_in_process(pool) is in_process


def test_pool_classes_are_recognised_without_their_aliases():
    from celery.concurrency.prefork import TaskPool as Prefork
    from celery.concurrency.solo import TaskPool as Solo

    class OwnSolo(Solo):
        pass

    assert worker.runs_tasks_in_process(OwnSolo)
    assert not worker.runs_tasks_in_process(Prefork)


def test_in_process_worker_drops_the_request_copy_a_prefork_worker_keeps(manager, monkeypatch):
    """worker_init: a solo worker disconnects task_received (nothing can die apart from it); prefork keeps it."""
    from celery import signals

    monkeypatch.setitem(worker._pool, "tasks_run_in_process", False)  # restored after: process-wide

    class WorkController:  # what worker_init hands over: the worker, with its pool class
        def __init__(self, pool_cls):
            self.pool_cls = pool_cls

    tracing = celery_tracing.instrument_celery(manager)
    try:
        uid = f"contrail-{id(manager)}-task_received"
        connected = lambda: any(key[0] == uid for key, _ in signals.task_received.receivers)  # noqa: E731
        assert connected()
        signals.worker_init.send(sender=WorkController("prefork"))
        assert connected()
        signals.worker_init.send(sender=WorkController("solo"))
        assert not connected()
        assert "task_prerun" in {uid.rsplit("-", 1)[1] for _, uid in tracing._connected}
        # handlers connected again in this worker (tracing switched off and on) keep the decision
        celery_tracing.uninstrument_celery(manager)
        tracing = celery_tracing.instrument_celery(manager)
        assert not connected()
        assert "task_prerun" in {uid.rsplit("-", 1)[1] for _, uid in tracing._connected}
    finally:
        celery_tracing.uninstrument_celery(manager)
    assert not any(key[0].startswith(f"contrail-{id(manager)}-") for key, _ in signals.task_prerun.receivers)


@pytest.mark.parametrize("value", [
    "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "00-" + "0" * 31 + "1-" + "0" * 15 + "1-00",
    "00-" + "f" * 32 + "-" + "f" * 16 + "-03", "00-" + "0" * 32 + "-" + "b" * 16 + "-01",
    "00-" + "a" * 32 + "-" + "0" * 16 + "-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-02"])
def test_parsed_traceparent_is_the_span_context_the_api_builds(value):
    """The run path builds SpanContext tuples directly (no Python __new__): the same objects, validity included."""
    from opentelemetry.trace import SpanContext, TraceFlags

    assert otel_internals.DIRECT_SPAN_CONTEXT  # with the pinned API; otherwise the constructor is used
    parsed = propagation.parse_traceparent(value)
    _, trace_hex, span_hex, flags_hex = value.split("-")
    built = SpanContext(int(trace_hex, 16), int(span_hex, 16), is_remote=True, trace_flags=TraceFlags(int(flags_hex, 16)))
    assert type(parsed) is SpanContext and tuple(parsed) == tuple(built)
    assert parsed.is_valid is built.is_valid and parsed.trace_state == built.trace_state
