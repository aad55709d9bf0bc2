"""Profile entries through a real consumer into SQLite and PostgreSQL: storing, merging, redelivery, bad data,
retention."""

from __future__ import annotations

import time

from collector_worker import consumer as consumer_module
from collector_worker import profile_store
from collector_worker.retention import count_expired, run_retention
from tests.collector.test_consumer import make_trace, settings_for, span_count
from tests.collector.test_metrics_store import stored_points
from tracer import codec
from tracer.profile_codec import encode_profiles

NOW_NS = time.time_ns() - 60 * 10**9
RESOURCES = [("checkout", {"service.name": "checkout", "process.pid": 1})]
TRACE_ID = "ab" * 16


def profile_row(span_id, stacks, operation="POST /pay", name="pay", mode="explicit", start_ns=NOW_NS, dropped=0):
    samples = max(0, sum(count for _, count in stacks)) + dropped
    return [TRACE_ID, span_id, operation, name, mode, 0, start_ns, start_ns + 10**9, 5_000_000, samples,
            [[stack, count] for stack, count in stacks], dropped]


def merged(engine, **kwargs):
    with engine.connect() as conn:
        return profile_store.aggregate(conn, NOW_NS - 10**9, NOW_NS + 10**9, **kwargs)


def test_profiles_are_stored_with_their_trace_and_merged_per_operation(client, redis_url, database_url, engine):
    settings = settings_for(redis_url, database_url)
    first = profile_row("01" * 8, [("pay;charge;sign", 30), ("pay;charge", 5), ("pay;load", 10)])
    second = profile_row("02" * 8, [("pay;charge;sign", 20), ("pay;fib;fib;fib", 4)], dropped=1)
    other = profile_row("03" * 8, [("list;query", 9)], operation="GET /orders", name="list")
    entry = encode_profiles([first, second, other], RESOURCES)
    stored_points(client, settings, engine, [entry, entry])  # the second is a redelivery: nothing changes

    with engine.connect() as conn:
        profiles = profile_store.of_trace(conn, TRACE_ID)
        (only,) = profile_store.of_trace(conn, TRACE_ID, "03" * 8)
    assert [p["span_id"] for p in profiles] == ["01" * 8, "02" * 8, "03" * 8]
    assert profiles[0]["stacks"] == [{"stack": "pay;charge;sign", "samples": 30}, {"stack": "pay;load", "samples": 10},
                                     {"stack": "pay;charge", "samples": 5}]
    assert (only["operation"], only["service"], only["samples"], only["duration_ms"]) == ("GET /orders", "checkout",
                                                                                         9, 1000.0)

    pay = merged(engine, operation="POST /pay")
    assert (pay["profiles"], pay["samples"], pay["dropped"]) == (2, 70, 1)
    assert pay["stacks"][0] == {"stack": "pay;charge;sign", "samples": 50}
    functions = {f["function"]: f for f in pay["functions"]}
    assert pay["functions"][0]["function"] == "sign"
    assert (functions["sign"]["self_samples"], functions["sign"]["total_samples"]) == (50, 50)
    assert (functions["charge"]["self_samples"], functions["charge"]["total_samples"]) == (5, 55)
    assert (functions["pay"]["self_samples"], functions["pay"]["total_samples"]) == (0, 69)
    assert functions["fib"]["total_samples"] == 4  # recursion counts once per stack
    assert functions["sign"]["self_pct"] == round(100 * 50 / 69, 2)
    assert merged(engine, service="checkout")["profiles"] == 3
    assert merged(engine, service="nobody") == {"profiles": 0, "samples": 0, "dropped": 0, "stacks": [],
                                                "functions": [], "traces": []}
    assert consumer_module.consumer_stats()["profiles_stored"] >= 3


def test_a_bad_profile_row_dead_letters_its_entry_with_the_reason_and_the_rest_is_stored(
        client, redis_url, sqlite_url, sqlite_engine):
    settings = settings_for(redis_url, sqlite_url)
    bad = encode_profiles([profile_row("04" * 8, [("a;b", 3)]),
                           profile_row("05" * 8, [("a;b", -1)]),
                           profile_row("0" * 16, [("a", 1)])], RESOURCES)
    garbage = dict(bad)
    garbage[b"data"] = b"\xc1 not msgpack"
    stored_points(client, settings, sqlite_engine, [bad, garbage, codec.encode_span_dicts(make_trace(2))])
    letters = sorted(fields[b"reason"].decode() for _, fields in client.xrange(settings.dead_stream))
    assert len(letters) == 2
    assert letters[1] == ("profile row 1: stack count must be a count (integer >= 0), not -1; "
                          "profile row 2: invalid profile ids 'abababababababababababababababab'/'0000000000000000'")
    assert letters[0].startswith("cannot decode msgpack data"), letters[0]
    with sqlite_engine.connect() as conn:
        assert [p["span_id"] for p in profile_store.of_trace(conn, TRACE_ID)] == ["04" * 8]
    assert span_count(sqlite_engine) == 2


def test_retention_removes_profiles_that_started_before_the_cutoff(client, redis_url, sqlite_url, sqlite_engine):
    settings = settings_for(redis_url, sqlite_url)
    old = NOW_NS - 10 * 86400 * 10**9
    stored_points(client, settings, sqlite_engine, [encode_profiles(
        [profile_row("06" * 8, [("a", 1)], start_ns=old), profile_row("07" * 8, [("a", 1)])], RESOURCES)])
    cutoff = NOW_NS - 86400 * 10**9
    assert count_expired(sqlite_engine, cutoff)["profiles"] == 1
    assert run_retention(sqlite_engine, cutoff)["profiles"] == 1
    with sqlite_engine.connect() as conn:
        assert [p["span_id"] for p in profile_store.of_trace(conn, TRACE_ID)] == ["07" * 8]
