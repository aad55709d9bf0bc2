"""Tracing Flask WebSocket handlers (flask-sock and anything shaped like it).

One SERVER span per connection, a child of the trace context in the HTTP
upgrade request's headers, lasting as long as the handler runs; each message
is an event on it (``websocket.receive`` / ``websocket.send`` with type and
size) or, with ``messages="spans"``, each received message opens a span that
is current while the handler deals with it (until the next ``receive()``), so
work done for one message nests under it. A client closing the connection is
a normal end, not an error. Flask is imported only when a handler runs::

    sock = Sock(app)

    @sock.route("/echo")
    @tracing.trace_websocket()
    def echo(ws):
        while True:
            ws.send(ws.receive())
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from . import propagation
from .decorators import mark_error

MESSAGE_MODES = ("events", "spans")
_CLOSED_NAMES = ("ConnectionClosed", "ConnectionClosedOK", "WebSocketDisconnect")


def _upgrade_request() -> tuple[dict[str, str], dict[str, Any], str]:
    """(headers, attributes, route) of the current Flask request, or empties outside Flask."""
    try:
        from flask import has_request_context, request
    except ImportError:
        return {}, {}, ""
    if not has_request_context():
        return {}, {}, ""
    route = request.url_rule.rule if request.url_rule is not None else request.path
    attributes = {"url.path": request.path, "http.route": route, "network.protocol.name": "websocket",
                  "url.scheme": "wss" if request.is_secure else "ws"}
    if request.remote_addr:
        attributes["client.address"] = request.remote_addr
    return dict(request.headers), attributes, route


def _size_and_type(message: Any) -> tuple[int, str]:
    if isinstance(message, (bytes, bytearray, memoryview)):
        return len(message), "binary"
    if isinstance(message, str):
        return len(message.encode("utf-8", "replace")), "text"
    return 0, "none"


class TracedWebSocket:
    """Wraps the handler's websocket: ``receive``/``send`` are recorded, everything else passes through."""

    def __init__(self, ws: Any, tracer: trace.Tracer, connection: trace.Span, messages: str, route: str):
        self._ws = ws
        self._tracer = tracer
        self._connection = connection
        self._messages = messages
        self._route = route
        self._message_span: trace.Span | None = None
        self._token: Any = None
        self.received = 0
        self.sent = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def receive(self, *args: Any, **kwargs: Any) -> Any:
        self.end_message()
        message = self._ws.receive(*args, **kwargs)
        if message is None:  # a timeout, not a message
            return message
        self.received += 1
        size, kind = _size_and_type(message)
        attributes = {"websocket.message.type": kind, "websocket.message.size": size,
                      "websocket.message.index": self.received}
        if self._messages == "spans":
            self._message_span = self._tracer.start_span(
                f"WS receive {self._route}".strip(), context=trace.set_span_in_context(self._connection),
                kind=SpanKind.CONSUMER, attributes=attributes)
            self._token = context_api.attach(trace.set_span_in_context(self._message_span))
        else:
            self._connection.add_event("websocket.receive", attributes)
        return message

    def send(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        size, kind = _size_and_type(message)
        current = self._message_span if self._message_span is not None else self._connection
        current.add_event("websocket.send", {"websocket.message.type": kind, "websocket.message.size": size})
        return self._ws.send(message, *args, **kwargs)

    def end_message(self, error: BaseException | None = None) -> None:
        """End the span of the message being handled (``messages="spans"``)."""
        if self._message_span is None:
            return
        if error is not None:
            mark_error(self._message_span, error)
        self._message_span.end()
        context_api.detach(self._token)
        self._message_span = self._token = None


def trace_websocket(tracing: Any, name: str | None = None, messages: str = "events") -> Callable:
    """Decorator for a WebSocket handler ``handler(ws, *args, **kwargs)``; see the module docstring."""
    if messages not in MESSAGE_MODES:
        raise ValueError(f"messages must be one of {', '.join(MESSAGE_MODES)}, not {messages!r}")

    def decorate(handler: Callable) -> Callable:
        if not tracing.enabled:
            return handler

        @functools.wraps(handler)
        def wrapper(ws: Any, *args: Any, **kwargs: Any) -> Any:
            headers, attributes, route = _upgrade_request()
            parent = propagation.extract(headers) if headers else None
            span = tracing.tracer.start_span(name or f"WS {route or handler.__qualname__}", context=parent,
                                             kind=SpanKind.SERVER, attributes=attributes)
            token = context_api.attach(trace.set_span_in_context(span))
            traced = TracedWebSocket(ws, tracing.tracer, span, messages, route)
            try:
                return handler(traced, *args, **kwargs)
            except BaseException as exc:
                closed = type(exc).__name__ in _CLOSED_NAMES
                traced.end_message(None if closed else exc)
                if closed:
                    span.set_attribute("websocket.closed_by_client", True)
                else:
                    mark_error(span, exc)
                raise
            finally:
                traced.end_message()
                span.set_attribute("websocket.messages_received", traced.received)
                span.set_attribute("websocket.messages_sent", traced.sent)
                span.end()
                context_api.detach(token)

        return wrapper

    return decorate
