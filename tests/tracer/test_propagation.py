"""W3C inject/extract: round trips across carriers, and garbage that never raises."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings, strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as context_api

from tracer import propagation

from tests.tracer.tracer_helpers import by_name, stream_spans

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_inject_extract_round_trip_with_tracestate_and_baggage(make_manager, redis_url):
    upstream = make_manager(service_name="a")
    downstream = make_manager(service_name="b")
    token = context_api.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with upstream.span("client_call") as span:
            carrier = upstream.inject_span_context(None, {})
    finally:
        context_api.detach(token)
    assert carrier["traceparent"].startswith("00-" + format(span.get_span_context().trace_id, "032x"))
    assert carrier["baggage"] == "tenant=acme"

    parent = downstream.extract_span_context(carrier)
    assert parent is not None
    assert baggage.get_baggage("tenant", parent) == "acme"
    remote = downstream.start_span("handle", parent_span=parent, kind="server")
    downstream.finish_span(remote)
    assert upstream.flush(5) and downstream.flush(5)
    spans = by_name(stream_spans(redis_url))
    assert spans["handle"]["trace_id"] == spans["client_call"]["trace_id"]
    assert spans["handle"]["parent_span_id"] == spans["client_call"]["span_id"]
    assert spans["handle"]["service"] == "b" and spans["client_call"]["service"] == "a"


def test_inject_explicit_span_and_span_context(make_manager):
    tracing = make_manager()
    span = tracing.start_span("explicit")
    ctx = span.get_span_context()
    expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    assert tracing.inject_span_context(span, {})["traceparent"] == expected
    assert tracing.inject_span_context(ctx, {})["traceparent"] == expected
    assert tracing.inject_span_context(span, None)["traceparent"] == expected
    tracing.finish_span(span)


def test_tracestate_survives():
    carrier = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc,other=1"}
    context = propagation.extract(carrier)
    out = propagation.inject({}, context)
    assert out["traceparent"] == TRACEPARENT
    assert out["tracestate"] == "vendor=abc,other=1"


def test_celery_style_and_http_style_carriers():
    for carrier in (
        {"traceparent": TRACEPARENT.encode()},
        {b"traceparent": TRACEPARENT.encode()},
        {"traceparent": [TRACEPARENT]},
        {"Traceparent": TRACEPARENT},
        {"TRACEPARENT": (TRACEPARENT,)},
    ):
        context = propagation.extract(carrier)
        assert context is not None, carrier
        span_context = trace.get_current_span(context).get_span_context()
        assert span_context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
        assert span_context.is_remote


def test_missing_or_invalid_traceparent_gives_none():
    for carrier in (None, {}, {"traceparent": ""}, {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
                    {"traceparent": "zz"}, {"baggage": "a=b"}, "traceparent", 42, b"bytes", object(),
                    {"traceparent": TRACEPARENT * 1000}, {"traceparent": object()}):
        assert propagation.extract(carrier) is None, carrier


def test_carrier_that_raises_on_access():
    class Hostile(dict):
        def get(self, key, default=None):
            raise RuntimeError("nope")

        def items(self):
            raise RuntimeError("nope")

    assert propagation.extract(Hostile()) is None
    assert propagation.inject(frozenset()) == frozenset()  # not writable: returned untouched, no exception


header_text = st.text(alphabet=string.printable + "\u00e9\u2603\x00", max_size=80)
header_value = st.one_of(header_text, st.binary(max_size=80), st.integers(), st.none(), st.floats(),
                         st.lists(header_text, max_size=3), st.tuples(st.binary(max_size=20)))
traceparent_like = st.builds(
    lambda v, t, s, f: f"{v}-{t}-{s}-{f}",
    st.text(alphabet="0123456789abcdefxz", min_size=0, max_size=3),
    st.text(alphabet="0123456789abcdefABCDEF-", min_size=0, max_size=34),
    st.text(alphabet="0123456789abcdef", min_size=0, max_size=18),
    st.text(alphabet="0123456789abcdef", min_size=0, max_size=3),
)
carriers = st.one_of(
    st.none(), header_value,
    st.dictionaries(st.one_of(header_text, st.binary(max_size=12), st.sampled_from(["traceparent", "tracestate",
                                                                                      "baggage"])),
                    st.one_of(header_value, traceparent_like), max_size=6),
    st.fixed_dictionaries({"traceparent": st.one_of(traceparent_like, header_value),
                           "tracestate": header_value, "baggage": header_value}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(carriers)
def test_extract_never_raises_on_garbage(carrier):
    result = propagation.extract(carrier)
    if result is not None:
        assert trace.get_current_span(result).get_span_context().is_valid
