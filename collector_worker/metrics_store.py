"""Application metrics in the collector: decoded ``kind=metrics`` entries into time series, and back out.

Each point (one series over one export interval, see :mod:`tracer.metrics_codec`) is added into a
minute bucket and an hourly rollup (``stats.RESOLUTIONS``) of its series, the series being
(name, service, kind, unit, attributes). Counters add their increases; gauges keep last/min/max and
a sum and count for the mean; histograms add their count and sum and their values into the
log-scaled bins of :mod:`collector_worker.stats` (values scaled by 1e9, the bins' nanoseconds), so
percentiles of any window merge as the span statistics' do.

An OpenTelemetry exponential-histogram bucket at scale ``s`` covers ``(b**i, b**(i+1)]`` with
``b = 2**(2**-s)``; its count goes to the bin of the value within ``(b-1)/(b+1)`` of every value in
it, so a percentile read back is within that plus the bins' 1 % (about 2 % at the tracer's scale 5
for values spanning 1000x; exact-scale data from narrower ranges is better). Values at or below zero
are counted at zero.

A stream entry is stored once: its id is recorded in ``metric_entries`` in the same transaction, so
an entry delivered again (a collector stopped before acknowledging) is not counted twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from sqlalchemy.engine import Connection, Engine

from . import stats
from .storage import metrics as sql
from .storage.writer import write_lock

VALUE_SCALE = 1e9  # histogram values are binned as if they were durations in ns
EXEMPLARS_KEPT = 4  # exemplars kept per series and bucket (the latest batch's)
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
ATTRIBUTE_VALUES_LISTED = 100  # distinct values per attribute key in the metrics listing


def series_key(point: Mapping[str, Any]) -> str:
    identity = [point["name"], point["service"], point["kind"], point["unit"], point["attributes"]]
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _bin_of_bucket(scale: int, index: int) -> int:
    """The stats bin of the representative value of exponential bucket ``index`` at ``scale``."""
    base = 2.0 ** (2.0 ** -scale)
    try:
        lower = base ** index
        value = 2.0 * lower * base / (1.0 + base)  # within (b-1)/(b+1) of every value in (lower, lower*b]
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        return stats.bin_for(1e308)
    return stats.bin_for(value * VALUE_SCALE)


def histogram_bins(value: Mapping[str, Any]) -> dict[int, int]:
    """The stats bins of one exponential-histogram point: positive buckets by value, everything else at 0."""
    bins: dict[int, int] = defaultdict(int)
    scale = value["scale"]
    offset, counts = value["pos"]
    for position, count in enumerate(counts):
        if count:
            bins[_bin_of_bucket(scale, offset + position)] += count
    at_zero = value["zero"] + sum(value["neg"][1])
    if at_zero:
        bins[0] += at_zero
    return bins


def rows_of(points: Iterable[Mapping[str, Any]]) -> tuple[list[tuple], list[tuple]]:
    """The metric_points rows (both resolutions) and histogram bin rows of decoded points, merged by key."""
    merged: dict[tuple, list[Any]] = {}
    bins: dict[tuple, int] = defaultdict(int)
    for point in points:
        series, kind, value, time_ns = series_key(point), point["kind"], point["value"], point["time_ns"]
        exemplars = [e for e in point["exemplars"]][-EXEMPLARS_KEPT:]
        if kind == "histogram":
            count, total, low, high, last = value["count"], value["sum"], value["min"], value["max"], None
            point_bins = histogram_bins(value)
        else:
            count, total, low, high, last = 1, value, (value if kind == "gauge" else None), \
                (value if kind == "gauge" else None), (value if kind == "gauge" else None)
            point_bins = {}
        for resolution in stats.RESOLUTIONS:
            bucket = stats.bucket_of(time_ns, resolution)
            key = (resolution, bucket, series)
            row = merged.get(key)
            if row is None:
                merged[key] = [resolution, bucket, series, point["name"], point["service"][:255], kind, point["unit"],
                               point["description"], json.dumps(point["attributes"], sort_keys=True, default=str),
                               count, total, low, high, last, time_ns if last is not None else None, exemplars]
            else:
                row[9] += count
                row[10] += total
                row[11] = _pick(min, row[11], low)
                row[12] = _pick(max, row[12], high)
                if last is not None and (row[14] is None or time_ns >= row[14]):
                    row[13], row[14] = last, time_ns
                if exemplars:
                    row[15] = (row[15] + exemplars)[-EXEMPLARS_KEPT:]
            for b, c in point_bins.items():
                bins[key + (b,)] += c
    point_rows = [tuple(row[:9]) + (stats.saturate(row[9]),) + tuple(row[10:15]) + (json.dumps(row[15]),)
                  for row in merged.values()]
    bin_rows = [key + (stats.saturate(count),) for key, count in bins.items()]
    return point_rows, bin_rows


def _pick(choose, old: float | None, new: float | None) -> float | None:
    if old is None:
        return new
    return old if new is None else choose(old, new)


def store_entry(engine: Engine, entry_id: str, points: list[Mapping[str, Any]]) -> bool:
    """Add the points of one stream entry in one transaction; False if that entry was stored before."""
    point_rows, bin_rows = rows_of(points)
    with write_lock(engine):
        with engine.begin() as conn:
            if not sql.claim_entry(conn, entry_id, time.time_ns()):
                return False
            sql.write_points(conn, point_rows, bin_rows)
    return True


# --------------------------------------------------------------------------- reads


def list_metrics(conn: Connection, since_ns: int) -> list[dict[str, Any]]:
    """Metric names seen since ``since_ns`` with their kind, unit, description, services and attribute values."""
    found: dict[str, dict[str, Any]] = {}
    for name, service, kind, unit, description, attributes in sql.series_since(
            conn, stats.bucket_of(since_ns, 3600)):
        item = found.setdefault(name, {"name": name, "kind": kind, "unit": unit, "description": description,
                                       "services": set(), "attributes": defaultdict(set), "series": 0})
        item["services"].add(service)
        item["series"] += 1
        item["description"] = item["description"] or description
        for key, value in _attributes(attributes).items():
            values = item["attributes"][key]
            if len(values) < ATTRIBUTE_VALUES_LISTED:
                values.add(str(value))
    return [{**item, "services": sorted(item["services"]),
             "attributes": {k: sorted(v) for k, v in sorted(item["attributes"].items())}}
            for item in found.values()]


def _attributes(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _matches(attributes: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    return all(key in attributes and str(attributes[key]) == wanted for key, wanted in filters.items())


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def query_metric(conn: Connection, name: str, start_ns: int, end_ns: int, step_s: int,
                 service: str | None = None, filters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Points of metric ``name`` every ``step_s`` seconds over ``[start_ns, end_ns)``, over the series of
    ``service`` whose attributes match ``filters`` (all given keys equal).

    Counters: ``sum`` and ``rate`` (per second); gauges: ``last``, ``min``, ``max``, ``mean``; histograms:
    ``count``, ``sum``, ``mean``, ``min``, ``max``, ``p50``, ``p95``, ``p99``. Each point also lists up to
    a few exemplars (trace and span of a measurement) of its buckets. Hourly rollups are read when the
    step is a whole number of hours, minute buckets otherwise.
    """
    filters = dict(filters or {})
    resolution = 3600 if step_s % 3600 == 0 else 60
    first = stats.bucket_of(start_ns, step_s)
    end = stats.bucket_of(end_ns, resolution) + resolution
    series_seen: set[str] = set()
    steps: dict[int, dict[str, Any]] = {}
    kind = unit = None
    for (bucket, series, _service, row_kind, row_unit, attributes, count, total, low, high, last, last_ns,
         exemplars) in sql.point_rows(conn, name, resolution, first, end, service):
        if filters and not _matches(_attributes(attributes), filters):
            continue
        kind, unit = kind or row_kind, unit or row_unit
        series_seen.add(series)
        step = steps.setdefault(stats.bucket_of(bucket * 1_000_000_000, step_s), {
            "count": 0, "sum": 0.0, "min": None, "max": None, "last": None, "last_ns": -1, "exemplars": [],
            "histogram": stats.Histogram()})
        step["count"] += int(count)
        step["sum"] += float(total)
        step["min"] = _pick(min, step["min"], low)
        step["max"] = _pick(max, step["max"], high)
        if last is not None and last_ns is not None and last_ns >= step["last_ns"]:
            step["last"], step["last_ns"] = last, last_ns
        step["exemplars"] = (step["exemplars"] + json.loads(exemplars or "[]"))[-EXEMPLARS_KEPT:]
    if kind == "histogram":
        for bucket, series, b, count in sql.bin_rows(conn, name, resolution, first, end, service):
            step = steps.get(stats.bucket_of(bucket * 1_000_000_000, step_s))
            if series in series_seen and step is not None:
                step["histogram"].add_bin(int(b), int(count))
    points = [_point(kind, bucket, step_s, steps[bucket]) for bucket in sorted(steps)]
    return {"name": name, "kind": kind, "unit": unit, "service": service, "filters": filters,
            "start_ns": start_ns, "end_ns": end_ns, "step_s": step_s, "resolution_s": resolution,
            "series": len(series_seen), "points": points}


