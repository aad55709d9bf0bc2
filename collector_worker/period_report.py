"""The period report: what happened over a window, gathered from the stored statistics into one dict.

``contrail report --last 24h -o report.html`` (and the dashboard's "Download
report") render it with :mod:`collector_worker.report_html` into a single
self-contained HTML file. Everything here reads the pre-aggregated tables
(statistics, histograms, dependency edges, LLM usage) plus a few example
traces per operation, so a report of a busy day costs a handful of queries.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import click
from sqlalchemy.engine import Connection

from . import heatmap, stats
from .pricing import PriceTable
from .storage import heatmap as heatmap_store
from .storage import queries

TOP_OPERATIONS = 10
EXAMPLE_TRACES = 3
SERIES_POINTS = 96


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _latency_by_column(conn: Connection, start_ns: int, end_ns: int, step_s: int) -> dict[int, stats.Histogram]:
    """Trace-duration histograms per step, merged over every root operation (exact bins: one bin per row)."""
    resolution = 3600 if step_s % 3600 == 0 else 60
    first = stats.bucket_of(start_ns, step_s)
    out: dict[int, stats.Histogram] = defaultdict(stats.Histogram)
    for _, col, b, n in heatmap_store.histogram_cells(conn, ("trace",), None, None, first,
                                                      end_ns // 1_000_000_000 + 1, resolution, step_s, 1):
        out[col].add_bin(b + 1 if b else 0, n)  # row_bins=1: row r holds bin r + 1 (row 0 also bin 0)
    return out


def _red_summary(conn: Connection, start_ns: int, end_ns: int, step_s: int) -> dict[str, Any]:
    """Traces, errors and latency over the window, and per step (the charts' series)."""
    by_root = stats.query_stats(conn, start_ns=start_ns, end_ns=end_ns, step_s=step_s, scope="trace")
    columns = _latency_by_column(conn, start_ns, end_ns, step_s)
    whole = stats.Histogram()
    for h in columns.values():
        whole.merge(h)
    count = sum(op["count"] for op in by_root["operations"])
    errors = sum(op["error_count"] for op in by_root["operations"])
    points: dict[int, dict[str, Any]] = {}
    first = stats.bucket_of(start_ns, step_s)
    for bucket in range(first, end_ns // 1_000_000_000 + 1, step_s):
        points[bucket] = {"bucket": bucket, "count": 0, "error_count": 0, "p50_ms": None, "p95_ms": None,
                          "p99_ms": None}
    for series in by_root["series"]:
        for point in series["points"]:
            target = points.get(point["bucket"] - point["bucket"] % step_s)
            if target is not None:
                target["count"] += point["count"]
                target["error_count"] += point["error_count"]
    for bucket, h in columns.items():
        if bucket in points and h.count:
            for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
                points[bucket][name] = round(h.percentile(q) / 1e6, 3)
    window_s = max((end_ns - start_ns) / 1e9, 1.0)
    return {
        "traces": count, "errors": errors, "error_rate": round(errors / count, 6) if count else 0.0,
        "throughput_per_min": round(count / window_s * 60, 3),
        "p50_ms": round(whole.percentile(0.5) / 1e6, 3) if whole.count else None,
        "p95_ms": round(whole.percentile(0.95) / 1e6, 3) if whole.count else None,
        "p99_ms": round(whole.percentile(0.99) / 1e6, 3) if whole.count else None,
        "series": [points[b] for b in sorted(points)],
        "entry_points": by_root["operations"],
    }


def _examples(conn: Connection, start_ns: int, end_ns: int, op: dict[str, Any], **filters: Any) -> list[dict]:
    q = queries.TraceQuery(service=op["service"], operation=op["operation"], start_ns=start_ns, end_ns=end_ns,
                           limit=EXAMPLE_TRACES, **filters)
    return queries.search_traces(conn, q)["traces"]


def _operations(conn: Connection, start_ns: int, end_ns: int, step_s: int) -> tuple[list, list]:
    """The slowest operations (by p95) and the most failing (by error count), each with example traces."""
    ops = stats.query_stats(conn, start_ns=start_ns, end_ns=end_ns, step_s=step_s, scope="span")["operations"]
    slowest = [dict(o) for o in sorted(ops, key=lambda o: (-o["p95_ms"], o["service"], o["operation"]))[:TOP_OPERATIONS]]
    failing = [dict(o) for o in sorted((o for o in ops if o["error_count"]), key=lambda o: (
        -o["error_count"], -o["error_rate"], o["service"], o["operation"]))[:TOP_OPERATIONS]]  # copies: own examples
    for op in slowest:
        op["examples"] = _examples(conn, start_ns, end_ns, op, sort="duration_desc")
    for op in failing:
        op["examples"] = _examples(conn, start_ns, end_ns, op, status="error")
    return slowest, failing


def _ai_usage(conn: Connection, start_ns: int, end_ns: int, step_s: int, prices: PriceTable | None) -> dict[str, Any]:
    from . import llm_usage

    by_model = llm_usage.query_usage(conn, start_ns, end_ns, group_by="model", step_s=step_s, prices=prices)
    by_agent = llm_usage.query_usage(conn, start_ns, end_ns, group_by="agent", step_s=step_s, prices=prices)
    return {"totals": by_model["totals"], "models": by_model["groups"], "agents": by_agent["groups"],
            "series": by_model["series"], "unpriced_models": by_model["unpriced_models"],
            "price_source": by_model["price_source"]}


def gather_report(conn: Connection, start_ns: int, end_ns: int, prices: PriceTable | None = None) -> dict[str, Any]:
    """Everything the report shows for ``[start_ns, end_ns)``; ``prices`` is the configured price table."""
    from .bottlenecks import find_bottlenecks
    from .dependencies import query_dependencies

    window_s = max(60, int((end_ns - start_ns) / 1e9))
    step_s = max(60, heatmap.auto_step(window_s))
    slowest, failing = _operations(conn, start_ns, end_ns, step_s)
    recent_s = min(900, max(60, window_s // 4))
    try:
        hints = find_bottlenecks(conn, end_ns, recent_s=recent_s, baseline_s=max(60, window_s - recent_s))
    except ValueError:
        hints = []
    return {
        "start_ns": int(start_ns), "end_ns": int(end_ns), "start": _iso(start_ns), "end": _iso(end_ns),
        "generated": _iso(time.time_ns()), "step_s": step_s,
        "red": _red_summary(conn, start_ns, end_ns, step_s),
        "heatmap": heatmap.latency_heatmap(conn, scope="trace", start_ns=start_ns, end_ns=end_ns, step_s=step_s),
        "slowest": slowest, "failing": failing,
        "dependencies": query_dependencies(conn, start_ns, end_ns),
        "bottlenecks": hints, "bottleneck_windows": {"recent_s": recent_s, "baseline_s": max(60, window_s - recent_s)},
        "ai": _ai_usage(conn, start_ns, end_ns, step_s, prices),
    }


# --------------------------------------------------------------------------- the command


@click.command()
@click.option("--last", "last", default="24h", show_default=True, help="The period ending now: 1h, 24h, 7d.")
@click.option("-o", "--output", "output", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="The HTML file to write ('-' for standard output).")
@click.option("--link-base", default=None, metavar="URL",
              help="The dashboard's URL (http://host:8680): example trace ids become links to it.")
@click.option("--database-url", envvar="CONTRAIL_DATABASE_URL", default=None,
              help="SQLAlchemy URL of the trace database [CONTRAIL_DATABASE_URL, default under the data dir].")
def report(last, output, link_base, database_url):
    """Write one self-contained HTML report of the period: RED summary, slowest and failing operations,
    dependency map, bottleneck hints, AI usage and cost (opens without a network)."""
    from .settings import CollectorSettings
    from tracer.units import parse_duration

    from .output import console, fail, run_query
    from .pricing import PriceTableError, configure
    from .report_html import render_report

    try:
        seconds = parse_duration(last)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--last") from None
    if not 60 <= seconds <= 366 * 86400:
        raise click.BadParameter("must be between 1m and 366d", param_hint="--last")
    end_ns = time.time_ns()
    start_ns = end_ns - int(seconds * 1e9)
    try:
        settings = CollectorSettings.load(database_url=database_url)
        prices = configure(settings.price_table)
    except (ValueError, PriceTableError) as exc:
        raise fail(f"bad configuration: {exc}") from None
    data = run_query(settings.resolved_database_url, lambda conn: gather_report(conn, start_ns, end_ns, prices))
    page = render_report(data, link_base=link_base)
    if output == "-":
        click.echo(page, nl=False)
        return
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(page)
    console(err=True).print(f"wrote {output} ({len(page.encode()) // 1024} KiB): {data['red']['traces']} traces "
                            f"from {data['start']} to {data['end']}")
