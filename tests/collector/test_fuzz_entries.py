"""Generated hostile stream entries: first the codec alone, then a real collector process on a real Redis.

Entries are random field maps, valid entries with one field or row mutated (huge ints, inf and nan, lone
surrogates, non-UTF-8 bytes, wrong types) and compression bombs. The codec may only raise CodecError and
never loses a valid row; the collector never exits, stores every valid span, dead-letters every bad entry
or span with a reason, acknowledges everything and stays below MEMORY_BOUND.
"""

from __future__ import annotations

import functools
import json
import time
import zlib

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.collector.ingest_checks import dead_letters, dead_lettered_rows, peak_rss_bytes, stored_span_ids
from tests.collector.test_consumer import make_trace, publish
from tests.collector.test_faults import GROUP, STREAM, pending, sqlite_collectors  # noqa: F401 - the fixture
from tests.support.streams import consumed
from tracer.codec import MAX_DECOMPRESSED_BYTES, CodecError, decode_entry, encode_span_dicts

MEMORY_BOUND = 300 * 1024 * 1024  # peak resident memory a collector may reach on any of these entries
PROCESS_EXAMPLES = max(3, settings.default.max_examples // 10)  # batches sent to the real collector

NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80),
    st.sampled_from([2**64, 2**63, -2**63 - 1, 10**30, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("inf"), float("-inf"), float("nan")]),
    st.text(max_size=12), st.sampled_from(["\ud800", "x\udcff", "", "0" * 16, "0" * 32]), st.binary(max_size=12),
    st.lists(st.integers(min_value=-10, max_value=10), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(min_value=0, max_value=9), max_size=2),
)
HEX16, HEX8 = st.binary(min_size=16, max_size=16).map(bytes.hex), st.binary(min_size=8, max_size=8).map(bytes.hex)


@st.composite
def valid_spans(draw) -> list[dict]:
    t0 = time.time_ns() - 5_000_000_000
    spans = []
    for i in range(draw(st.integers(min_value=1, max_value=6))):
        start = t0 + draw(st.integers(min_value=0, max_value=10**9))
        spans.append({
            "trace_id": draw(HEX16.filter(lambda h: h != "0" * 32)),
            "span_id": draw(HEX8.filter(lambda h: h != "0" * 16)),
            "parent_span_id": None, "name": draw(st.text(min_size=1, max_size=10).filter(str.strip)),
            "kind": draw(st.sampled_from(["internal", "server", "client"])), "start_ns": start,
            "end_ns": start + draw(st.integers(min_value=0, max_value=10**9)), "status_code": "ok",
            "service": "fuzz", "resource": {}, "attributes": {"i": i},
            "events": [{"name": "e", "time_ns": start, "attributes": {}}], "links": [],
        })
    return spans


def pack(payload, encoding: str) -> tuple[bytes, str]:
    """Encode a (possibly mutated) batch; what msgpack cannot carry goes as JSON."""
    if encoding != "json":
        try:
            data = msgpack.packb(payload, use_bin_type=True)
            return (zlib.compress(data, 1) if encoding == "msgpack+zlib" else data), encoding
        except (OverflowError, TypeError, ValueError, UnicodeEncodeError):
            pass
    return json.dumps(payload, default=repr).encode(), "json"


@st.composite
def mutated_entries(draw) -> tuple[dict, set[str]]:
    """A valid entry with one row value (or one event time) replaced; and the span ids left intact."""
    spans = draw(valid_spans())
    encoding = draw(st.sampled_from(["json", "msgpack", "msgpack+zlib"]))
    payload = json.loads(json.dumps(msgpack.unpackb(encode_span_dicts(spans)[b"data"])))
    rows = payload["spans"]
    hit = draw(st.integers(min_value=0, max_value=len(rows) - 1))
    where = draw(st.sampled_from(["field", "event time", "row", "resource index"]))
    if where == "field":
        rows[hit][draw(st.integers(min_value=0, max_value=13))] = draw(NASTY)
    elif where == "event time":
        rows[hit][11][0][1] = draw(NASTY)
    elif where == "row":
        rows[hit] = draw(NASTY)
    else:
        rows[hit][9] = draw(st.integers(min_value=-3, max_value=3))
    data, encoding = pack(payload, encoding)
    fields = {b"v": b"1", b"enc": encoding.encode(), b"n": str(len(rows)).encode(), b"data": data}
    return fields, {s["span_id"] for i, s in enumerate(spans) if i != hit}


@functools.lru_cache(maxsize=None)
def bomb(inflated: int = 1 << 30) -> bytes:
    """zlib data of ``inflated`` zero bytes (1 GiB compresses to about 1 MB)."""
    packer, chunk = zlib.compressobj(9), bytes(1 << 20)
    return b"".join([packer.compress(chunk) for _ in range(inflated >> 20)] + [packer.flush()])


BOMBS = st.sampled_from([
    {b"v": b"1", b"enc": b"msgpack+zlib", b"n": b"1", b"data": bomb()},
    {b"v": b"1", b"enc": b"msgpack+zlib", b"n": b"1", b"data": zlib.compress(b"\xdd\xff\xff\xff\xff" + bytes(1 << 20))},
])
HEADER_VALUES = st.one_of(st.binary(max_size=10), st.sampled_from(
    [b"1", b"\xff\xfe", b"9" * 5000, str(2**70).encode(), b"inf", b"json", b"msgpack", b"msgpack+zlib", b""]))
RANDOM_ENTRIES = st.dictionaries(
    st.one_of(st.sampled_from([b"v", b"enc", b"n", b"data"]), st.binary(min_size=1, max_size=6)),
    st.one_of(HEADER_VALUES, st.binary(max_size=64)), min_size=1, max_size=6)


