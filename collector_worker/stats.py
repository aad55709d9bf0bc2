"""Pre-aggregated RED statistics with mergeable latency histograms.

Latencies go into log-scaled bins (the DDSketch mapping): bin ``i`` holds
durations in ``(gamma**(i-2), gamma**(i-1)]`` (bin 0: zero-length spans) with ``gamma = (1+a)/(1-a)``, and its
representative value is within ``a`` (1 %) of every duration in it. Bins are
plain counters, so histograms of different minutes, operations or collectors
merge by adding counts, and every percentile read back from a merge is still
within 1 % of the exact value.

Rows are kept per minute (resolution 60) and per hour (3600, the rollup read
for long windows), written with additive upserts so several collectors can
write the same bucket concurrently.

Failed samples are also counted into a histogram of their own, under the scope
``e:<scope>`` (:func:`error_scope`), so the latency heat map can tell which
durations the errors had; the stats rows of that scope are never written.
"""

from __future__ import annotations

import math
import operator
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from sqlalchemy import Integer, func, select
from sqlalchemy.engine import Connection

from .storage import schema

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
RESOLUTIONS = (60, 3600)
ERROR_SCOPE_PREFIX = "e:"
GROUP_BY = ("operation", "service")
PERCENTILES = (("p50_ms", 0.50), ("p90_ms", 0.90), ("p95_ms", 0.95), ("p99_ms", 0.99))


def error_scope(scope: str) -> str:
    """The histogram scope that counts only the failed samples of ``scope`` (``span`` -> ``e:span``)."""
    return ERROR_SCOPE_PREFIX + scope


def bin_for(duration_ns: float) -> int:
    """The histogram bin of a duration: 0 holds zero-length spans, bin i ≥ 1 holds (gamma^(i-2), gamma^(i-1)]."""
    if duration_ns < 1:
        return 0
    return int(math.ceil(math.log(duration_ns) / _LOG_GAMMA)) + 1


def bin_value(bin: int) -> float:
    """The value (ns) a bin stands for: within 1 % of every duration in it."""
    if bin <= 0:
        return 0.0
    return 2.0 * GAMMA ** (bin - 1) / (GAMMA + 1.0)


class Histogram:
    """A mergeable latency histogram over :func:`bin_for` bins."""

    __slots__ = ("bins", "count", "max")

    def __init__(self, bins: Mapping[int, int] | None = None, max_ns: int = 0) -> None:
        self.bins: dict[int, int] = defaultdict(int)
        self.count = 0
        self.max = max_ns
        for b, c in (bins or {}).items():
            self.add_bin(b, c)

    def add(self, duration_ns: int, n: int = 1) -> None:
        self.bins[bin_for(duration_ns)] += n
        self.count += n
        if duration_ns > self.max:
            self.max = duration_ns

    def add_bin(self, bin: int, n: int) -> None:
        self.bins[bin] += n
        self.count += n

    def merge(self, other: "Histogram") -> "Histogram":
        for b, c in other.bins.items():
            self.bins[b] += c
        self.count += other.count
        self.max = max(self.max, other.max)
        return self

    def percentile(self, q: float) -> float:
        """The q-quantile (0 ≤ q ≤ 1) in ns; 0.0 for an empty histogram."""
        if self.count <= 0:
            return 0.0
        q = min(max(q, 0.0), 1.0)
        rank = q * (self.count - 1)
        seen = 0
        for b in sorted(self.bins):
            c = self.bins[b]
            if c <= 0:
                continue
            seen += c
            if seen > rank:
                value = bin_value(b)
                return min(value, float(self.max)) if self.max else value
        return float(self.max)


# --------------------------------------------------------------------------- writes


def bucket_of(start_ns: int, resolution: int) -> int:
    seconds = start_ns // 1_000_000_000
    return seconds - seconds % resolution


