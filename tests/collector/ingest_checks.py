"""What a test of hostile stream entries looks at: dead letters, stored span ids, a collector's counters and memory."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from tests.support.stored import span_rows
from tracer.codec import decode_entry

DEAD = "contrail:spans:dead"


def dead_letters(client) -> dict[str, dict[bytes, bytes]]:
    """Dead letters by the id of the entry they came from."""
    return {letter[b"source_id"].decode(): letter for _, letter in client.xrange(DEAD)}


def dead_lettered_rows(letter: dict[bytes, bytes]) -> list:
    """The rows a spans dead letter holds (re-encoded as an entry), as the codec reads them back."""
    held = decode_entry({k[len(b"orig_"):]: v for k, v in letter.items() if k.startswith(b"orig_")})
    return held.rejected_rows + [[s["trace_id"], s["span_id"]] for s in held.spans]


def stored_span_ids(engine) -> set[str]:
    return {span["span_id"] for span in span_rows(engine)}


def collector_counters(client) -> dict[str, int]:
    """The counters the collectors last reported (CONTRAIL_REPORT_INTERVAL), summed over collectors."""
    totals: dict[str, int] = {}
    for report in client.hvals("contrail:spans:collectors"):
        for name, value in json.loads(report).items():
            if isinstance(value, int) and name not in ("pid", "time_ns"):
                totals[name] = totals.get(name, 0) + value
    return totals


def peak_rss_bytes(pid: int) -> int:
    """The highest resident set size a process has had (Linux VmHWM), or its present one elsewhere."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss
