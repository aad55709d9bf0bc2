"""WebSocket handlers under flask-sock, driven by a real WebSocket client over a real socket."""

from __future__ import annotations

import pytest

from tests.support.servers import wait_until
from tests.tracer.tracer_helpers import stream_spans

flask = pytest.importorskip("flask")
flask_sock = pytest.importorskip("flask_sock")
simple_websocket = pytest.importorskip("simple_websocket")

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _echo_app(tracing, messages):
    app = flask.Flask("ws-test")
    sock = flask_sock.Sock(app)

    @app.get("/healthz")
    def healthz():
        return "ok"

    @sock.route("/echo/<room>")
    @tracing.trace_websocket(messages=messages)
    def echo(ws, room):
        while True:
            text = ws.receive()
            if text == "boom":
                raise RuntimeError("handler failed")
            with tracing.span("handle", room=room):
                ws.send(text.upper())

    return app


def _talk(base, *texts):
    url = base.replace("http://", "ws://") + "/echo/lobby"
    client = simple_websocket.Client.connect(url, headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"})
    replies = []
    try:
        for text in texts:
            client.send(text)
            if text != "boom":
                replies.append(client.receive(timeout=10))
    finally:
        client.close()
    return replies


def _spans_when(redis_url, count):
    return wait_until(lambda: (lambda s: s if len(s) >= count else None)(stream_spans(redis_url)), timeout=15,
                      message=f"{count} spans in the stream")


def test_connection_span_continues_the_upgrade_requests_trace_with_an_event_per_message(make_manager, serve,
                                                                                         redis_url):
    tracing = make_manager()
    assert _talk(serve(_echo_app(tracing, "events")), "hi", "there") == ["HI", "THERE"]
    spans = _spans_when(redis_url, 3)
    [connection] = [s for s in spans if s["name"] == "WS /echo/<room>"]
    assert (connection["trace_id"], connection["parent_span_id"]) == (PARENT_TRACE, PARENT_SPAN)
    assert connection["kind"] == "server" and connection["status_code"] != "error"
    attributes = connection["attributes"]
    assert attributes["url.path"] == "/echo/lobby" and attributes["network.protocol.name"] == "websocket"
    assert attributes["websocket.messages_received"] == 2 and attributes["websocket.messages_sent"] == 2
    assert attributes["websocket.closed_by_client"] is True
    names = [e["name"] for e in connection["events"]]
    assert names == ["websocket.receive", "websocket.send"] * 2
    assert connection["events"][0]["attributes"]["websocket.message.size"] == 2
    handles = [s for s in spans if s["name"] == "handle"]
    assert len(handles) == 2 and {s["parent_span_id"] for s in handles} == {connection["span_id"]}


def test_a_span_per_message_holds_the_work_done_for_it(make_manager, serve, redis_url):
    tracing = make_manager()
    _talk(serve(_echo_app(tracing, "spans")), "one", "two", "boom")
    spans = _spans_when(redis_url, 6)
    [connection] = [s for s in spans if s["name"] == "WS /echo/<room>"]
    messages = sorted((s for s in spans if s["name"] == "WS receive /echo/<room>"),
                      key=lambda s: s["attributes"]["websocket.message.index"])
    assert [m["parent_span_id"] for m in messages] == [connection["span_id"]] * 3
    assert [m["kind"] for m in messages] == ["consumer"] * 3
    for message in messages[:2]:
        [handle] = [s for s in spans if s["name"] == "handle" and s["parent_span_id"] == message["span_id"]]
        assert [e["name"] for e in message["events"]] == ["websocket.send"]
    assert messages[2]["status_code"] == "error" and connection["status_code"] == "error"
    assert "handler failed" in connection["status_message"]
