"""W3C Trace Context (level 1) through Contrail's Flask + requests instrumentation, one rule per test.

A request with the given trace headers reaches a traced Flask service, which calls back a recording server;
what the service sends on is what the rules are checked against.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading

import pytest
from werkzeug.serving import make_server

from tests.support.servers import free_port
from tests.tracer.trace_context_service import create_service
from tracer.http import uninstrument_requests

TRACE_ID = "12345678901234567890123456789012"
PARENT = f"00-{TRACE_ID}-1234567890123456-00"
LCALPHA = "abcdefghijklmnopqrstuvwxyz"
KEY_CHARS = LCALPHA + "0123456789_-*/"
VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")

# tracestate headers as received -> members sent on
KEPT = [
    (["foo=1,bar=2"], [("foo", "1"), ("bar", "2")]),
    (["foo=1,bar=2", "rojo=1,congo=2", "baz=3"], [("foo", "1"), ("bar", "2"), ("rojo", "1"), ("congo", "2"),
                                                  ("baz", "3")]),
    (["foo=1 \t , \t bar=2, \t baz=3"], [("foo", "1"), ("bar", "2"), ("baz", "3")]),
    (["\t foo=1 \t"], [("foo", "1")]),
    (["foo=1,,bar=2, ,"], [("foo", "1"), ("bar", "2")]),
    (["", "foo=1"], [("foo", "1")]),
    (["foo=1", ""], [("foo", "1")]),
    (["foo=a b"], [("foo", "a b")]),
]
KEPT_IDS = ["two", "combined-headers-in-order", "ows", "ows-around", "empty-members", "empty-first", "empty-last",
            "inner-space"]
# tracestate headers that are invalid as a whole: nothing of them is sent on
DROPPED = [
    ["foo=1,foo=1"], ["foo=1,foo=2"], ["foo=1", "foo=1"], ["foo=1", "foo=2"],  # duplicate keys
    ["foo =1"], ["FOO=1"], ["foo.bar=1"], ["1foo=1"],  # illegal simple keys
    ["foo@=1,bar=2"], ["@foo=1,bar=2"], ["foo@@bar=1,bar=2"], ["foo@bar@baz=1,bar=2"], ["foo@1bar=1,bar=2"],
    ["foo=1", "z" * 257 + "=1"], ["foo=1", "t" * 242 + "@v=1"], ["foo=1", "t@" + "v" * 15 + "=1"],  # too long
    ["foo=bar=baz"], ["foo=,bar=3"], ["foo=" + "x" * 257], ["foo=1\x7f"], ["bar=2,foo"],  # illegal values
    [",".join(f"bar{i:02d}={i:02d}" for i in range(1, 34))],  # 33 members
]


def case_id(headers: list[str]) -> str:
    return "|".join(headers)[:40]


class Recorder:
    """A server that keeps the headers of every request, by path."""

    def __init__(self):
        self.seen: dict[str, list[tuple[str, str]]] = {}
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        headers = [(key[5:].replace("_", "-").lower(), value) for key, value in environ.items()
                   if key.startswith("HTTP_")]
        self.seen[environ["PATH_INFO"]] = headers
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


@pytest.fixture(scope="module")
def propagate(tmp_path_factory, redis_server):
    """Send trace headers (repeats allowed) to the traced service; return the headers of its outgoing call."""
    from tracer import TracingManager

    manager = TracingManager(service_name="conformance", redis_url=redis_server.url,
                             data_dir=str(tmp_path_factory.mktemp("conformance")), schedule_delay="50ms")
    service = make_server("127.0.0.1", free_port(), create_service(manager), threaded=True)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    recorder = Recorder()
    counter = itertools.count()

    def send(*headers: tuple[str, str]) -> dict[str, str]:
        path = f"/callback/{next(counter)}"
        body = json.dumps([{"url": f"http://127.0.0.1:{recorder.port}{path}", "arguments": []}]).encode()
        connection = http.client.HTTPConnection("127.0.0.1", service.server_port, timeout=10)
        connection.putrequest("POST", "/test")
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        assert connection.getresponse().status == 200
        connection.close()
        out = recorder.seen[path]
        assert [name for name, _ in out].count("traceparent") == 1
        return dict(out)

    yield send
    service.shutdown()
    recorder.server.shutdown()
    uninstrument_requests()
    manager.shutdown(timeout=2)


def members(headers: dict[str, str]) -> list[tuple[str, str]]:
    """The outgoing tracestate as (key, value) pairs in order."""
    out = []
    for member in headers.get("tracestate", "").split(","):
        if member.strip():
            key, _, value = member.strip().partition("=")
            out.append((key, value))
    return out


def trace_id(headers: dict[str, str]) -> str:
    return headers["traceparent"].split("-")[1]


# --------------------------------------------------------------------------- traceparent


@pytest.mark.parametrize("value", [
    PARENT, " " + PARENT, PARENT + "\t", f"cc-{TRACE_ID}-1234567890123456-01",
    f"cc-{TRACE_ID}-1234567890123456-01-what-the-future-will-be-like",
])
def test_valid_traceparent_continues_the_trace(propagate, value):
    out = propagate(("traceparent", value))
    assert trace_id(out) == TRACE_ID and out["traceparent"].split("-")[2] != "1234567890123456"


@pytest.mark.parametrize("value", [
    f"00-{TRACE_ID}-1234567890123456-01.", f"00-{TRACE_ID}-1234567890123456-01-what-the-future-will-be-like",
    f"cc-{TRACE_ID}-1234567890123456-01.what-the-future", f"ff-{TRACE_ID}-1234567890123456-01",
    f"000-{TRACE_ID}-1234567890123456-01", f"00-{'0' * 32}-1234567890123456-01", f"00-{TRACE_ID}-{'0' * 16}-01",
    f"00-{TRACE_ID}-123456789012345-01", f"00-{TRACE_ID}-1234567890123456-001", "00-4BF92F3577B34DA6A3CE929D0E0E4736-1234567890123456-01",
])
def test_invalid_traceparent_starts_a_new_trace(propagate, value):
    assert trace_id(propagate(("traceparent", value), ("tracestate", "foo=1"))) != TRACE_ID


def test_two_traceparent_headers_start_a_new_trace(propagate):
    out = propagate(("traceparent", f"00-{TRACE_ID[:-1]}1-1234567890123456-01"), ("traceparent", PARENT))
    assert trace_id(out) not in (TRACE_ID, TRACE_ID[:-1] + "1")


# --------------------------------------------------------------------------- tracestate kept


@pytest.mark.parametrize("headers, expected", KEPT, ids=KEPT_IDS)
def test_tracestate_is_inherited(propagate, headers, expected):
    out = propagate(("traceparent", PARENT), *[("tracestate", h) for h in headers])
    assert trace_id(out) == TRACE_ID and members(out) == expected


def test_every_allowed_character_in_keys_and_values(propagate):
    value = VALUE_CHARS.rstrip()  # a value ends with a non-blank character
    for key in (KEY_CHARS, KEY_CHARS + "@" + "a-z0-9_-*/"):
        out = propagate(("traceparent", PARENT), ("tracestate", f"{key}={value}"))
        assert members(out) == [(key, value)]


@pytest.mark.parametrize("key", [
    "z" * 256,  # simple key at its maximum length
    "t" * 241 + "@" + "v" * 14,  # tenant and system ids at their maximum lengths
    "0tenant@vendor",  # a tenant id may begin with a digit
    "t@v",
])
def test_keys_up_to_their_maximum_lengths_are_kept(propagate, key):
    out = propagate(("traceparent", PARENT), ("tracestate", "foo=1"), ("tracestate", f"{key}=1"))
    assert members(out) == [("foo", "1"), (key, "1")]


def test_thirty_two_members_are_kept(propagate):
    entries = [f"bar{i:02d}={i:02d}" for i in range(1, 33)]
    out = propagate(("traceparent", PARENT), ("tracestate", ",".join(entries[:20])),
                    ("tracestate", ",".join(entries[20:])))
    assert len(members(out)) == 32 and members(out)[0] == ("bar01", "01")


def test_value_of_256_characters_is_kept(propagate):
    out = propagate(("traceparent", PARENT), ("tracestate", "foo=" + "x" * 256))
    assert members(out) == [("foo", "x" * 256)]


# --------------------------------------------------------------------------- tracestate dropped


@pytest.mark.parametrize("headers", DROPPED, ids=case_id)
def test_invalid_tracestate_is_discarded_whole(propagate, headers):
    out = propagate(("traceparent", PARENT), *[("tracestate", h) for h in headers])
    assert trace_id(out) == TRACE_ID  # the trace goes on
    assert members(out) == []


def test_tracestate_without_traceparent_is_discarded(propagate):
    out = propagate(("tracestate", "foo=1,bar=2"))
    assert trace_id(out) != TRACE_ID and members(out) == []


@pytest.mark.parametrize("name", ["trace-state", "trace.state", "tracestate2"])
def test_tracestate_under_another_name_is_ignored(propagate, name):
    assert members(propagate(("traceparent", PARENT), (name, "foo=1"))) == []


@pytest.mark.parametrize("name", ["TraceState", "TRACESTATE", "tRaCeStAtE"])
def test_header_names_are_case_insensitive(propagate, name):
    out = propagate(("TraceParent", PARENT), (name, "foo=1"))
    assert trace_id(out) == TRACE_ID and members(out) == [("foo", "1")]


# --------------------------------------------------------------------------- message headers (Celery, explicit extract)


def propagated(carrier: dict) -> dict[str, str]:
    """What tracer.propagation sends on for a carrier whose values may be lists (repeated headers)."""
    from opentelemetry import trace

    from tracer import propagation

    context = propagation.extract(carrier)
    if context is None:
        return {}
    span = trace.NonRecordingSpan(trace.get_current_span(context).get_span_context())
    return propagation.inject({}, trace.set_span_in_context(span))


@pytest.mark.parametrize("headers, expected", KEPT, ids=KEPT_IDS)
def test_repeated_tracestate_values_in_a_carrier_are_combined(headers, expected):
    assert members(propagated({"traceparent": PARENT, "tracestate": headers})) == expected


@pytest.mark.parametrize("headers", DROPPED, ids=case_id)
def test_invalid_tracestate_values_in_a_carrier_are_discarded_whole(headers):
    out = propagated({"traceparent": PARENT, "tracestate": headers})
    assert trace_id(out) == TRACE_ID and members(out) == []


def test_two_traceparent_values_in_a_carrier_are_no_parent():
    """As with two traceparent headers over HTTP: which one is the parent is unknowable, so neither is."""
    from tracer import propagation

    assert propagation.extract({"traceparent": [PARENT, f"00-{TRACE_ID[:-1]}1-1234567890123456-01"]}) is None
    assert propagation.extract({"traceparent": [PARENT, PARENT]}) is None
    assert propagation.extract({"traceparent": [PARENT]}) is not None
