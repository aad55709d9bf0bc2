"""Application metrics: counters, histograms and gauges on the OpenTelemetry metrics SDK.

``tracing.metrics.counter("llm_requests_total").increment(model="gpt-4o")``,
``.histogram("llm_request_duration", unit="s").record(1.23)`` and
``.gauge("active_sessions").set(5)`` record into an SDK ``MeterProvider``.
The calling thread does only what the SDK does plus one check of the series'
cardinality: past ``metrics_cardinality_limit`` attribute sets per instrument,
measurements with a new attribute set are dropped and counted. A
``PeriodicExportingMetricReader`` thread collects every ``metrics_interval``
(delta temporality: counters send their increase, histograms the interval's
base-2 exponential histogram) and :class:`StreamMetricExporter` pushes the
points as ``kind=metrics`` entries (:mod:`tracer.metrics_codec`) to the span
stream; while Redis is unreachable they go to a disk spool of their own
(``<spool_dir>/metrics``, the same :class:`tracer.spool.DiskSpool`) and are
replayed first at the next export that reaches Redis (the reader exports
only when there are points; ``flush`` and ``shutdown`` replay in any case). Measurements taken inside a sampled span
carry it as an exemplar (the SDK's trace-based exemplar filter).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from typing import Any, Callable, Mapping

from opentelemetry.sdk.metrics import (
    Counter as SdkCounter,
    Histogram as SdkHistogram,
    MeterProvider,
    ObservableCounter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    Gauge as GaugeData,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

from . import metrics_codec
from .settings import TracerSettings
from .spool import DiskSpool

logger = logging.getLogger(__name__)

HISTOGRAM_BUCKETS = 320  # exponential buckets per histogram point: values spanning 1000x keep scale 5 (~1 % wide)
POINTS_PER_ENTRY = 1000  # metric points per stream entry
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,254}$")  # OpenTelemetry's instrument name syntax


# --------------------------------------------------------------------------- instruments


class SeriesLimit:
    """The attribute sets one instrument has recorded, at most ``limit``; the rest are refused and counted."""

    __slots__ = ("limit", "seen", "dropped")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set = set()
        self.dropped = 0

    def admit(self, attributes: Mapping[str, Any] | None) -> bool:
        try:
            key = frozenset(attributes.items()) if attributes else ()
        except TypeError:  # sequence values (lists) are not hashable: key them as tuples
            key = frozenset((k, tuple(v) if isinstance(v, list) else v) for k, v in attributes.items())
        seen = self.seen
        if key in seen:
            return True
        if len(seen) >= self.limit:
            self.dropped += 1
            return False
        seen.add(key)
        return True


def _merged(attributes: Mapping[str, Any] | None, labels: dict[str, Any]) -> Mapping[str, Any] | None:
    if not labels:
        return attributes
    return {**attributes, **labels} if attributes else labels


class Counter:
    """A monotonic sum: ``increment(amount=1, attributes=None, **labels)``."""

    kind = "counter"
    __slots__ = ("name", "series", "_add")

    def __init__(self, name: str, instrument: Any, series: SeriesLimit) -> None:
        self.name, self.series, self._add = name, series, instrument.add

    def increment(self, amount: float = 1, attributes: Mapping[str, Any] | None = None, **labels: Any) -> None:
        if labels:
            attributes = _merged(attributes, labels)
        if self.series.admit(attributes):
            self._add(amount, attributes)

    add = increment


class Histogram:
    """A distribution: ``record(value, attributes=None, **labels)``; stored as a mergeable sketch."""

    kind = "histogram"
    __slots__ = ("name", "series", "_record")

    def __init__(self, name: str, instrument: Any, series: SeriesLimit) -> None:
        self.name, self.series, self._record = name, series, instrument.record

    def record(self, value: float, attributes: Mapping[str, Any] | None = None, **labels: Any) -> None:
        if labels:
            attributes = _merged(attributes, labels)
        if self.series.admit(attributes):
            self._record(value, attributes)


class Gauge:
    """A value that goes up and down: ``set(value, attributes=None, **labels)``; the last value is exported."""

    kind = "gauge"
    __slots__ = ("name", "series", "_set")

    def __init__(self, name: str, instrument: Any, series: SeriesLimit) -> None:
        self.name, self.series, self._set = name, series, instrument.set

    def set(self, value: float, attributes: Mapping[str, Any] | None = None, **labels: Any) -> None:
        if labels:
            attributes = _merged(attributes, labels)
        if self.series.admit(attributes):
            self._set(value, attributes)


class _Nothing:
    """What a disabled tracer hands out: every method of every instrument does nothing."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def _ignore(self, *args: Any, **kwargs: Any) -> None:
        return None

    increment = add = record = set = _ignore