class Accumulator:
    """Stats rows gathered in memory so one batch of spans becomes a few upserts."""

    def __init__(self) -> None:
        self.stats: dict[tuple, list[int]] = {}
        self.hist: dict[tuple, int] = defaultdict(int)

    def add(self, scope: str, service: str, operation: str, start_ns: int, duration_ns: int,
            error: bool, weight: int = 1) -> None:
        """Count one sample (``weight`` -1 takes a previously counted sample back out)."""
        duration_ns = max(int(duration_ns), 0)
        b = bin_for(duration_ns)
        for resolution in RESOLUTIONS:
            key = (scope, resolution, bucket_of(start_ns, resolution), service[:255], operation[:512])
            row = self.stats.get(key)
            if row is None:
                row = self.stats[key] = [0, 0, 0, 0]
            row[0] += weight
            row[1] += weight if error else 0
            row[2] += weight * duration_ns
            if weight > 0 and duration_ns > row[3]:
                row[3] = duration_ns
            self.hist[key + (b,)] += weight
            if error:
                self.hist[(error_scope(scope),) + key[1:] + (b,)] += weight

    def add_spans(self, scope: str, spans: Iterable[Mapping[str, Any]]) -> None:
        """Count many spans at once: the same rows as :meth:`add` per span, with the per-span work done once.

        Spans are first summed per (service, operation, minute) and per histogram bin, then
        each minute row is added to its minute and hour buckets.
        """
        spans = spans if type(spans) is list else list(spans)
        minutes = None
        if set(map(type, spans)) <= {dict}:  # fields read in one call per span (not a subclass: no __missing__)
            try:
                minutes, bins, error_bins = _sum_samples(map(_SAMPLE_FIELDS, spans))
            except KeyError:  # a span without a service, name or status: read as None below
                minutes = None
        if minutes is None:
            minutes, bins, error_bins = _sum_samples((s["start_ns"], s["end_ns"], s.get("service"), s.get("name"),
                                                      s.get("status_code")) for s in spans)
        stats, hist = self.stats, self.hist
        for (service, operation, minute), (count, errors, total, longest) in minutes.items():
            service, operation = service[:255], operation[:512]
            for resolution in RESOLUTIONS:
                key = (scope, resolution, minute - minute % resolution, service, operation)
                row = stats.get(key)
                if row is None:
                    row = stats[key] = [0, 0, 0, 0]
                row[0] += count
                row[1] += errors
                row[2] += total
                if longest > row[3]:
                    row[3] = longest
        for hist_scope, counted in ((scope, bins), (error_scope(scope), error_bins)):
            for (service, operation, minute, b), count in counted.items():
                service, operation = service[:255], operation[:512]
                for resolution in RESOLUTIONS:
                    hist[(hist_scope, resolution, minute - minute % resolution, service, operation, b)] += count

    def flush(self, conn: Connection) -> None:
        """Write everything gathered as additive upserts (sorted, so concurrent writers lock in one order)."""
        stat_rows = [k + tuple(v) for k, v in sorted(self.stats.items()) if any(v)]
        hist_rows = [k + (c,) for k, c in sorted(self.hist.items()) if c]
        upsert_rows(conn, schema.stats, _STAT_COLUMNS, stat_rows, ("count", "error_count", "total_ns"), ("max_ns",))
        upsert_rows(conn, schema.stats_histogram, _HIST_COLUMNS, hist_rows, ("count",))
        self.stats.clear()
        self.hist.clear()


_SAMPLE_FIELDS = operator.itemgetter("start_ns", "end_ns", "service", "name", "status_code")


