"""Bottleneck hints: operations whose recent latency or error rate departs from their own baseline.

Each operation is compared with itself, not with a global threshold: the p95
of the last ``recent_s`` seconds against the p95 of the preceding
``baseline_s`` seconds, read from the mergeable per-minute histograms
(``stats_histogram``, scope ``span``), and likewise the error rate. A hint
needs enough calls on both sides to mean something, a relative change and an
absolute one, so a 0.1 ms operation doubling to 0.2 ms is not reported.
The ``trend`` compares the first and second half of the recent window.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from .stats import Histogram
from .storage.schema import stats, stats_histogram

RESOLUTION = 60


@dataclass(frozen=True)
class Thresholds:
    """When a departure from baseline is worth a hint."""

    p95_ratio: float = 1.5  # recent p95 at least this many times the baseline p95
    min_delta_ms: float = 5.0  # ... and at least this many ms slower
    error_rate_delta: float = 0.05  # recent error rate this much above baseline (absolute)
    error_rate_ratio: float = 2.0  # ... and at least this many times the baseline rate
    min_errors: int = 3
    min_calls: int = 10  # on each side
    trend_ratio: float = 1.2  # second half vs first half p95 for rising / falling


def _histograms(conn: Connection, start_s: int, end_s: int, split_s: int | None = None) -> dict[tuple, Histogram]:
    """Merged histograms per (service, operation[, half]) for buckets in [start_s, end_s)."""
    h = stats_histogram.c
    half = (h.bucket >= split_s).label("late") if split_s is not None else None
    columns = [h.service, h.operation] + ([half] if half is not None else []) + [h.bin, func.sum(h.count)]
    group = [h.service, h.operation] + ([half] if half is not None else []) + [h.bin]
    rows = conn.execute(
        select(*columns)
        .where(and_(h.scope == "span", h.resolution == RESOLUTION, h.bucket >= start_s, h.bucket < end_s))
        .group_by(*group)
    ).all()
    out: dict[tuple, Histogram] = defaultdict(Histogram)
    for row in rows:
        *key, bin_, count = row
        out[tuple(bool(k) if i == 2 else k for i, k in enumerate(key))].add_bin(int(bin_), int(count or 0))
    return out


def _counts(conn: Connection, start_s: int, end_s: int) -> dict[tuple, tuple[int, int, int]]:
    """(calls, errors, max_ns) per (service, operation) for buckets in [start_s, end_s)."""
    s = stats.c
    rows = conn.execute(
        select(s.service, s.operation, func.sum(s.count), func.sum(s.error_count), func.max(s.max_ns))
        .where(and_(s.scope == "span", s.resolution == RESOLUTION, s.bucket >= start_s, s.bucket < end_s))
        .group_by(s.service, s.operation)
    ).all()
    return {(r[0], r[1]): (int(r[2] or 0), int(r[3] or 0), int(r[4] or 0)) for r in rows}


def _p95_ms(hist: Histogram | None, max_ns: int = 0) -> float:
    if hist is None or hist.count <= 0:
        return 0.0
    if max_ns:
        hist.max = max(hist.max, max_ns)
    return round(hist.percentile(0.95) / 1e6, 3)


def find_bottlenecks(conn: Connection, now_ns: int, recent_s: int = 900, baseline_s: int = 86400,
                     thresholds: Thresholds = Thresholds(), limit: int = 50) -> list[dict[str, Any]]:
    """Operations that got slower or fail more often than usual, most severe first.

    Each hint: ``{service, operation, recent_p95_ms, baseline_p95_ms, p95_ratio,
    recent_error_rate, baseline_error_rate, recent_calls, baseline_calls,
    flag: "slower" | "more_errors", flags: [...], trend: "rising" | "falling" | "steady"}``.
    """
    if recent_s < RESOLUTION or baseline_s < RESOLUTION:
        raise ValueError("recent and baseline windows must be at least one minute")
    now_s = int(now_ns) // 1_000_000_000
    recent_start = now_s - int(recent_s)
    baseline_start = recent_start - int(baseline_s)
    split = recent_start + int(recent_s) // 2

    recent_counts = _counts(conn, recent_start, now_s + 1)
    baseline_counts = _counts(conn, baseline_start, recent_start)
    recent_halves = _histograms(conn, recent_start, now_s + 1, split_s=split)
    baseline_hist = _histograms(conn, baseline_start, recent_start)

    hints = []
    for key, (calls, errors, max_ns) in recent_counts.items():
        base_calls, base_errors, _ = baseline_counts.get(key, (0, 0, 0))
        if calls < thresholds.min_calls or base_calls < thresholds.min_calls:
            continue
        early = recent_halves.get(key + (False,), Histogram())
        late = recent_halves.get(key + (True,), Histogram())
        recent = Histogram().merge(early).merge(late)
        recent_p95 = _p95_ms(recent)
        base_p95 = _p95_ms(baseline_hist.get(key))
        ratio = round(recent_p95 / base_p95, 3) if base_p95 > 0 else None
        rate = errors / calls
        base_rate = base_errors / base_calls
        flags = []
        if ratio is not None and ratio >= thresholds.p95_ratio and recent_p95 - base_p95 >= thresholds.min_delta_ms:
            flags.append("slower")
        if (errors >= thresholds.min_errors and rate - base_rate >= thresholds.error_rate_delta
                and (base_rate == 0 or rate / base_rate >= thresholds.error_rate_ratio)):
            flags.append("more_errors")
        if not flags:
            continue
        trend = "steady"
        if early.count and late.count:
            first, second = _p95_ms(early), _p95_ms(late)
            if first > 0 and second / first >= thresholds.trend_ratio:
                trend = "rising"
            elif second > 0 and first / second >= thresholds.trend_ratio:
                trend = "falling"
        hints.append({
            "service": key[0], "operation": key[1],
            "recent_p95_ms": recent_p95, "baseline_p95_ms": base_p95, "p95_ratio": ratio,
            "recent_error_rate": round(rate, 4), "baseline_error_rate": round(base_rate, 4),
            "recent_calls": calls, "baseline_calls": base_calls,
            "flag": flags[0], "flags": flags, "trend": trend,
        })
    hints.sort(key=lambda h: (-(h["p95_ratio"] or 0) if h["flag"] == "slower" else 0,
                              -(h["recent_error_rate"] - h["baseline_error_rate"])))
    return hints[:limit]
