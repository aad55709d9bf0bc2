"""The demo's load generator: one question to the gateway every 1-2 seconds, until stopped.

    python -m contrail_demo.loadgen --api-url http://127.0.0.1:8000

Questions come from a fixed list picked by a seeded random source, so they
repeat (the stand-in model's prompt cache hits) and a run is reproducible.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time

import requests

from . import gateway_url, seed

QUESTIONS = (
    "How do Celery retries keep a task in the same trace?",
    "Why does queue wait matter for latency?",
    "What is the critical path of a trace?",
    "How should we pick a trace retention period?",
    "Does prompt caching lower LLM cost?",
    "How do Redis streams share work between collectors?",
    "What happens when hosts have clock skew?",
    "When should we use tail sampling instead of head sampling?",
    "How does backpressure protect the application thread?",
    "Why must span writes be idempotent?",
    "What did the incident memo say about vector-db timeouts?",
    "How do rate limits interact with retries and jitter in clients?",
)
USERS = ("u-ada", "u-grace", "u-linus", "u-barbara", "u-ken")


def make_request(rng: random.Random, number: int) -> dict:
    user = rng.choice(USERS)
    return {"question": rng.choice(QUESTIONS), "user_id": user, "session_id": f"s-{user[2:]}-{number // 10}"}


def ask(session: requests.Session, api_url: str, body: dict, timeout: float = 30.0) -> dict:
    """One question; returns the gateway's JSON plus ``status`` and ``seconds``."""
    started = time.monotonic()
    response = session.post(f"{api_url.rstrip('/')}/ask", json=body, timeout=timeout)
    try:
        data = response.json()
    except ValueError:
        data = {}
    data["status"] = response.status_code
    data["seconds"] = time.monotonic() - started
    return data


def wait_for_gateway(session: requests.Session, api_url: str, stop: threading.Event, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if session.get(f"{api_url.rstrip('/')}/healthz", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        stop.wait(0.5)
    return False


def run(api_url: str, min_interval: float, max_interval: float, stop: threading.Event, wait: bool) -> int:
    rng = random.Random(seed())
    session = requests.Session()
    if wait and not wait_for_gateway(session, api_url, stop):
        print(f"gateway at {api_url} did not come up", file=sys.stderr)
        return 0 if stop.is_set() else 1
    print(f"sending a question to {api_url} every {min_interval:g}-{max_interval:g}s", flush=True)
    number = 0
    while not stop.is_set():
        number += 1
        body = make_request(rng, number)
        try:
            result = ask(session, api_url, body)
            print(f"#{number} {result['status']} {result['seconds'] * 1000:.0f}ms trace {result.get('trace_id')} "
                  f"{'problems: ' + '; '.join(result.get('problems') or []) if result.get('problems') else ''}",
                  flush=True)
        except requests.RequestException as exc:
            print(f"#{number} gateway unreachable: {type(exc).__name__}", flush=True)
        stop.wait(rng.uniform(min_interval, max_interval))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default=gateway_url(), help="demo gateway base URL [DEMO_GATEWAY_URL]")
    parser.add_argument("--min-interval", type=float, default=1.0)
    parser.add_argument("--max-interval", type=float, default=2.0)
    parser.add_argument("--wait", action="store_true", help="wait for the gateway's /healthz before starting")
    args = parser.parse_args(argv)
    if not 0 < args.min_interval <= args.max_interval:
        parser.error("need 0 < --min-interval <= --max-interval")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return run(args.api_url, args.min_interval, args.max_interval, stop, args.wait)


if __name__ == "__main__":
    sys.exit(main())
