"""``contrail profile report``: the stored profiles of an operation merged into a top-functions table and its
hottest stacks (or, with ``--folded``, folded stacks for flamegraph.pl, speedscope or inferno)."""

from __future__ import annotations

import time

import click

from .output import database_option, duration_seconds, emit_json, fail, run_query, table

STACKS_SHOWN = 10


@click.group()
def profile():
    """Sampling profiles of spans (tracing.profile and the slow-span mode)."""


@profile.command()
@click.option("--last", "lookback", callback=duration_seconds, default="1h", show_default=True,
              help="Window ending now: 15m, 1h, 7d.")
@click.option("--operation", help="Only profiles of spans of this operation.")
@click.option("--service", help="Only this service.")
@click.option("--limit", type=click.IntRange(1, 5000), default=1000, show_default=True,
              help="The latest this many profiles count.")
@click.option("--top", type=click.IntRange(1, 500), default=20, show_default=True, help="Functions listed.")
@click.option("--folded", is_flag=True, help="Print the merged folded stacks ('stack samples' per line) only.")
@database_option
def report(lookback, operation, service, limit, top, folded, database_url, as_json):
    """Merge the profiles of an operation into one flame graph: top functions by self and total samples."""
    from .profile_store import aggregate

    end_ns = time.time_ns()
    start_ns = end_ns - int(lookback * 1e9)
    merged = run_query(database_url, lambda conn: aggregate(conn, start_ns, end_ns, operation, service, limit))
    if as_json:
        emit_json({"operation": operation, "service": service, "start_ns": start_ns, "end_ns": end_ns, **merged})
        return
    if not merged["profiles"]:
        what = " ".join(filter(None, [f"operation {operation!r}" if operation else None,
                                      f"service {service!r}" if service else None])) or "any span"
        raise fail(f"no profiles of {what} in the last {lookback:g}s")
    if folded:
        for stack in merged["stacks"]:
            click.echo(f"{stack['stack']} {stack['samples']}")
        return
    click.echo(f"{merged['profiles']} profiles, {merged['samples']} samples"
               + (f" ({merged['dropped']} left out by the profile size bound)" if merged["dropped"] else ""))
    table("top functions", ["FUNCTION", "SELF", "SELF %", "TOTAL", "TOTAL %"],
          [(f["function"], f["self_samples"], f"{f['self_pct']:.1f}", f["total_samples"], f"{f['total_pct']:.1f}")
           for f in merged["functions"][:top]], right=["SELF", "SELF %", "TOTAL", "TOTAL %"])
    table("hottest stacks (leaf last)", ["SAMPLES", "STACK"],
          [(s["samples"], " → ".join(part.split(" (")[0] for part in s["stack"].split(";")))
           for s in merged["stacks"][:STACKS_SHOWN]], right=["SAMPLES"])
