"""What every span receiver does once its spans are converted: count, publish, answer partial success.

The OTLP/HTTP, OTLP/gRPC and Zipkin receivers convert their own wire formats to codec span dicts and
hand them here, so limits are counted, the stream is fed and rejections are reported the same way
whichever protocol a span came in by.
"""

from __future__ import annotations

from typing import Any

from tracer import shards
from tracer.codec import encode_span_dicts
from tracer.limits import Cut

from .metrics import current_metrics
from .resources import current_resources, current_settings

MAX_REASONS = 5  # distinct rejection reasons quoted in a partial-success message


class StreamUnavailable(RuntimeError):
    """The span stream could not be written; the sender should retry later."""


def publish(spans: list[dict[str, Any]]) -> None:
    """XADD the spans as batches of ``max_export_batch_size``, one stream entry per batch.

    With sharded streams the spans are grouped by the shard of their trace id first, so a trace's spans
    go to one shard (see :mod:`tracer.shards`).
    """
    settings = current_settings()
    size, count = settings.max_export_batch_size, settings.stream_shards
    pipe = current_resources().redis().pipeline(transaction=False)
    if count <= 1:
        stream = shards.shard_streams(settings)[0]
        for i in range(0, len(spans), size):
            pipe.xadd(stream, encode_span_dicts(spans[i:i + size]))
    else:
        groups: list[list[dict[str, Any]]] = [[] for _ in range(count)]
        for span in spans:
            groups[shards.trace_shard(span["trace_id"], count)].append(span)
        for index, group in enumerate(groups):
            for i in range(0, len(group), size):
                part = group[i:i + size]
                pipe.xadd(shards.shard_stream(settings.stream, index),
                          shards.routed(encode_span_dicts(part), part[0]["trace_id"]))
    pipe.execute()


def rejection_message(reasons: list[str]) -> str:
    """``"<n> span(s) rejected: <reason>; ..."`` quoting the first few distinct reasons, or ``""``."""
    if not reasons:
        return ""
    distinct = list(dict.fromkeys(reasons))[:MAX_REASONS]
    return f"{len(reasons)} span(s) rejected: " + "; ".join(distinct)


def accept(spans: list[dict[str, Any]], reasons: list[str], cut: Cut) -> str:
    """Count and publish converted spans; return the partial-success message ("" when none was rejected).

    Raises :class:`StreamUnavailable` when Redis cannot be written (nothing was acknowledged).
    """
    metrics = current_metrics()
    for item, count in (("events", cut.events), ("links", cut.links), ("attributes", cut.attributes),
                        ("truncated_values", cut.truncated)):
        if count:
            metrics.otlp_span_items_dropped.labels(item).inc(count)
    metrics.otlp_spans_received.inc(len(spans) + len(reasons))
    if spans:
        try:
            publish(spans)
        except Exception as exc:  # Redis unreachable: the sender retries
            metrics.otlp_requests.labels("unavailable").inc()
            raise StreamUnavailable(f"span stream unavailable: {type(exc).__name__}") from None
    metrics.otlp_spans_accepted.inc(len(spans))
    metrics.otlp_spans_rejected.inc(len(reasons))
    metrics.otlp_requests.labels("partial" if reasons else "ok").inc()
    return rejection_message(reasons)