class DisabledMetrics:
    """The metrics of a disabled tracer: same methods, no SDK, no thread."""

    def counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return _Nothing(name)

    histogram = gauge = counter

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {}


# --------------------------------------------------------------------------- export


def _exemplars(point: Any) -> list[list[Any]]:
    out = []
    for exemplar in point.exemplars or ():
        if exemplar.trace_id and exemplar.span_id:
            out.append([format(exemplar.trace_id, "032x"), format(exemplar.span_id, "016x"), exemplar.value,
                        exemplar.time_unix_nano])
            if len(out) >= metrics_codec.MAX_EXEMPLARS:
                break
    return out


def _histogram_value(point: Any) -> dict[str, Any]:
    return {"count": point.count, "sum": point.sum, "min": point.min, "max": point.max, "scale": point.scale,
            "zero": point.zero_count, "pos": [point.positive.offset, list(point.positive.bucket_counts)],
            "neg": [point.negative.offset, list(point.negative.bucket_counts)]}


def metric_rows(data: MetricsData) -> tuple[list[list[Any]], list[tuple[str, dict]]]:
    """The codec rows of collected SDK metrics, and their resources."""
    rows: list[list[Any]] = []
    resources: list[tuple[str, dict]] = []
    for resource_metrics in data.resource_metrics:
        attrs = dict(resource_metrics.resource.attributes)
        if "process.pid" in attrs:  # the resource was made before any fork: a pool process is itself
            attrs["process.pid"] = os.getpid()
        resources.append((str(attrs.get("service.name", "unknown_service")), attrs))
        index = len(resources) - 1
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data_type = metric.data
                if isinstance(data_type, Sum):
                    kind = "counter" if data_type.is_monotonic else "gauge"
                elif isinstance(data_type, GaugeData):
                    kind = "gauge"
                elif isinstance(data_type, ExponentialHistogram):
                    kind = "histogram"
                else:  # explicit-bucket histograms come only from views Contrail does not install
                    continue
                for point in data_type.data_points:
                    value = _histogram_value(point) if kind == "histogram" else point.value
                    rows.append([metric.name, kind, metric.unit or "", metric.description or "", index,
                                 dict(point.attributes or {}), point.time_unix_nano, value, _exemplars(point)])
    return rows, resources


class StreamMetricExporter(MetricExporter):
    """Pushes collected metrics to the span stream as ``kind=metrics`` entries; spools them while Redis is down.

    Runs on the reader's thread, never on the application's. ``stream`` is any
    object with ``push(list_of_fields)`` (a :class:`tracer.export.RedisStreamExporter` by default).
    """

    def __init__(self, settings: TracerSettings, stream: Any = None, spool: DiskSpool | None = None) -> None:
        delta = AggregationTemporality.DELTA
        super().__init__(
            preferred_temporality={SdkCounter: delta, SdkHistogram: delta, ObservableCounter: delta},
            preferred_aggregation={SdkHistogram: ExponentialBucketHistogramAggregation(max_size=HISTOGRAM_BUCKETS)},
        )
        if stream is None:
            from .export import RedisStreamExporter

            stream = RedisStreamExporter(settings)
        self.stream = stream
        self.spool = spool if spool is not None else DiskSpool(
            os.path.join(settings.resolved_spool_dir, "metrics"), settings.spool_max_bytes)
        self._lock = threading.Lock()
        self.points_exported = 0
        self.entries_exported = 0
        self.points_dropped = 0  # not encodable
        self.export_errors = 0
        self.last_export_error: str | None = None
        if hasattr(os, "register_at_fork"):  # a weak reference: the hook must not keep the exporter alive
            after_fork = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (after_fork() or (lambda: None))())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        try:
            getattr(self.stream, "forget", self.stream.reset)()
        except Exception:
            pass
        self.spool.after_fork()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        with self._lock:
            entries = []
            try:
                rows, resources = metric_rows(metrics_data)
            except Exception as exc:  # noqa: BLE001 - the SDK handed over something unexpected
                rows, resources = [], []
                self._note(exc)
            for start in range(0, len(rows), POINTS_PER_ENTRY):
                chunk = rows[start:start + POINTS_PER_ENTRY]
                try:
                    entries.append((metrics_codec.encode_metrics(chunk, resources), len(chunk)))
                except Exception as exc:  # noqa: BLE001 - an attribute value msgpack refuses: counted
                    self.points_dropped += len(chunk)
                    self._note(exc)
            self.deliver(entries)
        return MetricExportResult.SUCCESS

    def deliver(self, entries: list[tuple[dict, int]]) -> None:
        """Replay the spool, then push ``entries``; on any error spool them (counted if the spool is full)."""
        try:
            if self.spool.pending():
                self.spool.replay(self._push)
            if entries:
                self._push([fields for fields, _ in entries])
        except Exception as exc:  # noqa: BLE001 - Redis down or refusing: keep them for the next interval
            self._note(exc)
            for fields, count in entries:
                self.spool.append(fields, count)

    def replay(self) -> None:
        """Push what the spool holds (the reader calls export only when there are new points)."""
        with self._lock:
            self.deliver([])

    def _push(self, fields_list: list[dict]) -> None:
        self.stream.push(fields_list)
        self.entries_exported += len(fields_list)
        self.points_exported += sum(int(fields.get(b"n") or fields.get("n") or 0) for fields in fields_list)

    def _note(self, exc: BaseException) -> None:
        self.export_errors += 1
        self.last_export_error = f"{type(exc).__name__}: {exc}"

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self.spool.pending():
            self.replay()
        self.spool.close()
        try:
            self.stream.shutdown()
        except Exception:
            pass