def _sum_samples(samples: Iterable[tuple[Any, Any, Any, Any, Any]]) -> tuple[dict, dict, dict]:
    """Per (service, operation, minute): [count, errors, total ns, max ns]; and the counts per histogram bin of
    all samples and of the failed ones, from (start, end, service, operation, status) of each span."""
    minutes: dict[tuple, list[int]] = {}
    bins: dict[tuple, int] = defaultdict(int)
    error_bins: dict[tuple, int] = defaultdict(int)
    log, ceil, log_gamma = math.log, math.ceil, _LOG_GAMMA
    for start, end, service, name, status in samples:
        if type(start) is not int:
            start = int(start)
        duration = (end if type(end) is int else int(end)) - start
        if duration < 1:
            duration, b = 0, 0
        else:
            b = ceil(log(duration) / log_gamma) + 1
        if type(service) is not str:
            service = str(service or "")
        if type(name) is not str:
            name = str(name or "")
        key = (service, name, start // 60_000_000_000 * 60)
        row = minutes.get(key)
        if row is None:
            row = minutes[key] = [0, 0, 0, 0]
        row[0] += 1
        if status == "error":
            row[1] += 1
            error_bins[key + (b,)] += 1
        row[2] += duration
        if duration > row[3]:
            row[3] = duration
        bins[key + (b,)] += 1
    return minutes, bins, error_bins


_STAT_COLUMNS = ("scope", "resolution", "bucket", "service", "operation", "count", "error_count", "total_ns", "max_ns")
_HIST_COLUMNS = ("scope", "resolution", "bucket", "service", "operation", "bin", "count")
_upserts: dict[tuple, str] = {}
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def saturating_add(name: str, column: str) -> str:
    """``name.column + excluded.column`` held within a signed 64-bit integer (BIGINT) instead of overflowing.

    PostgreSQL raises on overflow (and refused every later write to the bucket); SQLite turns the sum
    into an inexact REAL. The bound is tested before adding, so no intermediate value overflows either;
    CASE evaluates its branches in order on both databases.
    """
    old, new = f'{name}."{column}"', f'excluded."{column}"'
    return (f"CASE WHEN {new} > 0 AND {old} > {INT64_MAX} - {new} THEN {INT64_MAX} "
            f"WHEN {new} < 0 AND {old} < {INT64_MIN} - {new} THEN {INT64_MIN} ELSE {old} + {new} END")


def _upsert_sql(dialect: str, paramstyle: str, table, columns: tuple[str, ...], add: tuple[str, ...],
                maximum: tuple[str, ...]) -> str:
    """One single-row upsert text per table, built once; the same SQL on SQLite and PostgreSQL.

    Written as plain SQL for the driver's executemany: building the statement
    through the expression layer costs more per row than the database work.
    Integer columns add with saturation (:func:`saturating_add`), so no bucket can overflow.
    """
    key = (dialect, paramstyle, table.name, columns, add, maximum)
    sql = _upserts.get(key)
    if sql is None:
        mark = "?" if paramstyle == "qmark" else "%s"
        greatest = "greatest" if dialect == "postgresql" else "max"  # SQLite's two-argument max() is scalar
        name = f'"{table.name}"'
        sets = [f'"{c}" = ' + (saturating_add(name, c) if _is_integer(table, c) else f'{name}."{c}" + excluded."{c}"')
                for c in add]
        sets += [f'"{c}" = {greatest}({name}."{c}", excluded."{c}")' for c in maximum]
        keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
        cols = ", ".join(f'"{c}"' for c in columns)
        sql = _upserts[key] = (
            f"INSERT INTO {name} ({cols}) "
            f"VALUES ({', '.join([mark] * len(columns))}) "
            f"ON CONFLICT ({keys}) DO UPDATE SET {', '.join(sets)}"
        )
    return sql


def _is_integer(table, column: str) -> bool:
    return isinstance(table.c[column].type, Integer)


def saturate(value: int) -> int:
    """``value`` held within a signed 64-bit integer."""
    return INT64_MAX if value > INT64_MAX else INT64_MIN if value < INT64_MIN else value


def _within_int64(rows: list[tuple], positions: list[int]) -> list[tuple]:
    """``rows`` with the integers at ``positions`` saturated (sums built in Python are unbounded)."""
    def out_of_range(row: tuple) -> bool:
        return any(type(row[i]) is int and not INT64_MIN <= row[i] <= INT64_MAX for i in positions)

    if not any(out_of_range(row) for row in rows):  # the usual case: nothing to copy
        return rows
    return [tuple(saturate(v) if i in positions and type(v) is int else v for i, v in enumerate(row))
            if out_of_range(row) else row for row in rows]


def upsert_rows(conn: Connection, table, columns: Iterable[str], rows: list[tuple], add: Iterable[str],
                maximum: Iterable[str] = ()) -> None:
    """Additive upsert of value tuples in ``columns`` order (the fast form of :func:`additive_upsert`)."""
    if not rows:
        return
    columns, add, maximum = tuple(columns), tuple(add), tuple(maximum)
    sql = _upsert_sql(conn.dialect.name, conn.dialect.paramstyle, table, columns, add, maximum)
    rows = _within_int64(rows, [columns.index(c) for c in add + maximum if _is_integer(table, c)])
    conn.exec_driver_sql(sql, rows)


def sum_of(conn: Connection, column):
    """SUM of an integer column that cannot overflow when read: SQLite's sum() raises on 64-bit overflow,
    its total() does not (a float, exact below 2**53); PostgreSQL sums BIGINT as numeric."""
    return func.total(column) if conn.dialect.name == "sqlite" else func.sum(column)


def additive_upsert(conn: Connection, table, rows: list[dict], add: Iterable[str],
                    maximum: Iterable[str] = ()) -> None:
    """INSERT … ON CONFLICT (primary key) DO UPDATE col = col + excluded.col, on SQLite and PostgreSQL.

    Callers pass rows sorted by key so concurrent writers lock rows in one order.
    """
    if not rows:
        return
    columns = tuple(rows[0])
    upsert_rows(conn, table, columns, [tuple(r[c] for c in columns) for r in rows], add, maximum)


def record_spans(conn: Connection, spans: Iterable[Mapping[str, Any]], scope: str = "span") -> None:
    """Count newly stored spans into per-minute and hourly statistics of their service/operation."""
    acc = Accumulator()
    acc.add_spans(scope, spans)
    acc.flush(conn)


# --------------------------------------------------------------------------- reads


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def query_stats(conn: Connection, service: str | None = None, operation: str | None = None,
                start_ns: int | None = None, end_ns: int | None = None, step_s: int = 60,
                scope: str = "span", group_by: str = "operation") -> dict[str, Any]:
    """RED statistics per (service, operation) over a window, plus a time series per step.

    Steps of whole hours read the hourly rollup; otherwise minute rows are
    merged into steps of ``step_s`` seconds (rounded down to whole minutes).
    ``group_by="service"`` merges the operations of each service (histograms
    add, so its percentiles stay exact); the operation is then ``""``.
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
    per_service = group_by == "service"
    end_ns = time.time_ns() if end_ns is None else int(end_ns)
    start_ns = end_ns - 3600 * 1_000_000_000 if start_ns is None else int(start_ns)
    step_s = max(60, int(step_s or 60))
    step_s -= step_s % 60
    resolution = 3600 if step_s % 3600 == 0 else 60
    first = bucket_of(start_ns, resolution)
    last = end_ns // 1_000_000_000

    st, sh = schema.stats, schema.stats_histogram

    def where(table, q):
        q = q.where(table.c.scope == scope, table.c.resolution == resolution,
                    table.c.bucket >= first, table.c.bucket < last)
        if service is not None:
            q = q.where(table.c.service == service)
        if operation is not None:
            q = q.where(table.c.operation == operation)
        return q

    totals: dict[tuple[str, str], list[int]] = {}
    series: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(dict)
    for svc, op, bucket, count, errors, total, mx in conn.execute(where(st, select(
            st.c.service, st.c.operation, st.c.bucket, st.c.count, st.c.error_count, st.c.total_ns, st.c.max_ns))):
        if per_service:
            op = ""
        t = totals.setdefault((svc, op), [0, 0, 0, 0])
        t[0] += count
        t[1] += errors
        t[2] += total
        t[3] = max(t[3], mx)
        point = series[(svc, op)].setdefault(bucket - bucket % step_s, [0, 0, 0])
        point[0] += count
        point[1] += errors
        point[2] = max(point[2], mx)

    hists: dict[tuple[str, str], Histogram] = defaultdict(Histogram)
    point_hists: dict[tuple[str, str, int], Histogram] = defaultdict(Histogram)
    for svc, op, bucket, b, count in conn.execute(where(sh, select(
            sh.c.service, sh.c.operation, sh.c.bucket, sh.c.bin, sh.c.count))):
        if count <= 0:
            continue
        if per_service:
            op = ""
        hists[(svc, op)].add_bin(b, count)
        point_hists[(svc, op, bucket - bucket % step_s)].add_bin(b, count)

    window_s = max((end_ns - start_ns) / 1e9, 1e-9)
    operations = []
    for (svc, op), (count, errors, total, mx) in sorted(totals.items()):
        if count <= 0:
            continue
        h = hists[(svc, op)]
        h.max = mx
        row = {"service": svc, "operation": op, "count": count, "error_count": errors,
               "error_rate": round(errors / count, 6), "throughput_per_s": round(count / window_s, 6)}
        for name, q in PERCENTILES:
            row[name] = _ms(h.percentile(q))
        row["max_ms"] = _ms(mx)
        row["avg_ms"] = _ms(total / count)
        operations.append(row)

    out_series = []
    for (svc, op), points in sorted(series.items()):
        rows = []
        for bucket in sorted(points):
            count, errors, mx = points[bucket]
            if count <= 0:
                continue
            h = point_hists[(svc, op, bucket)]
            h.max = mx
            rows.append({"time": _iso(bucket), "bucket": bucket, "count": count, "error_count": errors,
                         "p50_ms": _ms(h.percentile(0.5)), "p95_ms": _ms(h.percentile(0.95)),
                         "p99_ms": _ms(h.percentile(0.99))})
        if rows:
            out_series.append({"service": svc, "operation": op, "points": rows})
    return {"operations": operations, "series": out_series, "resolution": resolution, "step_s": step_s}
