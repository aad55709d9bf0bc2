"""A block's bytes are a function of its spans and stay the bytes of FORMAT 1 as first written.

Stored blocks, trained dictionaries and every reader rely on the layout, so a
faster ``pack`` must give the very same bytes. The digests below are of the
blocks the first FORMAT 1 code packed from these generated traces (varied
shapes, the field shapes the finalizer meets, values only msgpack's
``default`` hook can pack); any change of a byte fails here.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading

import msgpack

from collector_worker.assembler import assemble
from collector_worker.storage import blocks

ODD_VALUES = [True, 0, -1, 2 ** 63 - 1, 2 ** 70, 1.5, float("inf"), "", "x" * 300, "ünï", [1, "a", None],
              {"nested": {"deep": [1, 2]}}, None, b"\x00\x01", frozenset({3}), (1, 2)]


def generated_trace(rnd: random.Random, number: int) -> list[dict]:
    trace_id = f"{rnd.getrandbits(128):032x}"
    n = rnd.choice([1, 2, 3, 10, 10, 40])
    ids = [f"{rnd.getrandbits(64):016x}" for _ in range(n)]
    if rnd.random() < 0.1:
        ids[rnd.randrange(n)] = rnd.choice(["not-hex", "ABCDEF0123456789", "12"])
    base = 1_700_000_000_000_000_000 + number * 1_000_000
    resources = [{"host.name": f"h{i}"} for i in range(rnd.randint(1, 3))] + ['{"host.name": "text"}', None]
    spans = []
    for i, span_id in enumerate(ids):
        start = base + rnd.randrange(10 ** 9)
        parent = None if i == 0 else rnd.choice([ids[(i - 1) // 3], ids[i - 1], ids[rnd.randrange(n)], "",
                                                 f"{rnd.getrandbits(64):016x}"])
        attributes = {"route": f"/r/{rnd.randrange(9)}", "n": rnd.randrange(1000)}
        if rnd.random() < 0.3:
            attributes["odd"] = rnd.choice(ODD_VALUES)
        spans.append({
            "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent,
            "service": rnd.choice(["a", "b", "", None]), "name": rnd.choice(["op", f"op-{i % 5}", "", None]),
            "kind": rnd.choice(["server", "client", "", None]), "start_ns": start,
            "end_ns": start + rnd.choice([0, rnd.randrange(10 ** 8)]),
            "status_code": rnd.choice(["ok", "error", "", None]), "status_message": rnd.choice([None, "", "boom"]),
            "attributes": attributes if rnd.random() < 0.9 else json.dumps(attributes, default=str),
            "events": rnd.choice([[], [{"name": "e", "time_ns": start + 5, "attributes": {}}], "[]", ""]),
            "links": rnd.choice([[], [{"trace_id": trace_id, "span_id": ids[0]}], None]),
            "resource": rnd.choice(resources), "scope": rnd.choice([None, "lib", ""]),
            "received_ns": rnd.choice([None, 0, base + 2 * 10 ** 9]),
        })
        if rnd.random() < 0.05:
            del spans[-1][rnd.choice(["scope", "received_ns", "status_message", "resource"])]
    return spans


def packed_digest(traces: int, seed: int) -> str:
    rnd = random.Random(seed)
    digest = hashlib.sha256()
    for number in range(traces):
        spans = generated_trace(rnd, number)
        a = assemble(spans)
        digest.update(blocks.pack(spans, a.depth, a.self_time_ns, a.critical_path))
    return digest.hexdigest()


def test_blocks_are_the_bytes_format_1_was_first_written_with():
    assert packed_digest(400, 1) == "94f29d995a831b81f67e5ddb5406a7f7c41a16a5a5843397c1641ba888f4d8d1"
    assert packed_digest(400, 2) == "de8939f321593e192d0e0e32d2c6cfc255fd6157ec215715ce297fa6ec2112c5"


def test_values_only_the_default_hook_packs_are_stored_as_json_would_and_the_next_block_is_whole():
    span = {"trace_id": "ab" * 16, "span_id": "00000000000000a1", "parent_span_id": None, "service": "s",
            "name": "op", "kind": "server", "start_ns": 10, "end_ns": 20, "status_code": "ok",
            "status_message": None, "attributes": {"set": {7}, "huge": 2 ** 70}, "events": [], "links": [],
            "resource": {}, "scope": None, "received_ns": 10}
    odd = blocks.pack([span], {}, {}, set())
    assert msgpack.unpackb(odd, raw=False)[14] == [{"set": [7], "huge": str(2 ** 70)}]
    plain = dict(span, attributes={"n": 1})
    assert msgpack.unpackb(blocks.pack([plain], {}, {}, set()), raw=False)[14] == [{"n": 1}]


def test_threads_packing_at_once_get_the_bytes_one_thread_gets():
    rnd = random.Random(3)
    traces = [generated_trace(rnd, n) for n in range(200)]
    assembled = [(spans, assemble(spans)) for spans in traces]
    expected = [blocks.pack(s, a.depth, a.self_time_ns, a.critical_path) for s, a in assembled]
    found: dict[int, list[bytes]] = {}

    def work(k: int) -> None:
        found[k] = [blocks.pack(s, a.depth, a.self_time_ns, a.critical_path) for s, a in assembled]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(found[k] == expected for k in range(4))


def test_text_that_is_not_json_reads_as_each_fields_empty_value_whatever_was_parsed_before():
    span = {"trace_id": "ab" * 16, "span_id": "00000000000000a2", "parent_span_id": None, "service": "s",
            "name": "op", "kind": "server", "start_ns": 10, "end_ns": 20, "status_code": "ok",
            "status_message": None, "attributes": "{broken", "events": "{broken", "links": "{broken",
            "resource": "{broken", "scope": None, "received_ns": 10}
    for _ in range(2):  # the second time the text's parse is cached
        (row,) = blocks.decode(blocks.encode([span], {}, {}, set()))
        assert (row["attributes"], row["events"], row["links"], row["resource"]) == ({}, [], [], {})
