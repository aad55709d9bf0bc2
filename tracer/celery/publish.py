"""The sending side: a PRODUCER span (``publish <task>``) per task message, its context in the headers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from .. import otel_internals
from ..propagation import format_traceparent
from .carrier import LINKS_HEADER, PROPAGATION_KEYS, PUBLISHED_HEADER, encode_links, inject
from .hot_spans import Decided
from .inflight import MAX_IN_FLIGHT, finish_publish
from .messages import embedded_chord, message_field, message_fields, publish_attributes, text


class PublishHandlers:
    """``before_task_publish`` and ``after_task_publish``; part of :class:`tracer.celery.tracing.CeleryTracing`."""

    def on_before_task_publish(self, sender=None, body=None, exchange=None, routing_key=None,
                               headers=None, properties=None, **_: Any) -> None:
        if headers is None or not self.manager.enabled:
            return
        try:
            if "id" in headers:  # protocol 2: id and task name are message headers
                task_id, task_name = headers["id"], headers.get("task")
            else:
                task_id, task_name = message_field(headers, body, "id"), message_field(headers, body, "task")
            if not task_id:
                return
            if type(task_id) is not str:
                task_id = text(task_id)
            if type(task_name) is not str or not task_name:
                task_name = text(task_name or sender or "unknown")
            # the span object is built once the message has left (see record_late_attributes); what the
            # message needs now is the sampling decision and the ids
            # In a round trip this runs on cold caches, where each call costs microseconds: the common
            # case below reads dicts directly rather than through the helpers (same answers).
            name = "publish " + task_name
            hot = self._hot
            if hot is None or hot.tracer is not self.manager.tracer:
                hot = self.hot_spans()
            current = otel_context.get_current()  # the parent span and the baggage both come from it
            running = self.running.spans  # this thread's attempt of that task, if it is running one
            retrying = running.get((task_id, self.runner())) if running else None
            if retrying is not None:
                # The running task republishes itself (a retry), maybe from inside a span of its own (the
                # call that failed): the next attempt belongs to the attempt, not to that call.
                current = trace.set_span_in_context(retrying[0], current)
            current_span = otel_internals.current_span(current)
            parent = (current_span.get_span_context() if current_span is not None and isinstance(current_span, Span)
                      else None)
            # A retry or chain republishes the headers it arrived with: replace, never append.
            for key in PROPAGATION_KEYS:
                if key in headers:
                    del headers[key]
            now = time.time_ns()
            embed = body[2] if type(body) is tuple and len(body) == 3 else None  # protocol 2: (args, kwargs, embed)
            chord = (embed.get("chord") if type(embed) is dict
                     else body is not None and embedded_chord(body))
            baggage = otel_internals.has_baggage(current)
            ids = hot.fast_ids(parent) if hot.usable and not chord and not baggage else None
            if ids is not None:
                # the common case: only the ids go out now, formatted as the W3C propagator does
                trace_id, span_id, flags, trace_state = ids[0], ids[1], ids[2], ids[3]
                headers["traceparent"] = format_traceparent(trace_id, span_id, flags)
                if trace_state:
                    headers["tracestate"] = trace_state.to_header()
                span = Decided(hot, name, current, SpanKind.PRODUCER, ids, now)
            else:
                span = hot.decide(name, current, SpanKind.PRODUCER, (), now, parent) if hot.usable else None
                if span is None:
                    span = self.tracer.start_span(name, current, kind=SpanKind.PRODUCER, start_time=now)
                inject(headers, span, current)
                if chord:
                    self._note_chord_header(headers, body, span)
            headers[PUBLISHED_HEADER] = now
            countdown = (properties.get("countdown") if type(properties) is dict or isinstance(properties, Mapping)
                         else None)
            # attributes are built and set once the message is out (see record_late_attributes)
            publishing = self.publishing.spans
            publishing[task_id] = (span, None, (publish_attributes, headers, body, exchange, routing_key, countdown,
                                                task_name, task_id))
            if len(publishing) > MAX_IN_FLIGHT:
                self.publishing.evict()
        except Exception as exc:  # noqa: BLE001 - see _guard
            self._guard("before_task_publish", exc)

    def _note_chord_header(self, headers: Mapping[str, Any], body: Any, span: Any) -> None:
        """A chord header member: carry its span context to the callback, so the callback can link it."""
        callback = embedded_chord(body)
        if not callback or not isinstance(callback, dict):
            return
        group_id = message_fields(headers, body).get("group")
        if not group_id:
            return
        ctx = span.get_span_context()
        links = self.chord_links.setdefault(text(group_id), [])
        links.append([format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")])
        while len(self.chord_links) > 1000:
            self.chord_links.popitem(last=False)
        options = callback.setdefault("options", {})
        cb_headers = options.setdefault("headers", {}) if isinstance(options, dict) else None
        if isinstance(cb_headers, dict):
            cb_headers[LINKS_HEADER] = encode_links(links)

    def on_after_task_publish(self, sender=None, body=None, headers=None, **_: Any) -> None:
        try:
            end_ns = time.time_ns()
            task_id = message_field(headers, body, "id") if headers is not None else None
            held = self.publishing.spans.pop(task_id if type(task_id) is str else text(task_id), None) \
                if task_id else None
            if held is not None:  # built and ended by the export thread (see finish_publish)
                processor = getattr(self.manager, "span_processor", None)
                if processor is None:
                    finish_publish((held, end_ns))
                else:
                    processor.defer(finish_publish, (held, end_ns))
        except Exception as exc:  # noqa: BLE001
            self._guard("after_task_publish", exc)
