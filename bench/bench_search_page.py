"""The search page in headless Chromium on a store of one million spans: how long until it has drawn.

Serves the web app on a database seeded by ``bench_api.py --reuse PATH`` and
opens ``/?lookback=1h`` (the page's default) and ``/?lookback=24h`` in headless
Chromium, timing from navigation start until the results table and scatter
plot are drawn, and until the latency heat map is drawn too. Reports medians;
nothing is gated on time here (budgets are the API's, see bench_api.py).

Usage: python bench/bench_search_page.py --database /tmp/bench.db [--rounds 5] [--out bench/results/search_page.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"


def serve(database_url: str):
    from werkzeug.serving import make_server

    from tests.support.servers import RedisServer, free_port
    from web import create_app

    redis_server = RedisServer.launch()
    app = create_app({"DATABASE_URL": database_url, "REDIS_URL": redis_server.url})
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}", server, redis_server, app


def measure(page, url: str, heatmap: bool) -> dict:
    page.goto(url)
    page.wait_for_function("window.__contrail && window.__contrail.searchResults !== undefined", timeout=60000)
    results_ms = page.evaluate("performance.now()")
    if not heatmap:
        return {"results_ms": results_ms}
    page.wait_for_function("window.__contrail.heatmapCells !== undefined", timeout=60000)
    return {"results_ms": results_ms, "heatmap_ms": page.evaluate("performance.now()")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="SQLite file seeded by bench_api.py --reuse")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_page.json"))
    parser.add_argument("--no-heatmap", action="store_true",
                        help="time the results only (for a version of the page without the heat map)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    base, server, redis_server, app = serve(f"sqlite:///{args.database}")
    results = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            # bypass_csp: wait_for_function evaluates its string with eval, which the page's policy forbids
            page = browser.new_page(viewport={"width": 1440, "height": 900}, bypass_csp=True)
            heatmap = not args.no_heatmap
            measure(page, base + "/?lookback=1h", heatmap)  # warm the engine and the browser cache
            for lookback in ("1h", "24h"):
                rounds = [measure(page, f"{base}/?lookback={lookback}", heatmap) for _ in range(args.rounds)]
                results[lookback] = {"rounds": args.rounds,
                                     "results_drawn_median_ms": round(statistics.median(r["results_ms"] for r in rounds), 1)}
                if heatmap:
                    results[lookback]["heatmap_drawn_median_ms"] = round(
                        statistics.median(r["heatmap_ms"] for r in rounds), 1)
            browser.close()
    finally:
        server.shutdown()
        app.extensions["contrail.resources"].close()
        redis_server.destroy()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
