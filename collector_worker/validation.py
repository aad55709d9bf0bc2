"""Admission of one decoded span into storage: times bounded against the collector's clock, sizes cut.

Every span from the stream passes :func:`admit_span` right after decoding,
before anything is stored or counted, so a span with absurd times or counts
can neither poison a statistics bucket nor refuse its neighbours.

Rules, one per case (why: a start time places the span, its trace and its
statistics buckets; an end time only says how long it took):

* start before :data:`EARLIEST_NS` (2000-01-01) or more than
  :data:`MAX_FUTURE_NS` (1 h) after the collector's clock: **rejected** with
  the reason (dead-lettered). There is no trustworthy time to put it at, and
  a far-future start would open statistics buckets no window reads yet.
* end before start: **clamped** to the start (duration 0).
* end more than :data:`MAX_DURATION_NS` (7 days) after start, or more than
  :data:`MAX_FUTURE_NS` after the clock: **clamped** to the earlier of the
  two. The span still belongs in its trace (children point at it); only its
  length is unknown. A week covers the longest real operations (batch jobs,
  workflows); a span "ending" at 2**63-1 is a bug or an attack.
* a token count (``gen_ai.usage.*``, ``llm.token_count.*``) that is not a
  finite number from 0 to :data:`collector_worker.llm_usage.MAX_TOKENS`:
  **ignored** by LLM usage, the attribute itself is kept.

A clamped span carries ``contrail.clamped.end_ns`` (the end it was sent
with); a span with ignored token counts carries ``contrail.ignored.tokens``
(the keys). LLM and agent spans of other instrumentations get Contrail's GenAI
attributes (:mod:`collector_worker.conventions`). Then :func:`tracer.limits.limit_span` cuts events, links,
attributes and long values to the configured span limits.

What happens here is counted (:func:`counters`) and shown in the collector
report next to the consumer's counters.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tracer.limits import Cut, SpanLimits, limit_span, within_limits

from .conventions import map_ai_conventions
from .llm_usage import TOKEN_KEYS, token_count

EARLIEST_NS = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_NS = 3600 * 1_000_000_000  # how far ahead of the collector's clock a time may be
MAX_DURATION_NS = 7 * 86400 * 1_000_000_000
CLAMPED_END = "contrail.clamped.end_ns"
IGNORED_TOKENS = "contrail.ignored.tokens"

COUNTER_NAMES = ("span_times_rejected", "span_ends_clamped", "token_counts_ignored", "span_events_dropped",
                 "span_links_dropped", "span_attributes_dropped", "attribute_values_truncated")
_counters = dict.fromkeys(COUNTER_NAMES, 0)
_lock = threading.Lock()


def counters() -> dict[str, int]:
    """What admission rejected, clamped, ignored and cut in this process."""
    with _lock:
        return dict(_counters)


def _count(**amounts: int) -> None:
    with _lock:
        for name, amount in amounts.items():
            if amount:
                _counters[name] += amount


def _warn(span: dict[str, Any], key: str, value: Any) -> None:
    attributes = span.get("attributes")
    attributes = dict(attributes) if isinstance(attributes, dict) else {}
    attributes[key] = value
    span["attributes"] = attributes


def time_reason(span: dict[str, Any], now_ns: int) -> str | None:
    """Why the span's times make it unusable (see the module rules), or None; clamps a bad end in place."""
    start, end = span.get("start_ns"), span.get("end_ns")
    if type(start) is not int or type(end) is not int:
        return "span times must be integers"
    latest = now_ns + MAX_FUTURE_NS
    if start < EARLIEST_NS or start > latest:
        return f"start_ns {start} is before 2000-01-01 or more than 1 h ahead of the collector's clock"
    bound = min(start + MAX_DURATION_NS, latest)
    if end < start or end > bound:
        span["end_ns"] = start if end < start else bound
        _warn(span, CLAMPED_END, end)
        _count(span_ends_clamped=1)
    return None


def _check_tokens(span: dict[str, Any]) -> None:
    attributes = span.get("attributes")
    if not isinstance(attributes, dict) or TOKEN_KEYS.isdisjoint(attributes):
        return
    ignored = [key for key in TOKEN_KEYS.intersection(attributes) if attributes[key] not in (None, "")
               and token_count(attributes[key]) is None]  # only the keys there (sorted below)
    if ignored:
        _warn(span, IGNORED_TOKENS, sorted(ignored))
        _count(token_counts_ignored=len(ignored))


def admit_span(span: dict[str, Any], limits: SpanLimits, now_ns: int | None = None) -> str | None:
    """Check, clamp and cut one decoded span in place; the reason it is rejected, or None."""
    reason = time_reason(span, time.time_ns() if now_ns is None else now_ns)
    if reason:
        _count(span_times_rejected=1)
        return reason
    map_ai_conventions(span, limits.value_length)  # OpenInference / OpenLLMetry LLM spans in GenAI terms
    _check_tokens(span)
    if within_limits(span, limits):  # the usual span: nothing to cut (limit_span would check the same first)
        return None
    cut: Cut = limit_span(span, limits)
    if cut:
        _count(span_events_dropped=cut.events, span_links_dropped=cut.links,
               span_attributes_dropped=cut.attributes, attribute_values_truncated=cut.truncated)
    return None