# --------------------------------------------------------------------------- the collector


class MetricsCollector:
    """The instruments of one process (``tracing.metrics``); one per :class:`tracer.TracingManager`."""

    def __init__(self, settings: TracerSettings, resource: Any, exporter: StreamMetricExporter | None = None) -> None:
        from .version import VERSION

        self.settings = settings
        self.exporter = exporter if exporter is not None else StreamMetricExporter(settings)
        self.reader = PeriodicExportingMetricReader(self.exporter,
                                                    export_interval_millis=settings.metrics_interval * 1000.0)
        self.provider = MeterProvider(metric_readers=[self.reader], resource=resource,
                                      exemplar_filter=TraceBasedExemplarFilter(), shutdown_on_exit=False)
        self.meter = self.provider.get_meter("contrail", VERSION)
        self._instruments: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _instrument(self, cls: type, create: Callable[..., Any], name: str, unit: str, description: str) -> Any:
        instrument = self._instruments.get(name)
        if instrument is None:
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"invalid metric name {name!r}: a letter, then up to 254 letters, digits, _ . - /")
            with self._lock:
                instrument = self._instruments.get(name)
                if instrument is None:
                    instrument = self._instruments[name] = cls(
                        name, create(name, unit=unit, description=description),
                        SeriesLimit(self.settings.metrics_cardinality_limit))
        if not isinstance(instrument, cls):
            raise ValueError(f"metric {name!r} is already a {instrument.kind}, not a {cls.kind}")
        return instrument

    def counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return self._instrument(Counter, self.meter.create_counter, name, unit, description)

    def histogram(self, name: str, unit: str = "", description: str = "") -> Histogram:
        return self._instrument(Histogram, self.meter.create_histogram, name, unit, description)

    def gauge(self, name: str, unit: str = "", description: str = "") -> Gauge:
        return self._instrument(Gauge, self.meter.create_gauge, name, unit, description)

    def flush(self, timeout: float = 5.0) -> bool:
        """Collect and export now; True when the points reached Redis (not the spool)."""
        if self._closed:
            return False
        errors = self.exporter.export_errors
        done = self.provider.force_flush(int(timeout * 1000))
        if self.exporter.spool.pending():  # the reader exports only when there are points: replay anyway
            self.exporter.replay()
        return bool(done) and self.exporter.export_errors == errors and not self.exporter.spool.pending()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Export (or spool) what was recorded and stop the reader thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.provider.shutdown(timeout_millis=timeout * 1000)
        except Exception:  # noqa: BLE001 - shutting down must not raise into the application
            logger.exception("contrail: metrics shutdown failed")

    def info(self) -> dict[str, Any]:
        exporter, spool = self.exporter, self.exporter.spool
        return {
            "metric_instruments": len(self._instruments),
            "metric_series": sum(len(i.series.seen) for i in list(self._instruments.values())),
            "metric_series_dropped": sum(i.series.dropped for i in list(self._instruments.values())),
            "metric_points_exported": exporter.points_exported,
            "metric_entries_exported": exporter.entries_exported,
            "metric_points_spooled": spool.spans_spooled,
            "metric_points_dropped": exporter.points_dropped + spool.spans_dropped,
            "metric_export_errors": exporter.export_errors,
            "last_metric_export_error": exporter.last_export_error,
        }
