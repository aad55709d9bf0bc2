"""The latency heat map: time x duration cells with their counts and error counts, from the stored histograms.

Rows are groups of ``ROW_BINS`` adjacent histogram bins (stats.py), each about
1.5x the duration of the one below, with exact integer nanosecond edges: a
sample of duration ``d`` is counted in row ``r`` exactly when
``row_min_ns(r) <= d <= row_max_ns(r)``, so a selected region can be turned
into a trace search that finds exactly the traces it counted.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.engine import Connection

from . import stats
from .storage import heatmap as store

ROW_BINS = 20  # bins per row: GAMMA**20 ~ 1.49, so a row spans about +49 %
AUTO_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 7 * 86400)
AUTO_COLUMNS = 96  # an automatic step gives at most this many columns
HOURLY_FROM_S = 12 * 3600
SCOPES = ("trace", "span")


def auto_step(window_s: float) -> int:
    """The smallest of ``AUTO_STEPS`` that draws ``window_s`` in at most ``AUTO_COLUMNS`` columns.

    Windows of ``HOURLY_FROM_S`` (12 h) or more get whole hours at least, so they read the hourly rollup:
    a day of minute rows is 60 times the rows to sum for a picture barely finer.
    """
    for step in AUTO_STEPS:
        if window_s >= HOURLY_FROM_S and step < 3600:
            continue
        if window_s / step <= AUTO_COLUMNS + 0.01:  # "24h" ending now is a hair longer than 24 h when measured
            return step
    return 86400 * math.ceil(window_s / AUTO_COLUMNS / 86400)  # whole days


def _first_ns_of_bin(b: int) -> int:
    """The smallest integer duration (ns) whose histogram bin is at least ``b``."""
    if b <= 1:
        return 0 if b <= 0 else 1
    x = int(stats.GAMMA ** (b - 2))
    while x > 0 and stats.bin_for(x) >= b:
        x -= 1
    while stats.bin_for(x) < b:
        x += 1
    return x


def row_min_ns(row: int) -> int:
    return 0 if row <= 0 else _first_ns_of_bin(row * ROW_BINS + 1)


def row_max_ns(row: int) -> int:
    return _first_ns_of_bin((row + 1) * ROW_BINS + 1) - 1


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def latency_heatmap(conn: Connection, *, scope: str = "trace", service: str | None = None,
                    operation: str | None = None, start_ns: int | None = None, end_ns: int | None = None,
                    step_s: int | None = None) -> dict[str, Any]:
    """Columns (time), rows (duration) and the non-empty cells ``[column, row, count, errors]``.

    ``scope`` ``trace`` counts whole traces by their root service and operation;
    ``span`` counts the spans of each service and operation. Steps of whole
    hours read the hourly rollup, others the minute rows.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    end_ns = time.time_ns() if end_ns is None else int(end_ns)
    start_ns = end_ns - 3600 * 1_000_000_000 if start_ns is None else int(start_ns)
    window_s = max((end_ns - start_ns) / 1e9, 1.0)
    step_s = auto_step(window_s) if step_s is None else int(step_s)
    resolution = 3600 if step_s % 3600 == 0 else 60
    first = stats.bucket_of(start_ns, step_s)
    end_s = end_ns // 1_000_000_000 + 1  # the bucket holding end_ns is in
    last = stats.bucket_of(end_ns, step_s)
    columns = list(range(first, last + 1, step_s))
    index = {c: i for i, c in enumerate(columns)}
    error_scope = stats.error_scope(scope)
    counts: dict[tuple[int, int], list[int]] = {}
    for hist_scope, col, row, n in store.histogram_cells(conn, (scope, error_scope), service, operation, first,
                                                         max(end_s, first + 1), resolution, step_s, ROW_BINS):
        if col not in index:
            continue
        cell = counts.setdefault((index[col], row), [0, 0])
        cell[1 if hist_scope == error_scope else 0] += n
    rows_used = sorted({row for _, row in counts})
    rows = []
    if rows_used:
        for row in range(rows_used[0], rows_used[-1] + 1):
            low, high = row_min_ns(row), row_max_ns(row)
            rows.append({"row": row, "min_ns": low, "max_ns": high,
                         "min_ms": round(low / 1e6, 6), "max_ms": round(high / 1e6, 6)})
    cells = [[c, r, n, min(e, n)] for (c, r), (n, e) in sorted(counts.items()) if n > 0]
    return {
        "scope": scope, "service": service, "operation": operation,
        "start_ns": start_ns, "end_ns": end_ns, "step_s": step_s, "resolution": resolution,
        "columns": [{"start_ns": c * 1_000_000_000, "end_ns": (c + step_s) * 1_000_000_000, "time": _iso(c)}
                    for c in columns],
        "rows": rows,
        "cells": cells,
        "count": sum(cell[2] for cell in cells),
        "error_count": sum(cell[3] for cell in cells),
        "max_cell": max((cell[2] for cell in cells), default=0),
    }
