"""``contrail traces list|show``, ``contrail services``, ``contrail stats``, ``contrail deps``.

Read-only views of the trace database for a terminal or a script. They call
the same queries as the JSON API (``storage/queries.py``, ``stats.py``,
``dependencies.py``), so ``--json`` prints the API's shapes.
"""

from __future__ import annotations

import re
import time
from typing import Any

import click

from tracer.codec import KINDS

from .output import (
    console,
    database_option,
    duration_ms_option,
    duration_seconds,
    emit_json,
    fail,
    ms,
    red,
    run_query,
    table,
    timestamp_option,
)

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
TAG = re.compile(r"^([^=<>]+)([=<>])(.*)$", re.DOTALL)
SORTS = ("start_desc", "start_asc", "duration_desc", "duration_asc")
SHOW_FORMATS = ("tree", "text", "json", "mermaid", "otlp")
MAX_STATS_POINTS = 10_000  # as GET /api/v1/stats


def _lookback_range(lookback_s: float | None, start_ns: int | None, end_ns: int | None,
                    default_s: float | None) -> tuple[int | None, int | None]:
    if lookback_s is not None and start_ns is not None:
        raise click.UsageError("give either --start or --lookback, not both")
    if lookback_s is None and start_ns is None and end_ns is None and default_s is not None:
        lookback_s = default_s
    if lookback_s is not None:
        if lookback_s <= 0:
            raise click.BadParameter("must be positive", param_hint="--lookback")
        end = end_ns if end_ns is not None else time.time_ns()
        return max(0, end - int(lookback_s * 1e9)), end_ns if end_ns is not None else end
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        raise click.BadParameter("must not be before --start", param_hint="--end")
    return start_ns, end_ns


def _parse_tags(values: tuple[str, ...]) -> list[tuple[str, str, str]]:
    tags = []
    for raw in values:
        match = TAG.match(raw)
        if not match or not match.group(1).strip():
            raise click.BadParameter(f"{raw!r}: use key=value, key>number or key<number", param_hint="--tag")
        key, op, value = match.group(1).strip(), match.group(2), match.group(3)
        if op in "<>":
            try:
                float(value)
            except ValueError:
                raise click.BadParameter(f"{raw!r}: a comparison needs a number", param_hint="--tag") from None
        tags.append((key, op, value))
    return tags


def _short_time(iso: str | None) -> str:
    return (iso or "").replace("T", " ").rstrip("Z")[:23]


# --------------------------------------------------------------------------- traces


@click.group()
def traces():
    """List and show stored traces."""


