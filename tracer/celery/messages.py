"""What a task message and a task request say, as span attributes (``messaging.*``, ``celery.*``).

Pure functions of what Celery hands the signal handlers; the handlers call
them once the message is out or the result is stored, off the path the
caller waits on (see :func:`tracer.celery.inflight.record_late_attributes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .carrier import queue_wait


def text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def message_fields(headers: Mapping[str, Any] | None, body: Any) -> dict[str, Any]:
    """Task id, name and ids from a message being published (protocol 2 headers or protocol 1 body)."""
    fields = dict(headers or {})
    if isinstance(body, Mapping) and "id" in body and "task" in body:  # protocol 1
        for key in ("id", "task", "root_id", "parent_id", "group", "retries", "eta", "expires",
                    "chord", "taskset"):
            fields.setdefault(key, body.get(key))
        if fields.get("group") is None:
            fields["group"] = body.get("taskset")
    return fields


def message_field(headers: Mapping[str, Any], body: Any, key: str) -> Any:
    """``message_fields(headers, body).get(key)`` for ``id`` or ``task``, without copying the headers."""
    if key in headers:
        return headers[key]
    if isinstance(body, Mapping) and "id" in body and "task" in body:  # protocol 1
        return body.get(key)
    return None


def embedded_chord(body: Any) -> Any:
    """The chord callback signature a header task message carries, if any."""
    if type(body) in (tuple, list) or isinstance(body, (tuple, list)):  # protocol 2: (args, kwargs, embed)
        if len(body) == 3 and isinstance(body[2], Mapping):
            return body[2].get("chord")
        return None
    if isinstance(body, Mapping):  # protocol 1
        return body.get("chord")
    return None


ID_ATTRIBUTES = (("celery.root_id", "root_id"), ("celery.parent_id", "parent_id"),
                 ("celery.group_id", "group"), ("celery.eta", "eta"), ("celery.expires", "expires"))


def get_mapping(source: Mapping[str, Any], key: str) -> Any:
    return source.get(key)


def get_attr(source: Any, key: str) -> Any:
    return getattr(source, key, None)


def ids(source: Any, get) -> dict[str, Any]:
    """celery.* id attributes, from a headers mapping (``get_mapping``) or a request object (``get_attr``)."""
    attrs: dict[str, Any] = {}
    request = None
    if get is get_attr and type(getattr(source, "__dict__", None)) is dict and not isinstance(source, Mapping):
        # a task request: read its own attributes from its __dict__ (class defaults are None, except retries)
        request, source, get = source, source.__dict__, get_mapping
    if get is get_mapping and type(source) is dict:
        lookup = source.get
        for attr, key in ID_ATTRIBUTES:
            value = lookup(key)
            if value:
                attrs[attr] = value if type(value) is str else str(value)
        retries = lookup("retries")
        if retries is None and request is not None:
            retries = getattr(request, "retries", None)
    else:
        for attr, key in ID_ATTRIBUTES:
            value = get(source, key)
            if value:
                attrs[attr] = text(value)
        retries = get(source, "retries")
    if retries is not None:
        try:
            attrs["celery.retries"] = int(retries)
        except (TypeError, ValueError):
            pass
    return attrs


def request_attributes(request: Any, task_name: str, task_id: str) -> dict[str, Any]:
    """The run span's attributes, from the task request."""
    attrs: dict[str, Any] = {
        "messaging.system": "celery",
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.message.id": task_id,
        "celery.task_name": task_name,
        "celery.task_id": task_id,
    }
    attrs.update(ids(request, get_attr))
    info = getattr(request, "delivery_info", None) or {}
    destination = info.get("routing_key") or info.get("exchange")
    if destination:
        attrs["messaging.destination.name"] = text(destination)
    hostname = getattr(request, "hostname", None)
    if hostname:
        attrs["celery.hostname"] = text(hostname)
    chord = getattr(request, "chord", None)
    if chord:
        attrs["celery.chord_id"] = text(getattr(request, "group", None) or "")
    return attrs


def task_name(task: Any, fallback: str = "unknown") -> str:
    return text(getattr(task, "name", None) or fallback)


def publish_attributes(headers: Mapping[str, Any] | None, body: Any, exchange: Any, routing_key: Any,
                       countdown: Any, task_name: str, task_id: str) -> dict[str, Any]:
    """The producer span's attributes, built from the message once it has been sent."""
    attrs: dict[str, Any] = {
        "messaging.system": "celery",
        "messaging.operation.type": "publish",
        "messaging.operation.name": "publish",
        "messaging.message.id": task_id,
        "celery.task_name": task_name,
        "celery.task_id": task_id,
    }
    destination = routing_key or exchange
    if destination:
        attrs["messaging.destination.name"] = text(destination)
    if exchange:
        attrs["celery.exchange"] = text(exchange)
    fields = headers if headers is not None and "id" in headers else message_fields(headers, body)
    attrs.update(ids(fields, get_mapping))
    if countdown is not None:
        attrs["celery.countdown"] = countdown
    return attrs


def run_attributes(request: Any, name: str, task_id: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The run span's attributes plus ``extra`` (queue wait, propagation error) the handler computed."""
    attrs = request_attributes(request, name, task_id)
    attrs.update(extra)
    return attrs


def run_attributes_later(request: Any, name: str, task_id: str, start_ns: int, published: Any) -> dict[str, Any]:
    """:func:`run_attributes` of a span the run handler's fast path started (queue wait computed now)."""
    attrs = request_attributes(request, name, task_id)
    wait = queue_wait(published, start_ns)
    if wait is not None:
        attrs["celery.queue_wait_ms"], attrs["celery.published_ns"] = wait
    return attrs
