"""Tail sampling: decide at finalization which whole traces are worth keeping.

Every trace with an error and every trace at least ``tail_slow_threshold``
long is kept; of the rest, a share ``tail_keep_ratio`` chosen by a hash of
the trace id, so every collector (and every re-finalization) decides the same
way for the same trace. Dropped traces are counted here; their statistics and
dependency edges are recorded before their spans are deleted.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any, Mapping

_lock = threading.Lock()
_counters = {"kept": 0, "dropped": 0}
_SCALE = 2 ** 64


def trace_ratio_position(trace_id: str) -> float:
    """Where a trace id falls in [0, 1), uniformly; deterministic across processes."""
    digest = hashlib.blake2b(trace_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def should_keep(summary: Mapping[str, Any], trace_id: str, keep_ratio: float, slow_threshold_s: float) -> bool:
    """The policy; ``summary`` is an assembly summary (error_count, duration_ns)."""
    if int(summary.get("error_count") or 0) > 0:
        return True
    if int(summary.get("duration_ns") or 0) >= slow_threshold_s * 1e9:
        return True
    return trace_ratio_position(trace_id) < keep_ratio


def decide(settings: Any, trace_id: str, summary: Mapping[str, Any]) -> bool:
    """Apply the configured policy (keep everything when tail sampling is off) and count the outcome."""
    if not getattr(settings, "tail_sampling", False):
        return True
    keep = should_keep(summary, trace_id, float(settings.tail_keep_ratio), float(settings.tail_slow_threshold))
    with _lock:
        _counters["kept" if keep else "dropped"] += 1
    return keep


def counters() -> dict[str, int]:
    """Traces kept and dropped by tail sampling in this process."""
    with _lock:
        return dict(_counters)