@traces.command("list")
@click.option("--service", help="Only traces with a span of this service.")
@click.option("--operation", help="Only traces with this operation (with --service: of that service).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Attribute filter: key=value, key>number or key<number (repeatable).")
@click.option("--status", type=click.Choice(["ok", "error"]), help="Only traces with (error) or without (ok) errors.")
@click.option("--kind", type=click.Choice(KINDS), help="Only traces holding a span of this kind.")
@click.option("--min-duration", callback=duration_ms_option, help="At least this long: 250ms, 1.5s (bare = ms).")
@click.option("--max-duration", callback=duration_ms_option, help="At most this long.")
@click.option("--lookback", callback=duration_seconds, help="Traces that started within this much time: 15m, 1h, 7d.")
@click.option("--start", callback=timestamp_option, help="Earliest start: ISO-8601 or unix nanoseconds.")
@click.option("--end", callback=timestamp_option, help="Latest start: ISO-8601 or unix nanoseconds.")
@click.option("--sort", type=click.Choice(SORTS), default="start_desc", show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor", help="next_cursor of a previous page.")
@database_option
def list_traces(service, operation, tags, status, kind, min_duration, max_duration, lookback, start, end, sort, limit,
                cursor, database_url, as_json):
    """Search traces, newest first."""
    from .storage.queries import TraceQuery, search_traces

    if min_duration is not None and max_duration is not None and max_duration < min_duration:
        raise click.BadParameter("must not be below --min-duration", param_hint="--max-duration")
    start_ns, end_ns = _lookback_range(lookback, start, end, None)
    query = TraceQuery(service=service, operation=operation, tags=_parse_tags(tags), status=status, kind=kind,
                       min_duration_ns=min_duration, max_duration_ns=max_duration, start_ns=start_ns,
                       end_ns=end_ns, sort=sort, limit=limit, cursor=cursor)
    result = run_query(database_url, lambda conn: search_traces(conn, query))
    if as_json:
        emit_json(result)
        return
    if not result["traces"]:
        console().print("no traces match" + ("" if not result["total"] else f" on this page (of {result['total']})"))
        return
    rows = []
    for t in result["traces"]:
        errors = t.get("error_count") or 0
        rows.append((t["trace_id"], _short_time(t.get("start_time")),
                     f"{t.get('root_service')}: {t.get('root_operation')}", ms(t.get("duration_ms")),
                     t.get("span_count"), ", ".join(t.get("services") or []),
                     red(errors) if errors else "0"))
    table(None, ["TRACE ID", "START (UTC)", "ROOT", "DURATION", "SPANS", "SERVICES", "ERRORS"], rows,
          right=["DURATION", "SPANS", "ERRORS"])
    shown, total = len(result["traces"]), result["total"]
    more = f"; next page: --cursor {result['next_cursor']}" if result.get("next_cursor") else ""
    console().print(f"{shown} of {total}{'+' if result.get('total_capped') else ''} traces{more}")


@traces.command("show")
@click.argument("trace_id")
@click.option("--format", "fmt", type=click.Choice(SHOW_FORMATS), default="tree", show_default=True,
              help="tree: the call tree in the terminal; text: compact text for an LLM; json, mermaid, otlp.")
@click.option("--budget", type=click.IntRange(min=1), help="With --format text: size budget in characters.")
@click.option("--diagram", type=click.Choice(("sequence", "flowchart")),
              help="With --format mermaid: sequence (calls between services, the default) or flowchart (span tree).")
@click.option("--max-spans", type=click.IntRange(min=1), default=2000, show_default=True,
              help="With --format tree: spans drawn before the rest are summarised.")
@database_option
def show_trace(trace_id, fmt, budget, diagram, max_spans, database_url, as_json):
    """Show one trace: its call tree with durations, self time, critical path and errors."""
    from .storage.queries import get_trace

    if budget is not None and (fmt != "text" or as_json):
        raise click.BadParameter("only applies to --format text", param_hint="--budget")
    if diagram is not None and (fmt != "mermaid" or as_json):
        raise click.BadParameter("only applies to --format mermaid", param_hint="--diagram")
    trace_id = trace_id.strip().lower()
    if not TRACE_ID.match(trace_id):
        raise click.BadParameter(f"{trace_id!r} is not a trace id (32 hex characters)", param_hint="TRACE_ID")
    trace = run_query(database_url, lambda conn: get_trace(conn, trace_id))
    if trace is None:
        raise fail(f"trace {trace_id} not found in {_where(database_url)}")
    if as_json:
        fmt = "json"
    if fmt == "tree":
        print_trace_tree(trace, max_spans=max_spans)
        return
    from .exporters import export_trace

    _mimetype, body = export_trace(trace, fmt, budget=budget, diagram=diagram or "sequence")
    click.echo(body.rstrip("\n"))


def _where(url: str) -> str:
    from tracer.settings_base import mask_url

    return mask_url(url) or url


def _error_text(span: dict[str, Any]) -> str:
    message = span.get("status_message") or ""
    for event in span.get("events") or []:
        if event.get("name") == "exception":
            attrs = event.get("attributes") or {}
            kind, text = attrs.get("exception.type"), attrs.get("exception.message")
            if kind or text:
                return f"{kind or 'Exception'}: {text or message}".strip()
    return message or "error"


def print_trace_tree(trace: dict[str, Any], max_spans: int = 2000) -> None:
    """The call tree as a rich Tree: ◆ marks the critical path, errors in red, then the error list."""
    from rich.markup import escape
    from rich.tree import Tree

    summary, spans = trace["summary"], trace["spans"]
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str | None, list[dict]] = {}
    for span in spans:
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in by_id else None, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: (s.get("start_ns") or 0, s["span_id"]))

    root_ns = min((s.get("start_ns") or 0 for s in spans), default=0)
    services = ", ".join(summary.get("services") or [])
    header = (f"[bold]trace {trace['trace_id']}[/bold]  {ms(summary.get('duration_ms'))}  "
              f"{summary.get('span_count', len(spans))} spans  services: {escape(services)}")
    if summary.get("error_count"):
        header += f"  [red]{summary['error_count']} error(s)[/red]"
    if summary.get("incomplete"):
        header += "  [yellow]incomplete[/yellow]"
    tree = Tree(header)

    def label(span: dict[str, Any]) -> str:
        offset = ((span.get("start_ns") or root_ns) - root_ns) / 1e6
        critical = span.get("critical_path")
        name = escape(str(span.get("name")))
        if span.get("status") == "error":
            name = f"[bold red]{name}[/bold red]"
        elif critical:
            name = f"[bold]{name}[/bold]"
        parts = [("[magenta]◆[/magenta] " if critical else "  ") + name,
                 f"[cyan]{escape(str(span.get('service')))}[/cyan]",
                 f"{ms(span.get('duration_ms'))}",
                 f"[dim]self {ms(span.get('self_time_ms'))}  +{ms(offset)}[/dim]"]
        if span.get("kind") and span["kind"] != "internal":
            parts.append(f"[dim]{span['kind']}[/dim]")
        if span.get("status") == "error":
            parts.append(f"[red]✗ {escape(_error_text(span))}[/red]")
        return "  ".join(parts)

    drawn = 0
    stack = [(tree, span) for span in reversed(children.get(None, []))]
    while stack:
        node, span = stack.pop()
        if drawn >= max_spans:
            break
        branch = node.add(label(span))
        drawn += 1
        stack.extend((branch, child) for child in reversed(children.get(span["span_id"], [])))
    out = console()
    out.print(tree)
    if drawn < len(spans):
        out.print(f"[yellow]… {len(spans) - drawn} more spans not drawn (raise --max-spans, "
                  f"or use --format text for a folded summary)[/yellow]")
    out.print("[magenta]◆[/magenta] critical path")
    for warning in trace.get("warnings") or []:
        out.print(f"[yellow]warning: {escape(str(warning.get('message')))}[/yellow]")
    errors = [s for s in spans if s.get("status") == "error"]
    if errors:
        out.print(f"[bold red]Errors ({len(errors)}):[/bold red]")
        for span in errors:
            out.print(f"  [red]✗[/red] {escape(str(span.get('service')))} / {escape(str(span.get('name')))} "
                      f"[dim]{span['span_id']}[/dim]: {escape(_error_text(span))}")


