"""Reading what the tracer pushed into the private Redis stream."""

from __future__ import annotations

from tracer.codec import decode_entry, entry_kind


def stream_entries(redis_url, stream="contrail:spans"):
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return client.xrange(stream)
    finally:
        client.close()


def stream_spans(redis_url, stream="contrail:spans"):
    """The spans of the stream's span entries. Metrics and profile entries share the stream, and a manager an
    earlier test shut down with a short timeout may still push its last metrics into this test's Redis."""
    spans = []
    for _, fields in stream_entries(redis_url, stream):
        if entry_kind(fields) != "spans":
            continue
        decoded = decode_entry(fields)
        assert decoded.rejected == []
        spans.extend(decoded.spans)
    return spans


def by_name(spans):
    return {s["name"]: s for s in spans}


def in_forked_child(tracing, work):
    """Fork; in the child run ``work()`` then flush ``tracing``; assert the child exited 0. Returns its pid."""
    import os

    pid = os.fork()
    if pid == 0:  # child: never returns into the test runner
        code = 1
        try:
            work()
            code = 0 if tracing.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid
