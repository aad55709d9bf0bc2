"""Celery tracing through Celery's own signals.

One call, :func:`instrument_celery`, connects handlers that give every task
message a PRODUCER span (``publish <task>``) in the sending process and a
CONSUMER span (``run <task>``) in the worker, parented through W3C
``traceparent``/``tracestate``/``baggage`` carried in the message headers.

Why not ``opentelemetry-instrumentation-celery``: it keys in-flight spans by
the task object (so ``send_task`` by name leaks the producer span and its
context), records nothing when a pool child dies (hard time limit, revoke with
terminate), loses spans when ``worker_max_tasks_per_child`` recycles a child,
does not read protocol 1 messages, and has no queue-wait figure. Here spans
are keyed by task id (a run span by attempt: task id and the thread running
it), the worker's parent process records what a dead child could not,
children flush before they exit, and the publish time travels in the
``contrail_published_ns`` header so the run span knows its queue wait.

The modules, one job each:

* :mod:`.tracing` — :func:`instrument_celery`, :class:`CeleryTracing` (shared state, signal wiring);
* :mod:`.publish` — the sending side's handlers;
* :mod:`.run` — a task run's handlers, from ``task_prerun`` to how it ends;
* :mod:`.worker` — worker process signals, runs recorded by the worker's parent, unrunnable messages;
* :mod:`.hot_spans` — the two spans on the round trip's path, started for less than ``start_span``;
* :mod:`.inflight` — spans held between their opening and closing signal, and their late attributes;
* :mod:`.carrier` — Contrail's headers in a message (W3C context, publish time, chord links);
* :mod:`.messages` — span attributes from a message or a task request.

Celery is imported lazily: ``tracer`` and this package import without it.
"""

from .carrier import CARRIER_KEYS, LINKS_HEADER, PROPAGATION_KEYS, PUBLISHED_HEADER
from .inflight import MAX_IN_FLIGHT
from .tracing import SIGNAL_NAMES, CeleryTracing, instrument_celery, uninstrument_celery

__all__ = ["instrument_celery", "uninstrument_celery", "CeleryTracing", "SIGNAL_NAMES", "PUBLISHED_HEADER",
           "LINKS_HEADER", "PROPAGATION_KEYS", "CARRIER_KEYS", "MAX_IN_FLIGHT"]