# --------------------------------------------------------------------------- services, stats, deps


@click.command()
@click.option("--service", help="Show this service's operations.")
@database_option
def services(service, database_url, as_json):
    """List services and their operations."""
    from .storage.queries import list_operations, list_services

    if service:
        operations = run_query(database_url, lambda conn: list_operations(conn, service))
        if not operations:
            raise fail(f"no service named {service!r} in {_where(database_url)}")
        if as_json:
            emit_json({"service": service, "operations": operations})
            return
        table(f"operations of {service}", ["OPERATION", "TRACES", "WITH ERRORS"],
              [(o["name"], o["count"], o["error_count"]) for o in operations], right=["TRACES", "WITH ERRORS"])
        return
    found = run_query(database_url, list_services)
    if as_json:
        emit_json({"services": found})
        return
    table(None, ["SERVICE", "OPERATIONS", "TRACES"],
          [(s["name"], s["operation_count"], s["trace_count"]) for s in found], right=["OPERATIONS", "TRACES"])


@click.command()
@click.option("--service", help="Only this service.")
@click.option("--operation", help="Only this operation.")
@click.option("--lookback", callback=duration_seconds, default="1h", show_default=True,
              help="Window ending now: 15m, 1h, 7d.")
@click.option("--step", callback=duration_seconds, default="1m", show_default=True,
              help="Time-series step in --json output, whole minutes: 1m, 5m, 1h.")
@database_option
def stats(service, operation, lookback, step, database_url, as_json):
    """Latency (p50/p95/p99), throughput and error rate per operation."""
    from .stats import query_stats

    if step < 60 or step % 60:
        raise click.BadParameter("must be a whole number of minutes: 1m, 5m, 1h", param_hint="--step")
    if lookback / step > MAX_STATS_POINTS:
        raise click.BadParameter(f"too small for --lookback {lookback:g}s (at most {MAX_STATS_POINTS} points)",
                                 param_hint="--step")
    start_ns, end_ns = _lookback_range(lookback, None, None, None)
    result = run_query(database_url, lambda conn: query_stats(
        conn, service=service, operation=operation, start_ns=start_ns, end_ns=end_ns, step_s=int(step)))
    if as_json:
        emit_json(result)
        return
    rows = []
    for op in result["operations"]:
        rate = op.get("error_rate") or 0
        errors = f"{rate * 100:.1f}%"
        rows.append((op["service"], op["operation"], op["count"], red(errors) if rate else errors,
                     ms(op.get("p50_ms")), ms(op.get("p95_ms")), ms(op.get("p99_ms")), ms(op.get("max_ms")),
                     f"{op.get('throughput_per_s', 0):.2f}"))
    table(None, ["SERVICE", "OPERATION", "COUNT", "ERRORS", "P50", "P95", "P99", "MAX", "PER S"], rows,
          right=["COUNT", "ERRORS", "P50", "P95", "P99", "MAX", "PER S"])


@click.command()
@click.option("--lookback", callback=duration_seconds, default="1h", show_default=True,
              help="Window ending now: 15m, 1h, 7d.")
@database_option
def deps(lookback, database_url, as_json):
    """Service dependency edges: who calls whom, how often, how slowly, how often failing."""
    from .dependencies import query_dependencies

    start_ns, end_ns = _lookback_range(lookback, None, None, None)
    edges = run_query(database_url, lambda conn: query_dependencies(conn, start_ns, end_ns))
    if as_json:
        emit_json({"dependencies": edges, "start_ns": start_ns, "end_ns": end_ns})
        return
    table(None, ["CALLER", "", "CALLEE", "KIND", "CALLS", "ERRORS", "AVG"],
          [(e["caller"], "→", e["callee"], e["kind"], e["calls"],
            red(e["errors"]) if e["errors"] else "0", ms(e["avg_ms"])) for e in edges],
          right=["CALLS", "ERRORS", "AVG"])
