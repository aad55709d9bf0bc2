"""TracingManager: the one object a service creates to trace itself.

It owns an OpenTelemetry SDK ``TracerProvider`` (never the global one unless
asked), a parent-based ratio sampler and a :class:`ContrailSpanProcessor`
that ships spans to the Redis stream. With ``enabled=False`` every method is
a cheap no-op: no thread, no connection, pass-through decorators.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Callable, Iterable, Mapping

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, Span, SpanContext, SpanKind

from . import decorators, propagation
from .sampling import CountingSampler, ratio_sampler
from .settings import TracerSettings
from .settings_base import mask_url
from .version import VERSION

logger = logging.getLogger(__name__)


def _parent_context(parent: Any) -> context_api.Context | None:
    if parent is None:
        return None
    if isinstance(parent, context_api.Context):
        return parent
    if isinstance(parent, Span):
        return trace.set_span_in_context(parent)
    if isinstance(parent, SpanContext):
        return trace.set_span_in_context(NonRecordingSpan(parent))
    raise TypeError(f"parent_span must be a Span, SpanContext or Context, not {type(parent).__name__}")


class TracingManager:
    """Create spans for one service and ship them to Contrail."""

    def __init__(self, service_name: str | None = None, redis_url: str | None = None,
                 sample_rate: float | None = None, enabled: bool | None = None, celery_app: Any = None,
                 set_global: bool = False, exporter: Any = None, enable_tracing: bool | None = None,
                 **settings: Any):
        from . import compat

        self.settings = TracerSettings.load(service_name=service_name, redis_url=redis_url, sample_rate=sample_rate,
                                            enabled=compat.enabled_from(enabled, enable_tracing), **settings)
        self.service_name = self.settings.service_name
        self.enabled = self.settings.enabled
        self._limit = self.settings.max_attribute_length
        self._processor = None
        self._exporters: dict[str, Any] = {}
        self._log_handler: Any = None
        self._sampler: CountingSampler | None = None
        self._metrics: Any = None
        self._metrics_lock = threading.Lock()
        self._profile_sampler: Any = None
        self._profile_exporter: Any = None
        self._slow_spans: Any = None
        if not self.enabled:
            self.tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
            self.tracer: trace.Tracer = trace.NoOpTracer()
            return
        from .export import ContrailSpanProcessor  # only an enabled tracer pays for redis and threads

        self._resource = resource = Resource.create({
            "service.name": self.service_name,
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        })
        self._sampler = ratio_sampler(self.settings.sample_rate)
        self.tracer_provider = TracerProvider(
            sampler=self._sampler, resource=resource,
            span_limits=SpanLimits(max_attribute_length=self._limit),
        )
        if "redis" in self.settings.exporters or exporter is not None:
            self._processor = ContrailSpanProcessor(self.settings, exporter=exporter)
            self._processor.report_source = self.get_tracer_info
            self.tracer_provider.add_span_processor(self._processor)
        self._add_exporters(compat.jaeger_endpoint(self.settings))
        self.tracer = self.tracer_provider.get_tracer("contrail", VERSION)
        if self.settings.log_events_level:
            from .log_context import install_span_events

            self._log_handler = install_span_events(self.settings.log_events_level, self._limit)
        if set_global:
            trace.set_tracer_provider(self.tracer_provider)
        if celery_app is not None:
            self.instrument_celery(celery_app)
        if self.settings.system_metrics:
            from .system_metrics import observe_process

            observe_process(self.metrics)
        if self.settings.profile_slow_threshold > 0:
            from .profiler import SlowSpanProfiler

            self._slow_spans = SlowSpanProfiler(self.settings.profile_slow_threshold,
                                                self.settings.profile_slow_interval, self.profiler,
                                                self.profile_exporter)
            self.tracer_provider.add_span_processor(self._slow_spans)

    def _add_exporters(self, jaeger: str | None) -> None:
        """console / file / otlp (and the original API's Jaeger), each behind its own batch processor."""
        from .exporters import exporter_processors, otlp_exporter

        extra = {"jaeger": otlp_exporter(jaeger, self.settings.export_timeout)} if jaeger else None
        self._exporters = exporter_processors(self.settings, extra)
        for processor in self._exporters.values():
            self.tracer_provider.add_span_processor(processor)

    def __repr__(self) -> str:
        return f"<TracingManager service={self.service_name!r} enabled={self.enabled}>"

    @property
    def span_processor(self) -> Any:
        """The processor shipping spans to the Redis stream (None when disabled or not exporting there).

        Integrations hand it work a span's end can wait for (``defer``): it runs on the export thread.
        """
        return self._processor

    # ------------------------------------------------------------ explicit spans
    def start_span(self, operation_name: str, parent_span: Any = None, tags: Mapping[str, Any] | None = None,
                   kind: SpanKind | str | None = None) -> Span:
        """Start a span (not made current). Parent: ``parent_span`` if given, else the current span."""
        if not self.enabled:
            return INVALID_SPAN
        return self.tracer.start_span(
            operation_name,
            context=None if parent_span is None else _parent_context(parent_span),
            kind=SpanKind.INTERNAL if kind is None else decorators.span_kind(kind),
            attributes=decorators.clean_attributes(tags, self._limit) if tags else None,
        )

    def finish_span(self, span: Span, tags: Mapping[str, Any] | None = None,
                    logs: Mapping[str, Any] | Iterable[Mapping[str, Any] | str] | None = None, error: BaseException | None = None) -> None:
        """Add tags and log events, record ``error`` (ERROR status + exception event), end the span."""
        if span is None or not span.is_recording():
            return
        if tags:
            span.set_attributes(decorators.clean_attributes(tags, self._limit))
        if logs:
            self._add_logs(span, logs)
        if error is not None:
            decorators.mark_error(span, error)
        span.end()

    def _add_logs(self, span: Span, logs: Mapping[str, Any] | Iterable[Mapping[str, Any] | str] | str) -> None:
        """A dict is ONE event whose attributes are the dict (named by its ``event`` key, as in the original
        API); a list holds several such dicts (or plain strings, each an event name)."""
        if isinstance(logs, (Mapping, str)):
            logs = [logs]
        for log in logs:
            if isinstance(log, Mapping):
                fields = dict(log)
                name = str(fields.pop("event", None) or fields.pop("name", None) or "log")
                span.add_event(name, decorators.clean_attributes(fields, self._limit))
            else:
                span.add_event(decorators.truncate(str(log), self._limit))

    def span(self, name: str, kind: SpanKind | str | None = None, **attributes: Any):
        """Context manager: a current span for the block; an exception marks it ERROR and propagates."""
        if not self.enabled:
            return decorators.NOOP_SCOPE
        return decorators.CurrentSpan(
            self.tracer, name, SpanKind.INTERNAL if kind is None else decorators.span_kind(kind),
            decorators.clean_attributes(attributes, self._limit) if attributes else None,
        )

    def checkpoint(self, name: str, **attributes: Any) -> None:
        """An event on the current span; nothing if there is none."""
        if not self.enabled:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, decorators.clean_attributes(attributes, self._limit))

    # ------------------------------------------------------------ decorators
    def with_tracing(self, operation_name: str | Callable | None = None, tags: Mapping[str, Any] | None = None,
                     record_args: bool | None = None, record_result: bool | None = None):
        """Decorator: one span per call of a function, coroutine function, generator or async generator.

        Usable bare (``@tracing.with_tracing``) or called (``@tracing.with_tracing("name")``). A call that
        returns gets ``success=True`` and status OK; ``record_result`` (default: the ``record_return_value``
        setting) also records the return value, redacted and truncated like the arguments.
        """
        if callable(operation_name):
            return self.with_tracing()(operation_name)
        if not self.enabled:
            return lambda func: func
        record = self.settings.record_arguments if record_args is None else record_args
        result = self.settings.record_return_value if record_result is None else record_result
        attributes = decorators.clean_attributes(tags, self._limit)

        def decorate(func: Callable) -> Callable:
            return decorators.traced(self.tracer, func, operation_name, SpanKind.INTERNAL, attributes, record,
                                     self._limit, record_result=result)

        return decorate

    def trace_database_operation(self, operation: str, table: str | None = None, query: str | None = None):
        """Decorator or context manager: a CLIENT span with db.* attributes (query literals redacted)."""
        if not self.enabled:
            return decorators.NOOP_SCOPE
        name, attributes = decorators.database_attributes(operation, table, query, self._limit)
        return decorators.SpanScope(self.tracer, name, SpanKind.CLIENT, attributes, self._limit)

    def trace_external_call(self, service_name: str, endpoint: str | None = None):
        """Decorator or context manager: a CLIENT span naming the called service (peer.service, url.full)."""
        if not self.enabled:
            return decorators.NOOP_SCOPE
        name, attributes = decorators.external_attributes(service_name, endpoint, self._limit)
        return decorators.SpanScope(self.tracer, name, SpanKind.CLIENT, attributes, self._limit)

    def trace_tool_execution(self, tool_name: str, operation: str):
        """Decorator or context manager: a span for one tool run (gen_ai.tool.name)."""
        if not self.enabled:
            return decorators.NOOP_SCOPE
        name, attributes = decorators.tool_attributes(tool_name, operation)
        return decorators.SpanScope(self.tracer, name, SpanKind.INTERNAL, attributes, self._limit)

    # ------------------------------------------------------------ propagation
    def inject_span_context(self, span: Any = None, carrier: Any = None) -> Any:
        """Write W3C traceparent/tracestate/baggage for ``span`` (default: current) into ``carrier``."""
        if carrier is None:
            carrier = {}
        if not self.enabled:
            return carrier
        context = None
        if span is not None:
            if isinstance(span, SpanContext):
                span = NonRecordingSpan(span)
            if isinstance(span, Span):
                context = trace.set_span_in_context(span, context_api.get_current())
            elif isinstance(span, context_api.Context):
                context = span
        return propagation.inject(carrier, context)

    def extract_span_context(self, carrier: Any) -> context_api.Context | None:
        """The remote parent in ``carrier`` as a Context (use as ``parent_span``), or None. Never raises."""
        return propagation.extract(carrier)

    # ------------------------------------------------------------ metrics
    @property
    def metrics(self) -> Any:
        """This process's counters, histograms and gauges (:class:`tracer.metrics.MetricsCollector`), made on
        first use: ``tracing.metrics.counter("llm_requests_total").increment()``."""
        if self._metrics is None:
            with self._metrics_lock:
                if self._metrics is None:
                    if not self.enabled:
                        from .metrics import DisabledMetrics

                        self._metrics = DisabledMetrics()
                    else:
                        from .metrics import MetricsCollector

                        self._metrics = MetricsCollector(self.settings, self._resource)
        return self._metrics

    def get_metrics_collector(self) -> Any:
        """The same object as :attr:`metrics`."""
        return self.metrics

    # ------------------------------------------------------------ profiles
    def profile(self, name: str | Callable | None = None) -> Any:
        """Decorator or context manager: a sampling profile of the code, attached to the current span (see
        :mod:`tracer.profiler`). Usable bare (``@tracing.profile``) or named (``tracing.profile("load")``)."""
        if callable(name):
            return self.profile()(name)
        if not self.enabled:
            return decorators.NOOP_SCOPE
        from .profiler import ProfileScope

        return ProfileScope(self, name)

    def profiler(self) -> Any:
        """This process's stack sampler (:class:`tracer.profiler.Sampler`), made on first use."""
        if self._profile_sampler is None:
            with self._metrics_lock:
                if self._profile_sampler is None:
                    from .profiler import Sampler

                    self._profile_sampler = Sampler(self.settings.profile_interval, self._slow_spans)
        return self._profile_sampler

    def profile_exporter(self) -> Any:
        """The exporter of finished profiles (:class:`tracer.profile_export.ProfileExporter`), made on first use."""
        if self._profile_exporter is None:
            with self._metrics_lock:
                if self._profile_exporter is None:
                    from .profile_export import ProfileExporter

                    self._profile_exporter = ProfileExporter(self.settings, enabled=self._processor is not None)
        return self._profile_exporter

    # ------------------------------------------------------------ lifecycle
    def get_tracer_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "enabled": self.enabled,
            "tracer_initialized": self.enabled,  # the original API's name: spans are being recorded and shipped
            "service_name": self.service_name,
            "redis_url": mask_url(self.settings.redis_url),
            "stream": self.settings.stream,
            "sample_rate": self.settings.sample_rate,
            "spans_started": 0, "spans_exported": 0, "spans_dropped": 0, "spans_sampled_out": 0,
            "spans_queued": 0, "spans_spooled": 0, "batches_exported": 0, "spool_bytes": 0,
            "export_errors": 0, "last_export_error": None, "spool_records_corrupt": 0, "last_spool_error": None,
            "exporters": {name: processor.info() for name, processor in self._exporters.items()},
        }
        if self._processor is not None:
            info.update(self._processor.info())
        if self._sampler is not None:
            info["spans_sampled_out"] = self._sampler.dropped
        if self._metrics is not None:
            info.update(self._metrics.info())
        if self._profile_exporter is not None:
            info.update(self._profile_exporter.info())
        return info

    def flush(self, timeout: float = 5.0) -> bool:
        """Export finished spans now; True when all of them reached Redis within ``timeout`` seconds."""
        flushed = all([processor.force_flush(int(timeout * 1000)) for processor in self._exporters.values()])
        if self._metrics is not None:
            flushed = self._metrics.flush(timeout) and flushed
        if self._profile_exporter is not None:
            flushed = self._profile_exporter.flush() and flushed
        if self._processor is None:
            return flushed
        return self._processor.force_flush(timeout * 1000.0) and flushed

    def shutdown(self, timeout: float = 5.0) -> None:
        """Export (or spool) what is left and stop the export thread. Idempotent."""
        if self._log_handler is not None:
            from .log_context import remove_span_events

            remove_span_events(self._log_handler)
            self._log_handler = None
        if self._metrics is not None:
            self._metrics.shutdown(timeout)
        if self._profile_exporter is not None:
            self._profile_exporter.shutdown()
        if self._processor is None and not self._exporters:
            return
        if self._processor is not None:
            self._processor.shutdown(timeout)
        for processor in self._exporters.values():
            processor.shutdown(int(timeout * 1000))
        self.tracer_provider.shutdown()

    # ------------------------------------------------------------ integrations (lazy imports)
    def instrument_celery(self, app: Any = None) -> Any:
        from .celery import instrument_celery

        return instrument_celery(self, app)

    def instrument_flask(self, app: Any) -> Any:
        from .http import instrument_flask

        return instrument_flask(self, app)

    def instrument_requests(self) -> Any:
        from .http import instrument_requests

        return instrument_requests(self)

    def trace_websocket(self, name: str | None = None, messages: str = "events") -> Any:
        """Decorator for a Flask WebSocket handler (e.g. flask-sock): a span per connection, an event (or a
        span, ``messages="spans"``) per message; see :mod:`tracer.websocket`."""
        from .websocket import trace_websocket

        return trace_websocket(self, name, messages)

    def agent_run(self, name: str, **kwargs: Any) -> Any:
        from . import ai

        return ai.agent_run(self, name, **kwargs)

    def phase(self, name: str, **kwargs: Any) -> Any:
        from . import ai

        return ai.phase(self, name, **kwargs)

    def tool_call(self, name: str, **kwargs: Any) -> Any:
        from . import ai

        return ai.tool_call(self, name, **kwargs)

    def llm_call(self, **kwargs: Any) -> Any:
        from . import ai

        return ai.llm_call(self, **kwargs)
