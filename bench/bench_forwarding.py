"""Forwarding benchmark: what ``forward_mode=kept`` costs the finalizer, and the encoding's cost per span.

Run ``python bench/bench_forwarding.py [--spans 100000] [--runs 3]``. Each run builds a fresh SQLite
database, stores the spans of ``bench_collector.make_entries`` (traces of 10 spans; untimed), then times
``finalize_ready`` until nothing is pending, alternately with forwarding off and with a kept-mode
forwarder posting to an OTLP/HTTP endpoint in another process (answering 200 to every request). For the
kept runs it also times until every span was accepted by the endpoint, and this process's CPU time per
span (finalizer and forwarder thread). Then, in the same process, the forwarder's work per span alone:
reading the spans out of trace blocks, and encoding them as OTLP protobuf (what is sent) and as OTLP/JSON
(for comparison).

Writes ``bench/results/forwarding.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_collector import finalize_all, make_entries, store_all  # noqa: E402
from collector_worker import forwarding  # noqa: E402
from collector_worker.exporters import otlp_json, otlp_proto  # noqa: E402
from collector_worker.storage import blocks, open_engine, schema  # noqa: E402
from tracer.codec import decode_entry  # noqa: E402
from collector_worker.settings import CollectorSettings  # noqa: E402

ENDPOINT_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def one_run(spans: list[dict], endpoint: str | None, workdir: str, label: str) -> dict:
    engine = open_engine(f"sqlite:///{os.path.join(workdir, label + '.db')}")
    forwarder = None
    now = time.time_ns()
    try:
        store_all(engine, spans, now)
        if endpoint:
            forwarder = forwarding.start(CollectorSettings(forward_endpoint=endpoint, forward_mode="kept"), engine)
        sent_before = forwarding.counters()["forwarded_spans"]
        cpu, start = time.process_time(), time.perf_counter()
        traces = finalize_all(engine, now)
        finalized = time.perf_counter() - start
        result = {"traces": traces, "finalize_seconds": round(finalized, 3),
                  "finalize_spans_per_second": round(len(spans) / finalized)}
        if forwarder is not None:
            while forwarding.counters()["forwarded_spans"] - sent_before < len(spans):
                if time.perf_counter() - start > 600:
                    raise RuntimeError(f"only {forwarding.counters()['forwarded_spans'] - sent_before} spans "
                                       f"forwarded: {forwarding.counters()}")
                time.sleep(0.01)
            done = time.perf_counter() - start
            result.update(forwarded_seconds=round(done, 3), forwarded_spans_per_second=round(len(spans) / done))
        result["cpu_us_per_span"] = round(1e6 * (time.process_time() - cpu) / len(spans), 2)
        return result
    finally:
        forwarding.stop(engine, forwarder)
        engine.dispose()


def encoding_costs(workdir: str) -> dict:
    """Per span: reading a kept trace's spans out of its block, encoding them as protobuf and as JSON."""
    engine = open_engine(f"sqlite:///{os.path.join(workdir, 'off-0.db')}")
    try:
        with engine.connect() as conn:
            data = list(conn.execute(select(schema.trace_blocks.c.data).limit(2000)).scalars())
    finally:
        engine.dispose()
    out: list[dict] = []
    cpu = time.process_time()
    for block in data:
        out.extend(blocks.decode(block))
    read = time.process_time() - cpu
    batches = [out[i:i + forwarding.BATCH_SIZE] for i in range(0, len(out), forwarding.BATCH_SIZE)]
    cpu = time.process_time()
    proto = sum(len(otlp_proto.render(batch)) for batch in batches)
    proto_s = time.process_time() - cpu
    cpu = time.process_time()
    as_json = sum(len(otlp_json.render({"trace_id": None, "spans": [{**s, "status": s["status_code"]} for s in batch]})
                      .encode()) for batch in batches)
    json_s = time.process_time() - cpu
    n = len(out)
    return {"spans": n, "block_read_us_per_span": round(1e6 * read / n, 2),
            "protobuf_us_per_span": round(1e6 * proto_s / n, 2), "protobuf_bytes_per_span": round(proto / n),
            "json_us_per_span": round(1e6 * json_s / n, 2), "json_bytes_per_span": round(as_json / n)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "forwarding.json"))
    args = parser.parse_args(argv)

    spans = [span for entry in make_entries(args.spans) for span in decode_entry(entry).spans]
    server = subprocess.Popen([sys.executable, "-c", ENDPOINT_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        endpoint = f"http://127.0.0.1:{int(server.stdout.readline())}/v1/traces"
        runs: dict[str, list[dict]] = {"off": [], "kept": []}
        with tempfile.TemporaryDirectory() as workdir:
            for i in range(args.runs):  # alternately, so load changes hit both alike
                runs["off"].append(one_run(spans, None, workdir, f"off-{i}"))
                runs["kept"].append(one_run(spans, endpoint, workdir, f"kept-{i}"))
                print(f"run {i + 1}: off {runs['off'][-1]}  kept {runs['kept'][-1]}", flush=True)
            encoding = encoding_costs(workdir)
    finally:
        server.terminate()
        server.wait(10)
    off = statistics.median(r["finalize_spans_per_second"] for r in runs["off"])
    kept = statistics.median(r["finalize_spans_per_second"] for r in runs["kept"])
    result = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        "spans": len(spans), "runs": runs,
        "median_finalize_spans_per_second": {"off": off, "kept": kept},
        "kept_to_off_ratio": round(kept / off, 3),
        "median_forwarded_spans_per_second": statistics.median(r["forwarded_spans_per_second"]
                                                               for r in runs["kept"]),
        "encoding": encoding,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