@st.composite
def header_mutations(draw) -> dict:
    """A valid entry with one of its header fields (or its data) replaced or dropped, or a field added."""
    fields = dict(encode_span_dicts(draw(valid_spans()), draw(st.sampled_from(["json", "msgpack", "msgpack+zlib"]))))
    key = draw(st.sampled_from([b"v", b"enc", b"n", b"data", b"\xff\xfe"]))
    change = draw(st.sampled_from(["replace", "drop", "truncate"]))
    if change == "drop":
        fields.pop(key, None)
    elif change == "truncate" and key == b"data":
        fields[key] = fields[key][:draw(st.integers(min_value=0, max_value=len(fields[key])))]
    else:
        fields[key] = draw(HEADER_VALUES)
    return fields


ENTRIES = st.one_of(mutated_entries().map(lambda m: m[0]), header_mutations(), RANDOM_ENTRIES, BOMBS)


# --------------------------------------------------------------------------- the codec alone


@given(mutated_entries())
def test_decode_never_loses_a_valid_row(mutated):
    fields, intact = mutated
    decoded = decode_entry(fields)
    assert intact <= {s["span_id"] for s in decoded.spans}
    assert len(decoded.spans) + len(decoded.rejected) == int(fields[b"n"])
    assert len(decoded.rejected_rows) == len(decoded.rejected)


@given(st.one_of(header_mutations(), RANDOM_ENTRIES, BOMBS,
                 st.dictionaries(st.one_of(st.text(max_size=4), st.binary(max_size=4)), NASTY, max_size=5)))
def test_decode_raises_nothing_but_codec_error(fields):
    try:
        decode_entry(fields)
    except CodecError as exc:
        assert str(exc)


def test_compression_bomb_is_refused_before_it_inflates():
    fields = {b"v": b"1", b"enc": b"msgpack+zlib", b"n": b"1", b"data": bomb()}
    try:
        decode_entry(fields)
    except CodecError as exc:
        assert str(exc) == f"msgpack+zlib data inflates beyond {MAX_DECOMPRESSED_BYTES} bytes"
    else:
        raise AssertionError("a 1 GiB bomb was decoded")


# --------------------------------------------------------------------------- a real collector process


def expected_outcome(fields: dict) -> tuple[str | None, set[str]]:
    """What the collector must do with an entry as Redis holds it: the dead letter scope and the good span ids."""
    try:
        decoded = decode_entry(fields)
    except CodecError:
        return "entry", set()
    return ("spans" if decoded.rejected else None), {s["span_id"] for s in decoded.spans}


@settings(max_examples=PROCESS_EXAMPLES)
@given(st.lists(ENTRIES, min_size=4, max_size=16))
def test_collector_process_survives_generated_entries(client, sqlite_collectors, sqlite_engine, entries):
    if not sqlite_collectors.processes:
        sqlite_collectors.start()
    collector = sqlite_collectors.processes[0]
    valid = make_trace(20)
    ids = [client.xadd(STREAM, fields).decode() for fields in entries] + publish(client, [valid])
    sqlite_collectors.wait_until(
        lambda: consumed(client, STREAM, GROUP, ids[-1]),
        collector, timeout=180, message="every entry acknowledged")
    assert collector.poll() is None, sqlite_collectors.log(collector)
    stored, letters = stored_span_ids(sqlite_engine), dead_letters(client)
    assert {s["span_id"] for s in valid} <= stored, (letters.get(ids[-1]), sqlite_collectors.log(collector)[-4000:])
    for entry_id, fields in zip(ids, entries):  # all fields are bytes: Redis holds them as they were sent
        scope, good = expected_outcome(fields)
        letter = letters.get(entry_id)
        if scope == "entry":
            assert letter is not None and letter[b"scope"] == b"entry" and letter[b"reason"], entry_id
            continue
        refused = {row[1] for row in dead_lettered_rows(letter) if isinstance(row, list) and len(row) > 1
                   and isinstance(row[1], str)} if letter else set()
        assert good <= stored | refused, (entry_id, good - stored - refused)  # every valid span: stored or refused
        if scope == "spans":
            assert letter is not None and letter[b"scope"] == b"spans" and letter[b"reason"], entry_id
    assert peak_rss_bytes(collector.pid) < MEMORY_BOUND


def test_compression_bombs_leave_the_collector_small(client, sqlite_collectors, sqlite_engine):
    """A bomb of 1 GiB and one just under the cap: both handled, memory bounded, the valid entry stored."""
    under_cap = {b"v": b"1", b"enc": b"msgpack+zlib", b"n": b"1",
                 b"data": zlib.compress(msgpack.packb(bytes(MAX_DECOMPRESSED_BYTES - 64)), 9)}
    bombs = [client.xadd(STREAM, fields).decode() for fields in (
        {b"v": b"1", b"enc": b"msgpack+zlib", b"n": b"1", b"data": bomb()}, under_cap)]
    valid = make_trace(10)
    publish(client, [valid])
    collector = sqlite_collectors.start()
    sqlite_collectors.wait_until(lambda: pending(client) == 0 and client.xlen(f"{STREAM}:dead") == 2, collector,
                                 timeout=120, message="both bombs dead-lettered")
    letters = dead_letters(client)
    assert letters[bombs[0]][b"reason"] == f"msgpack+zlib data inflates beyond {MAX_DECOMPRESSED_BYTES} bytes".encode()
    assert letters[bombs[1]][b"reason"] == b"batch is not a mapping with a 'spans' list"
    sqlite_collectors.wait_until(lambda: {s["span_id"] for s in valid} <= stored_span_ids(sqlite_engine), collector,
                                 timeout=180, message="the valid entry stored")
    assert collector.poll() is None
    assert peak_rss_bytes(collector.pid) < MEMORY_BOUND  # measured: about 200 MB
