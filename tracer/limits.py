"""Per-span limits applied where spans enter Contrail (the OTLP receivers and the collector).

OpenTelemetry's span limits are the reference: at most 128 events, links and
attributes per span by default, and a bound on the length of string values.
A span from a hostile or buggy client is cut to size, never refused; what is
cut is counted on the span itself (``contrail.dropped.*`` attributes, like
OTLP's ``dropped_*_count`` fields) and returned so callers can count it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

DROPPED_EVENTS = "contrail.dropped.events"
DROPPED_LINKS = "contrail.dropped.links"
DROPPED_ATTRIBUTES = "contrail.dropped.attributes"
TRUNCATED_VALUES = "contrail.truncated.values"


@dataclass(frozen=True)
class SpanLimits:
    """How much of one span is kept."""

    events: int = 128
    links: int = 128
    attributes: int = 128
    value_length: int = 16384

    @classmethod
    def from_settings(cls, settings: Any) -> "SpanLimits":
        return cls(events=settings.span_event_count_limit, links=settings.span_link_count_limit,
                   attributes=settings.span_attribute_count_limit,
                   value_length=settings.attribute_value_length_limit)


@dataclass
class Cut:
    """What :func:`limit_span` removed from one span."""

    events: int = 0
    links: int = 0
    attributes: int = 0
    truncated: int = 0

    def __bool__(self) -> bool:
        return bool(self.events or self.links or self.attributes or self.truncated)


def _value(value: Any, limits: SpanLimits, cut: Cut) -> Any:
    if isinstance(value, str):
        if len(value) > limits.value_length:
            cut.truncated += 1
            return value[:limits.value_length]
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > limits.attributes:
            cut.attributes += len(value) - limits.attributes
            value = value[:limits.attributes]
        return [_value(item, limits, cut) for item in value]
    return value


def limit_attributes(attributes: Mapping[str, Any], limits: SpanLimits, cut: Cut) -> dict[str, Any]:
    """The first ``limits.attributes`` attributes, string values cut to ``limits.value_length``."""
    if len(attributes) > limits.attributes:
        cut.attributes += len(attributes) - limits.attributes
        attributes = dict(list(attributes.items())[:limits.attributes])
    for key, value in attributes.items():
        if isinstance(value, (str, list, tuple)):
            limited = _value(value, limits, cut)
            if limited is not value:
                attributes = dict(attributes)
                attributes[key] = limited
    return attributes if isinstance(attributes, dict) else dict(attributes)


_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))


def _attributes_within(attributes: Any, limits: SpanLimits) -> bool:
    """True when :func:`limit_attributes` keeps ``attributes`` as they are: a dict of plain values in bounds."""
    if type(attributes) is not dict or len(attributes) > limits.attributes:
        return False
    longest = limits.value_length
    for value in attributes.values():  # one loop, no comprehension: the usual dict is small and plain
        if type(value) is str:
            if len(value) > longest:
                return False
        elif type(value) not in _PLAIN_TYPES:
            return False
    return True


def within_limits(span: dict[str, Any], limits: SpanLimits) -> bool:
    """True when :func:`limit_span` would change nothing (the usual span): one cheap pass, nothing copied."""
    longest = limits.value_length
    get = span.get
    name, message, events, links = get("name"), get("status_message"), get("events"), get("links")
    if (isinstance(name, str) and len(name) > longest) or (isinstance(message, str) and len(message) > longest):
        return False
    if type(events) is not list or type(links) is not list or len(events) > limits.events \
            or len(links) > limits.links or not _attributes_within(get("attributes"), limits):
        return False
    for event in events:
        if type(event) is not dict or not _attributes_within(event.get("attributes"), limits):
            return False
        event_name = event.get("name")
        if isinstance(event_name, str) and len(event_name) > longest:
            return False
    for link in links:
        if type(link) is not dict or not _attributes_within(link.get("attributes"), limits):
            return False
    return True


def limit_span(span: dict[str, Any], limits: SpanLimits) -> Cut:
    """Cut one decoded span (the codec's dict shape) to ``limits`` in place; return what was cut.

    A cut span carries the counts as ``contrail.dropped.*`` / ``contrail.truncated.values``
    attributes (added beyond the attribute limit, so they are never themselves dropped).
    """
    cut = Cut()
    if within_limits(span, limits):
        return cut
    for key in ("name", "status_message"):
        text = span.get(key)
        if isinstance(text, str) and len(text) > limits.value_length:
            span[key] = text[:limits.value_length]
            cut.truncated += 1
    span["attributes"] = limit_attributes(span.get("attributes") or {}, limits, cut)
    events = span.get("events") or []
    if len(events) > limits.events:
        cut.events = len(events) - limits.events
        events = events[:limits.events]
    for event in events:
        if isinstance(event.get("name"), str) and len(event["name"]) > limits.value_length:
            event["name"] = event["name"][:limits.value_length]
            cut.truncated += 1
        event["attributes"] = limit_attributes(event.get("attributes") or {}, limits, cut)
    span["events"] = events
    links = span.get("links") or []
    if len(links) > limits.links:
        cut.links = len(links) - limits.links
        links = links[:limits.links]
    for link in links:
        link["attributes"] = limit_attributes(link.get("attributes") or {}, limits, cut)
    span["links"] = links
    mark_cut(span, cut)
    return cut


def mark_cut(span: dict[str, Any], cut: Cut) -> None:
    """Add what was cut to the span's ``contrail.dropped.*`` / ``contrail.truncated.values`` attributes."""
    if cut:
        attributes = dict(span["attributes"])
        for name, count in ((DROPPED_EVENTS, cut.events), (DROPPED_LINKS, cut.links),
                            (DROPPED_ATTRIBUTES, cut.attributes), (TRUNCATED_VALUES, cut.truncated)):
            if count:
                attributes[name] = int(attributes.get(name) or 0) + count if isinstance(
                    attributes.get(name), int) else count
        span["attributes"] = attributes
