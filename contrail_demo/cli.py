"""``contrail demo``: send questions to a running demo gateway and summarise what happened."""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import click

from . import seed
from .gateway_url import remembered_gateway_url


def default_api_url() -> str:
    """DEMO_GATEWAY_URL, else the gateway `contrail up --demo` runs for this data dir, else port 8000."""
    if os.environ.get("DEMO_GATEWAY_URL"):
        return os.environ["DEMO_GATEWAY_URL"]
    try:
        from tracer.settings import TracerSettings

        remembered = remembered_gateway_url(TracerSettings.load().data_dir)
    except (ValueError, OSError):  # settings that do not load: no data directory to look in
        remembered = None
    return remembered or "http://127.0.0.1:8000"


@click.command()
@click.option("--api-url", default=None, help="Demo gateway URL [DEMO_GATEWAY_URL, or the one `contrail up --demo` "
                                              "runs, else http://127.0.0.1:8000].")
@click.option("--requests", "count", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def demo(api_url, count, concurrency, as_json):
    """Send demo traffic (questions to the AI-agent gateway) to a running stack."""
    import requests
    from rich.progress import Progress

    from collector_worker.output import console, emit_json, ms, table

    from .loadgen import ask, make_request

    api_url = (api_url or default_api_url()).rstrip("/")
    session = requests.Session()
    try:
        session.get(f"{api_url}/healthz", timeout=3).raise_for_status()
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach the demo gateway at {api_url} ({type(exc).__name__}): "
                                   "start it with 'contrail up --demo' or pass --api-url") from None
    rng = random.Random(seed())
    bodies = [make_request(rng, n) for n in range(count)]
    results: list[dict] = []
    started = time.monotonic()
    with Progress(console=console(err=True), transient=True, disable=as_json) as progress:
        task = progress.add_task("asking", total=count)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(ask, session, api_url, body) for body in bodies]
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except requests.RequestException as exc:
                    results.append({"status": None, "error": type(exc).__name__, "seconds": None})
                progress.advance(task)
    elapsed = time.monotonic() - started
    ok = [r for r in results if r.get("status") == 200]
    latencies = sorted(r["seconds"] * 1000 for r in ok)
    summary = {
        "api_url": api_url, "requests": count, "ok": len(ok), "failed": count - len(ok),
        "with_problems": sum(1 for r in ok if r.get("problems")),
        "cache_hits": sum(1 for r in ok if (r.get("usage") or {}).get("cached_tokens")),
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
        "seconds": round(elapsed, 3),
        "trace_ids": [r["trace_id"] for r in ok if r.get("trace_id")],
    }
    if as_json:
        emit_json(summary)
    else:
        table(f"demo traffic to {api_url}", ["REQUESTS", "OK", "FAILED", "WITH PROBLEMS", "CACHE HITS", "P50", "MAX"],
              [(count, summary["ok"], summary["failed"], summary["with_problems"], summary["cache_hits"],
                ms(summary["p50_ms"]), ms(summary["max_ms"]))],
              right=["REQUESTS", "OK", "FAILED", "WITH PROBLEMS", "CACHE HITS", "P50", "MAX"])
        if summary["trace_ids"]:
            console().print(f"look at one: contrail traces show {summary['trace_ids'][0]}")
    if not ok:
        raise click.ClickException(f"none of the {count} requests succeeded")
