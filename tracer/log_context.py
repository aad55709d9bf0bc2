"""Python logging with trace ids: find a log line from its trace and a trace from its log line.

:class:`TraceContextFilter` puts the current span's ids on every record, under
Contrail's names (``trace_id``, ``span_id``) and the OpenTelemetry logging
instrumentation's (``otelTraceID``, ``otelSpanID``, ``otelTraceSampled``,
``otelServiceName``); outside a span they are ``"0" * 32`` / ``"0" * 16`` as
there. It never drops a record. :class:`TraceContextFormatter` is a ready
formatter with the ids in its default format. Both work in ``dictConfig``::

    "filters": {"trace": {"()": "tracer.log_context.TraceContextFilter"}},
    "formatters": {"traced": {"()": "tracer.log_context.TraceContextFormatter"}},

With the ``log_events_level`` setting, a TracingManager also installs
:class:`SpanEventsHandler` on the root logger: records at or above that level
become events (``log`` with the message, level and logger name) on the span
current when they are made.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from .decorators import truncate

NO_TRACE_ID = "0" * 32
NO_SPAN_ID = "0" * 16
DEFAULT_FORMAT = ("%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s")


class TraceContextFilter(logging.Filter):
    """Adds trace_id/span_id (and the otel* names) of the current span to each record; keeps every record."""

    def __init__(self, name: str = "", service_name: str | None = None):
        super().__init__(name)
        self.service_name = service_name

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
            sampled = ctx.trace_flags.sampled
        else:
            trace_id, span_id, sampled = NO_TRACE_ID, NO_SPAN_ID, False
        record.trace_id = record.otelTraceID = trace_id
        record.span_id = record.otelSpanID = span_id
        record.otelTraceSampled = sampled
        if not hasattr(record, "otelServiceName"):
            record.otelServiceName = self.service_name or ""
        return True


class TraceContextFormatter(logging.Formatter):
    """A formatter whose records always carry the ids (it applies :class:`TraceContextFilter` itself)."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: str = "%", **kwargs: Any):
        super().__init__(fmt or DEFAULT_FORMAT, datefmt, style, **kwargs)
        self._ids = TraceContextFilter()

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "trace_id"):
            self._ids.filter(record)
        return super().format(record)


class SpanEventsHandler(logging.Handler):
    """Turns records at or above its level into ``log`` events on the current recording span."""

    def __init__(self, level: int | str = logging.WARNING, max_length: int = 1024):
        super().__init__(level)
        self.max_length = max_length

    def emit(self, record: logging.LogRecord) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in someone's log call must not break the app
            message = str(record.msg)
        attributes = {"log.severity": record.levelname, "log.logger": record.name,
                      "log.message": truncate(message, self.max_length)}
        if record.exc_info and record.exc_info[0] is not None:
            attributes["exception.type"] = record.exc_info[0].__qualname__
        span.add_event("log", attributes)


def install_span_events(level: int | str, max_length: int = 1024) -> SpanEventsHandler:
    """Add a :class:`SpanEventsHandler` at ``level`` to the root logger; returns it for removal."""
    handler = SpanEventsHandler(level, max_length)
    logging.getLogger().addHandler(handler)
    return handler


def remove_span_events(handler: SpanEventsHandler) -> None:
    logging.getLogger().removeHandler(handler)
