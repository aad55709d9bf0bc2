"""The sampler every TracingManager installs: parent-based, trace-id ratio at the root, drops counted.

Its own module because two parts read it: :class:`~tracer.manager.TracingManager`
builds it, and the Celery handlers (:mod:`tracer.celery.hot_spans`) recognise
it to take the same decision in line on the task's path.
"""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.util.types import Attributes


class CountingSampler(Sampler):
    """Delegates to ``inner`` and counts the spans it decides not to record.

    ``root`` is the trace-id ratio sampler ``inner`` uses for spans without a
    parent, when ``inner`` is ``ParentBased(root)`` with OpenTelemetry's
    default delegates for parents (what :func:`ratio_sampler` builds); None
    for any other ``inner``.
    """

    def __init__(self, inner: Sampler, root: TraceIdRatioBased | None = None):
        self.inner = inner
        self.root = root
        self.dropped = 0

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes: Attributes = None,
                      links=None, trace_state=None) -> SamplingResult:
        result = self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP:
            self.dropped += 1
        return result

    def get_description(self) -> str:
        return f"Counting{{{self.inner.get_description()}}}"


def ratio_sampler(rate: float) -> CountingSampler:
    """``CountingSampler(ParentBased(TraceIdRatioBased(rate)))``, parents with the default delegates."""
    root = TraceIdRatioBased(rate)
    return CountingSampler(ParentBased(root), root)
