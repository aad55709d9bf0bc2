"""limit_span: the quick check for spans within the limits changes nothing the full walk would not."""

import copy

import pytest

from tracer import limits
from tracer.limits import SpanLimits, limit_span, within_limits

LIMITS = SpanLimits(events=2, links=2, attributes=3, value_length=8)


def _span(**changes):
    span = {"name": "op", "status_message": None, "attributes": {"a": "x", "n": 1, "f": 1.5},
            "events": [{"name": "e", "time_ns": 1, "attributes": {"k": "v"}}],
            "links": [{"trace_id": "t", "span_id": "s", "attributes": {}}]}
    span.update(changes)
    return span


CASES = {
    "within": _span(),
    "long name": _span(name="n" * 9),
    "long status message": _span(status_message="m" * 9),
    "too many attributes": _span(attributes={"a": 1, "b": 2, "c": 3, "d": 4}),
    "long attribute value": _span(attributes={"a": "v" * 9}),
    "list attribute value": _span(attributes={"a": ["v" * 9]}),
    "too many events": _span(events=[{"name": "e", "time_ns": 1, "attributes": {}}] * 3),
    "long event name": _span(events=[{"name": "e" * 9, "time_ns": 1, "attributes": {}}]),
    "long event attribute": _span(events=[{"name": "e", "time_ns": 1, "attributes": {"k": "v" * 9}}]),
    "too many links": _span(links=[{"trace_id": "t", "span_id": "s", "attributes": {}}] * 3),
    "long link attribute": _span(links=[{"trace_id": "t", "span_id": "s", "attributes": {"k": "v" * 9}}]),
    "no attributes": _span(attributes=None, events=None, links=None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_limit_span_gives_what_the_full_walk_gives(case, monkeypatch):
    quick, walked = copy.deepcopy(CASES[case]), copy.deepcopy(CASES[case])
    cut = limit_span(quick, LIMITS)
    monkeypatch.setattr(limits, "within_limits", lambda span, limits: False)  # the full walk
    walked_cut = limit_span(walked, LIMITS)
    monkeypatch.undo()
    assert (quick, cut) == (walked, walked_cut)
    assert within_limits(CASES[case], LIMITS) == (case == "within")
