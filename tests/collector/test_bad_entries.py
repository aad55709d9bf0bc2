"""Malformed stream entries against a real collector process on a real Redis: each costs only itself."""

from __future__ import annotations

import json

import msgpack
import pytest

from tests.collector.ingest_checks import collector_counters, dead_letters, dead_lettered_rows, stored_span_ids
from tests.collector.test_consumer import make_trace, publish
from tests.collector.test_faults import STREAM, pending, sqlite_collectors  # noqa: F401 - the fixture
from tracer.codec import encode_span_dicts

REPORTING = {"CONTRAIL_REPORT_INTERVAL": "200ms"}


def settle(collectors, process, client, engine, spans: int, letters: int) -> None:
    """Wait until ``spans`` spans are stored, ``letters`` dead letters written and nothing is pending."""
    collectors.wait_until(
        lambda: len(stored_span_ids(engine)) == spans and client.xlen(f"{STREAM}:dead") == letters
        and pending(client) == 0, process, timeout=60,
        message=f"{spans} spans stored, {letters} dead letters, nothing pending")
    assert process.poll() is None, collectors.log(process)


def neighbours(client) -> tuple[list[str], list[str]]:
    """Two valid entries of 50 spans each, before and after the bad one; their span ids."""
    before, after = make_trace(50), make_trace(50)
    publish(client, [before])
    return [s["span_id"] for s in before + after], after


@pytest.mark.parametrize("encoding", [b"\xff\xfe", b"msgpack\x80"])
def test_encoding_that_is_not_utf8_is_dead_lettered_and_the_collector_lives(
        client, sqlite_collectors, sqlite_engine, encoding):
    good_ids, after = neighbours(client)
    bad = client.xadd(STREAM, {"v": "1", "enc": encoding, "n": "1", "data": b"\x90"}).decode()
    publish(client, [after])
    collector = sqlite_collectors.start()
    settle(sqlite_collectors, collector, client, sqlite_engine, spans=100, letters=1)
    assert stored_span_ids(sqlite_engine) == set(good_ids)
    letter = dead_letters(client)[bad]
    assert letter[b"reason"].startswith(b"unknown encoding") and letter[b"orig_enc"] == encoding


@pytest.mark.parametrize("encoding", ["json", "msgpack", "msgpack+zlib"])
def test_infinite_event_time_costs_only_its_span(client, sqlite_collectors, sqlite_engine, encoding):
    spans = make_trace(5)
    spans[2]["events"] = [{"name": "boom", "time_ns": float("inf"), "attributes": {}}]
    fields = encode_span_dicts(spans, encoding)
    good_ids, after = neighbours(client)
    bad = client.xadd(STREAM, fields).decode()
    publish(client, [after])
    collector = sqlite_collectors.start(**REPORTING)
    settle(sqlite_collectors, collector, client, sqlite_engine, spans=104, letters=1)
    assert stored_span_ids(sqlite_engine) == set(good_ids) | {s["span_id"] for i, s in enumerate(spans) if i != 2}
    letter = dead_letters(client)[bad]
    assert letter[b"scope"] == b"spans"
    assert letter[b"reason"].startswith(b"rejected 1 of 5 spans: row 2: OverflowError")
    [row] = dead_lettered_rows(letter)
    assert row[1] == spans[2]["span_id"]
    sqlite_collectors.wait_until(lambda: collector_counters(client).get("spans_rejected") == 1, collector,
                                 timeout=30, message="the rejected span counted")


def test_field_names_that_are_not_utf8_are_kept_in_the_dead_letter(client, sqlite_collectors, sqlite_engine):
    good_ids, after = neighbours(client)
    bad = client.xadd(STREAM, {b"\xff\xfe": b"one", b"v": b"1", b"enc\xc3(": b"json"}).decode()
    publish(client, [after])
    collector = sqlite_collectors.start()
    settle(sqlite_collectors, collector, client, sqlite_engine, spans=100, letters=1)
    letter = dead_letters(client)[bad]
    assert letter[b"reason"] == b"missing field: an entry needs v, enc, n and data"
    assert (letter[b"orig_\xff\xfe"], letter[b"orig_v"], letter[b"orig_enc\xc3("]) == (b"one", b"1", b"json")


def test_a_span_the_database_refuses_costs_only_itself(client, sqlite_collectors, sqlite_engine):
    """A lone surrogate in a span name (valid JSON, unstorable text): the other nine spans are stored."""
    spans = make_trace(10)
    spans[4]["name"] = "bad \ud800 name"
    good_ids, after = neighbours(client)
    bad = client.xadd(STREAM, encode_span_dicts(spans, "json")).decode()
    publish(client, [after])
    collector = sqlite_collectors.start(**REPORTING)
    settle(sqlite_collectors, collector, client, sqlite_engine, spans=109, letters=1)
    assert stored_span_ids(sqlite_engine) == set(good_ids) | {s["span_id"] for i, s in enumerate(spans) if i != 4}
    letter = dead_letters(client)[bad]
    assert letter[b"scope"] == b"spans"
    assert letter[b"reason"].startswith(b"rejected 1 of 10 spans: span " + spans[4]["span_id"].encode()
                                        + b": storage refused the span: UnicodeEncodeError")
    assert letter[b"orig_enc"] == b"json"  # msgpack cannot carry the lone surrogate
    held = json.loads(letter[b"orig_data"])
    assert held["spans"][0][3] == "bad \ud800 name" and held["resources"][0][0] == "orders"
    sqlite_collectors.wait_until(lambda: collector_counters(client).get("spans_rejected") == 1, collector,
                                 timeout=30, message="the rejected span counted")


def test_infinite_float_in_msgpack_span_times_is_rejected_alone(client, sqlite_collectors, sqlite_engine):
    spans = make_trace(3)
    payload = msgpack.unpackb(encode_span_dicts(spans)[b"data"])
    payload["spans"][1][6] = float("inf")  # end_ns
    bad = client.xadd(STREAM, {"v": "1", "enc": "msgpack", "n": "3", "data": msgpack.packb(payload)}).decode()
    collector = sqlite_collectors.start()
    settle(sqlite_collectors, collector, client, sqlite_engine, spans=2, letters=1)
    assert dead_letters(client)[bad][b"reason"].startswith(b"rejected 1 of 3 spans: row 1: invalid span times")
