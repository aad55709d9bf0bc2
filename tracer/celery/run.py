"""The worker side: a CONSUMER span (``run <task>``) per task run, and how each run can end."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from .. import otel_internals
from ..otel_internals import SdkEvent
from ..propagation import extract_parent, parse_traceparent
from .carrier import LINKS_HEADER, PUBLISHED_HEADER, decode_links, queue_wait, request_carrier
from .inflight import SPARE_SPANS, record_error, record_late_attributes
from .messages import run_attributes, run_attributes_later, task_name, text

_STATUS_OK = Status(StatusCode.OK)


class RunHandlers:
    """``task_prerun`` to ``task_postrun`` and what interrupts a run (failure, retry, revoke, internal error);
    part of :class:`tracer.celery.tracing.CeleryTracing`."""

    def on_task_prerun(self, sender=None, task_id=None, task=None, **_: Any) -> None:
        if not self.manager.enabled or task is None or not task_id:
            return
        try:
            start_ns = time.time_ns()
            request = task.request
            name = getattr(task, "name", None)
            name = name if type(name) is str and name else task_name(task, task_name(sender))
            carrier = request_carrier(request)
            if self._start_run(task_id, request, name, carrier, start_ns):
                return
            parent, parent_span = extract_parent(carrier)
            attrs: dict[str, Any] = {}  # on top of request_attributes, set when the span ends
            if carrier.get("traceparent") and parent is None:
                attrs["contrail.propagation_error"] = "malformed traceparent: started a new trace"
            event = None
            wait = queue_wait(carrier.get(PUBLISHED_HEADER), start_ns)
            published_ns = wait[1] if wait is not None else None
            if wait is not None:
                wait_ms = wait[0]
                attrs["celery.queue_wait_ms"] = wait_ms
                attrs["celery.published_ns"] = published_ns
                event_attrs = {"celery.queue_wait_ms": wait_ms, "celery.published_ns": published_ns}
            links = decode_links(carrier.get(LINKS_HEADER)) if carrier.get(LINKS_HEADER) else None
            context = parent or otel_context.Context()
            hot = self.hot_spans()
            if published_ns and SdkEvent is not None:
                # numbers this module computed: stored as they are (see add_own_event), once the span started
                event = SdkEvent("celery.dequeued", event_attrs, start_ns)
            span = hot.start_span("run " + name, context, SpanKind.CONSUMER, links, start_ns,
                                  parent_span if parent is not None else None, event)
            if published_ns and event is None:
                otel_internals.add_own_event(span, "celery.dequeued", event_attrs, start_ns)
            token = otel_context.attach(trace.set_span_in_context(span, context))
            task_id = text(task_id)
            # attributes are built and set once the result is stored (see record_late_attributes)
            self.running.put((task_id, self.runner()), (span, token, (run_attributes, request, name, task_id, attrs)))
        except Exception as exc:  # noqa: BLE001
            self._guard("task_prerun", exc)

    def _start_run(self, task_id: Any, request: Any, name: str, carrier: Mapping[str, Any], start_ns: int) -> bool:
        """The run span of the common message, started with the least work before the task runs.

        A plain ``traceparent`` (what the publish handler writes) with no
        tracestate, baggage or links, and a tracer sampling as TracingManager
        sets it up: the span is started from the parsed ids and attached; its
        attributes and the ``celery.dequeued`` event are added when it ends
        (:meth:`finish_run`). False for anything else, which takes the
        general path.
        """
        value = carrier.get("traceparent")
        if (type(value) is not str or "tracestate" in carrier or "baggage" in carrier
                or LINKS_HEADER in carrier):
            return False
        remote = parse_traceparent(value)
        if remote is None or not remote.is_valid:
            return False
        hot = self._hot
        if hot is None or hot.tracer is not self.manager.tracer:
            hot = self.hot_spans()
        if not hot.usable:
            return False
        ids = hot.fast_ids(remote)
        if ids is None:
            return False
        # the contexts extract() and set_span_in_context() would make: only the span is set
        context_with_span = otel_internals.context_with_span
        parent = context_with_span(NonRecordingSpan(remote))
        span = hot.start("run " + name, parent, SpanKind.CONSUMER, ids, start_ns)
        token = otel_context.attach(context_with_span(span))
        task_id = task_id if type(task_id) is str else text(task_id)
        # by attempt: a retry (same task id) may start on another thread before this attempt has ended
        self.running.put((task_id, self.runner()), (span, token, (run_attributes_later, request, name, task_id,
                                                                  start_ns, carrier.get(PUBLISHED_HEADER))))
        return True

    def on_task_postrun(self, sender=None, task_id=None, task=None, state=None, **_: Any) -> None:
        try:
            end_ns = time.time_ns()
            held = self.running.spans.pop((task_id if type(task_id) is str else text(task_id), self.runner()),
                                          None) if task_id else None
            if held is None:
                return
            span, token = held[0], held[1]
            try:
                otel_context.detach(token)
            except Exception:  # detached on another thread or out of order: harmless
                pass
            if state:
                # attributes, status and end() on the export thread (see finish_run): the worker goes
                # back to its next message now
                processor = getattr(self.manager, "span_processor", None)
                item = (held, state if type(state) is str else text(state), end_ns)
                if processor is None:
                    self.finish_run(item)
                else:
                    processor.defer(self.finish_run, item)
            elif self.in_pool_child:
                # No state: the child is being terminated (revoke, hard time limit) and SystemExit is
                # unwinding the task. The worker's parent records this run with the reason; ending
                # this span too would show the attempt twice.
                self.discarded += 1
            else:
                interrupted = sys.exc_info()[1]
                record_late_attributes(held, {"celery.state": "INTERRUPTED"})
                span.set_status(Status(StatusCode.ERROR, f"interrupted: {type(interrupted).__name__}"
                                       if interrupted else "interrupted"))
                span.end()
        except Exception as exc:  # noqa: BLE001
            self._guard("task_postrun", exc)

    def finish_run(self, item: tuple) -> None:
        """A run span's end, deferred by ``task_postrun``: attributes, final state, status, ``end()``."""
        held, state, end_ns = item
        span = record_late_attributes(held, {"celery.state": state})
        if state == "SUCCESS":  # task_success fires just before task_postrun; one handler does both
            span.set_status(_STATUS_OK)
        span.end(end_time=end_ns)
        self.hot_spans().prepare(SPARE_SPANS)  # the object of a coming task's span, made while nothing waits

    def on_task_failure(self, sender=None, task_id=None, exception=None, traceback=None, einfo=None,
                        **_: Any) -> None:
        try:
            held = self.running.of_task((text(task_id), self.runner())) if task_id else None
            if held is not None:
                record_error(held[0], exception, einfo)
                return
            # No run span here: this is the worker's parent and the child died (hard time limit,
            # lost worker). Record the run from what the parent knows.
            reason = "time limit exceeded" if type(exception).__name__ == "TimeLimitExceeded" else "worker lost"
            self._record_from_parent(sender, text(task_id), "FAILURE", reason, exception=exception, einfo=einfo)
        except Exception as exc:  # noqa: BLE001
            self._guard("task_failure", exc)

    def on_task_retry(self, sender=None, request=None, reason=None, einfo=None, **_: Any) -> None:
        try:
            task_id = getattr(request, "id", None)
            held = self.running.of_task((text(task_id), self.runner())) if task_id else None
            if held is None:
                return
            span = held[0]
            reason_text = text(reason) if reason is not None else ""
            span.set_attribute("celery.retry_reason", reason_text[:1024])
            span.add_event("celery.retry", {"celery.retry_reason": reason_text[:1024],
                                            "celery.retries": int(getattr(request, "retries", 0) or 0)})
        except Exception as exc:  # noqa: BLE001
            self._guard("task_retry", exc)

    def on_task_revoked(self, sender=None, request=None, terminated=None, signum=None, expired=None,
                        **_: Any) -> None:
        try:
            task_id = text(getattr(request, "id", None) or "")
            if not task_id:
                return
            if expired:
                reason = "expired"
            elif terminated:
                reason = f"terminated (signal {signum})" if signum is not None else "terminated"
            else:
                reason = "revoked"
            held = self.running.of_task((task_id, self.runner()))
            if held is not None:  # threads/solo pool: the span is ours to close
                span = held[0]
                span.set_attribute("celery.revoke_reason", reason)
                span.set_status(Status(StatusCode.ERROR, f"revoked: {reason}"))
                return
            self._record_from_parent(sender, task_id, "REVOKED", reason, request=request,
                                     extra={"celery.terminated": bool(terminated), "celery.expired": bool(expired),
                                            **({"celery.signum": text(signum)} if signum is not None else {})})
        except Exception as exc:  # noqa: BLE001
            self._guard("task_revoked", exc)

    def on_task_internal_error(self, sender=None, task_id=None, exception=None, einfo=None, **_: Any) -> None:
        try:
            held = self.running.of_task((text(task_id), self.runner())) if task_id else None
            if held is not None:
                held[0].set_attribute("celery.internal_error", True)
                record_error(held[0], exception, einfo)
            else:
                self._record_from_parent(sender, text(task_id or ""), "FAILURE", "internal error",
                                         exception=exception, einfo=einfo)
        except Exception as exc:  # noqa: BLE001
            self._guard("task_internal_error", exc)