def _point(kind: str | None, bucket: int, step_s: int, step: dict[str, Any]) -> dict[str, Any]:
    point: dict[str, Any] = {"time": _iso(bucket), "time_ns": bucket * 1_000_000_000}
    if kind == "counter":
        point.update(sum=step["sum"], rate=step["sum"] / step_s)
    elif kind == "gauge":
        point.update(last=step["last"], min=step["min"], max=step["max"],
                     mean=step["sum"] / step["count"] if step["count"] else None)
    else:
        histogram = step["histogram"]
        if step["max"] is not None:
            histogram.max = max(int(step["max"] * VALUE_SCALE), 0)
        point.update(count=step["count"], sum=step["sum"], min=step["min"], max=step["max"],
                     mean=step["sum"] / step["count"] if step["count"] else None)
        for label, q in PERCENTILES:
            point[label] = histogram.percentile(q) / VALUE_SCALE if histogram.count else None
    point["exemplars"] = [{"trace_id": e[0], "span_id": e[1], "value": e[2], "time_ns": e[3]}
                          for e in step["exemplars"]]
    return point


def last_minute(conn: Connection, now_ns: int, max_series: int) -> tuple[list[dict[str, Any]], bool]:
    """Every series of the last complete minute before ``now_ns`` with its point (as :func:`query_metric`
    computes them, for a 60 s step), at most ``max_series``; True as second value if some were left out."""
    bucket = stats.bucket_of(now_ns, 60) - 60
    rows = sql.bucket_rows(conn, 60, bucket, max_series + 1)
    omitted = len(rows) > max_series
    rows = rows[:max_series]
    histograms: dict[str, stats.Histogram] = defaultdict(stats.Histogram)
    if any(row.kind == "histogram" for row in rows):
        for series, b, count in sql.bucket_bins(conn, 60, bucket):
            histograms[series].add_bin(int(b), int(count))
    out = []
    for row in rows:
        step = {"count": int(row.count), "sum": float(row.sum), "min": row.min, "max": row.max, "last": row.last,
                "exemplars": [], "histogram": histograms.get(row.series) or stats.Histogram()}
        out.append({"name": row.name, "kind": row.kind, "unit": row.unit, "description": row.description,
                    "service": row.service, "attributes": _attributes(row.attributes),
                    "point": _point(row.kind, bucket, 60, step)})
    return out, omitted
