"""Spans of the demo system, as its tracers export them, for the storage benchmark's ``--demo`` run.

Runs the demo's real processes (contrail_demo: the gateway and retrieval services
under gunicorn, the Celery retrieval worker) with their TracingManagers
exporting to a private Redis, asks the gateway ``questions`` questions (the
load generator's questions and users), stops the services so their tracers
flush, and reads the span stream back with the collector's decoder. Those are
the spans a collector would store: AI agent runs with gen_ai attributes,
checkpoints and events, Celery tool calls with retries, HTTP client and server
spans, prompts and completions when ``record_content`` is on.

To reach a realistic store size without hours of demo traffic, the captured
traces can be replayed (:func:`replay`): each copy keeps every span's
content and shape and gets new trace and span ids, new values for the
per-message UUIDs (Celery task and message ids) and a shifted clock, so no
copy compresses better than a new question would.
"""

from __future__ import annotations

import os
import random
import re
import uuid
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def capture(questions: int, record_content: bool) -> list[dict]:
    """Decoded spans of ``questions`` demo questions, in stream order."""
    import requests

    from tests.support.servers import RedisServer, free_port, wait_until
    from tracer.codec import decode_entry
    from tracer.redis_client import connect
    from contrail_cli.up import demo_specs
    from contrail_demo.loadgen import ask, make_request

    server = RedisServer.launch()
    children: list[subprocess.Popen] = []
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTRAIL_", "DEMO_"))}
        env.update({"CONTRAIL_RECORD_CONTENT": "1" if record_content else "0", "PYTHONPATH": str(ROOT)})
        gateway_port = free_port()
        broker = server.url.rsplit("/", 1)[0] + "/1"
        for spec in demo_specs(env, server.url, broker, gateway_port=gateway_port):
            if spec.name != "demo-loadgen":
                children.append(subprocess.Popen(spec.argv, env=spec.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL, start_new_session=True))
        base = f"http://127.0.0.1:{gateway_port}"

        def healthy() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=120)
        rng = random.Random(42)
        bodies = [make_request(rng, n) for n in range(questions)]
        with ThreadPoolExecutor(4) as pool, requests.Session() as session:
            answers = list(pool.map(lambda body: ask(session, base, body), bodies))
        failed = sum(1 for a in answers if a["status"] != 200)
        if failed > questions // 10:
            raise RuntimeError(f"{failed} of {questions} demo questions failed")
    finally:
        for child in children:  # SIGTERM: gunicorn and Celery shut down cleanly, their tracers flush
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    try:
        client = connect(server.url)
        spans: list[dict] = []
        for _, fields in client.xrange("contrail:spans"):
            spans.extend(decode_entry(fields).spans)
        client.close()
    finally:
        server.destroy()
    return spans


def replay(spans: list[dict], copies: int, spacing_ns: int = 2_000_000_000) -> list[dict]:
    """``copies`` copies of the captured traces, each with new trace and span ids, ``spacing_ns`` apart."""
    out = list(spans)
    for copy in range(1, copies):
        shift = copy * spacing_ns
        ids: dict[str, str] = {}

        def new(old: str | None, size: int) -> str | None:
            if not old:
                return old
            found = ids.get(old)
            if found is None:
                found = ids[old] = os.urandom(size).hex()
            return found

        def fresh(attributes: dict) -> dict:
            return {k: UUID.sub(lambda m: ids.setdefault(m[0], str(uuid.uuid4())), v) if isinstance(v, str) else v
                    for k, v in attributes.items()}

        for span in spans:
            clone = dict(span)
            clone["attributes"] = fresh(span.get("attributes") or {})
            clone["trace_id"] = new(span["trace_id"], 16)
            clone["span_id"] = new(span["span_id"], 8)
            clone["parent_span_id"] = new(span.get("parent_span_id"), 8)
            for key in ("start_ns", "end_ns", "received_ns"):
                if clone.get(key):
                    clone[key] += shift
            clone["events"] = [{**e, "time_ns": (e.get("time_ns") or 0) + shift,
                                "attributes": fresh(e.get("attributes") or {})} for e in span.get("events") or []]
            out.append(clone)
    return out

