"""Ingest of varied spans by two versions of the code, compared: admission, grouping, staging and statistics.

Run ``python bench/ingest_equivalence.py --old DIR [--spans 30000] [--seed 1]`` with DIR a checkout of
the code to compare with. Each version runs in a child process on the same generated entries (odd
types, long text, NULs, bad times, LLM spans, attributes JSON would change, spans and entries sent
twice) and the steps the consumer takes after decoding (``admit_span``, ``StreamConsumer._prepare``,
``store_spans`` in one transaction per batch, the statistics it writes), then dumps everything they
produced: admitted spans and reasons, admission counters, the grouped and staged spans, the spans each
store returned and the rows it handed the recent-span cache, and every row of the tables written. The
dumps must be equal, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_796_000_000 * 10**9
EARLIEST_NS = 946_684_800 * 10**9


class Odd:
    """An attribute value neither JSON nor msgpack knows (its string form is stored)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Odd({self.n})"

    __str__ = __repr__


class Name(str):
    """A str subclass (spans built by code rather than decoded)."""


class Attributes(dict):
    """A dict subclass (spans built by code rather than decoded)."""


def _pick(rng: random.Random, odd: float, plain: list, unusual: list) -> object:
    """One of ``unusual`` with probability ``odd``, else one of ``plain``."""
    return rng.choice(unusual if rng.random() < odd else plain)


def _value(rng: random.Random, odd: float) -> object:
    return _pick(rng, odd, ["v", 7, 1.5, True, -3, 0.0, "", False, "ünï"], [
        None, [1, "a"], {"k": "v"}, b"bytes", 2**70, float("inf"), "\x00", "s" * 17000, [["nested"]],
        {"d": {"e": 1}}, float("nan")])


def _attributes(rng: random.Random, odd: float) -> dict:
    attrs: dict = {"http.route": f"/r/{rng.randrange(5)}", "n": rng.randrange(100)}
    shape = rng.random()
    if shape < 0.3:
        return attrs
    if shape < 0.5:
        attrs.update({f"k{i}": _value(rng, odd) for i in range(rng.randrange(1, 6))})
    elif shape < 0.7:  # an LLM span, in one of the conventions admission maps
        attrs.update(_pick(rng, odd, [
            {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": rng.randrange(1, 900),
             "gen_ai.usage.output_tokens": rng.randrange(1, 300), "user.id": "u1"},
            {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude", "gen_ai.agent.name": "agent"},
            {"gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 7, "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.cache_read.input_tokens": 2},
        ], [
            {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 3, "user.id": "u\x002"},
            {"openinference.span.kind": "LLM", "llm.model_name": "m", "llm.token_count.prompt": 12,
             "llm.token_count.completion": 5, "llm.token_count.total": 17},
            {"gen_ai.system": "openai", "llm.request.type": "chat", "gen_ai.prompt.0.content": "hi",
             "gen_ai.completion.0.content": "hello", "gen_ai.usage.prompt_tokens": 3},
            {"gen_ai.usage.input_tokens": rng.choice(["abc", -5, 1e30, "12", 2.5, None, True]),
             "gen_ai.usage.total_tokens": rng.choice([10, "x", float("nan")])},
            {"gen_ai.conversation.id": "c1", "gen_ai.usage.cache_read.input_tokens": 4,
             "gen_ai.usage.output_tokens": 9, "gen_ai.response.model": "gpt-4o"},
        ]))
    elif shape < 0.9 or rng.random() >= odd:
        attrs.update({"price": rng.random(), "flag": rng.random() < 0.5})
    else:
        attrs.update(rng.choice([{f"many{i}": i for i in range(140)}, {"long": "L" * 20000}, {7: "int key"}]))
    return attrs


def _row(rng: random.Random, trace_id: str, span_id: str, parent: str | None, resource_index: int,
         odd: float) -> list:
    start = NOW - rng.randrange(1, 40 * 86400 * 10**9)
    end = start + rng.randrange(0, 10**9)
    if rng.random() < odd:
        start, end = rng.choice([
            (900_000_000 * 10**9, end),  # before 2000
            (NOW + 2 * 3600 * 10**9, NOW + 3 * 3600 * 10**9),  # ahead of the clock
            (start, start + 8 * 86400 * 10**9),  # longer than a week
            (start, NOW + 5 * 3600 * 10**9)])  # ending ahead of the clock
    events = []
    if rng.random() < 0.3:
        events = [[_pick(rng, odd, ["cache.miss", "exception"], ["e" * 17000, "n\x00"]), start + i,
                   _pick(rng, odd, [{}, {"exception.message": "boom"}], [{"v": _value(rng, 1)}])]
                  for i in range(_pick(rng, odd, [1, 2, 3], [130]))]
    links = []
    if rng.random() < 0.1:
        links = [[f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}",
                  _pick(rng, odd, [{}, {"l": 1}], [{"l": [1]}])]
                 for _ in range(_pick(rng, odd, [1, 2], [130]))]
    message = _pick(rng, odd, [None, None, "failed"], ["", "m\x00", "M" * 17000])
    scope = _pick(rng, odd, [None, "lib", "contrail"], ["s" * 300, "a\x00"])
    name = _pick(rng, odd, ["GET /a", "ünï \u2028", "plain", "q" * 300], ["x" * 600, "n" * 20000, "a\x00b"])
    kind = rng.choice(["server", "client", "internal", "producer", "consumer"])
    status = rng.choice(["ok", "ok", "unset", "error"])
    return [trace_id, span_id, parent, name, kind, start, end, status, message, resource_index,
            _attributes(rng, odd), events, links, scope]


def _one_odd(rng: random.Random, row: list) -> list[tuple[int, object]]:
    """Single changes that make a usual span row unusual, at the bounds of each rule and past them."""
    start, week, hour = row[5], 7 * 86400 * 10**9, 3600 * 10**9
    long_text = rng.choice([16384, 16385, 512, 513, 255, 256, 20000])
    attrs = dict(row[10])
    attrs[rng.choice(["long", "n"])] = rng.choice(["x" * long_text, None, b"b", [1], {"a": 1}, 2**64, "\x00"])
    return [
        (5, (EARLIEST_NS, EARLIEST_NS + 5)), (5, (EARLIEST_NS - 1, EARLIEST_NS + 5)), (5, (start, start + week)),
        (5, (start, start + week + 1)), (3, "n" * long_text), (3, "a\x00"), (8, "m" * long_text), (8, "\x00"),
        (8, ""), (13, "s" * long_text), (13, "\x00"), (13, ""), (10, attrs), (10, {**row[10], 7: "int key"}),
        (10, {f"a{i}": i for i in range(rng.choice([128, 129]))}),
        (6, start + week), (6, start + week + 1), (6, NOW + hour), (6, NOW + hour + 1), (6, start - 1),
        (11, [["e" * long_text, start, {}]]), (11, [["e", start, {"v": None}]]), (11, [["e", start, {}]] * 129),
        (11, [["e", start, {"v": "x" * long_text}]]), (12, [["1" * 32, "2" * 16, {"l": [1]}]]),
        (12, [["1" * 32, "2" * 16, {}]] * 129), (12, [["1" * 32, "2" * 16, {"v": "\x00"}]]),
    ]


def make_entries(total: int, seed: int) -> list[tuple[str, dict]]:
    """(entry id, encoded fields) of about ``total`` spans, some entries and spans sent twice: a fifth of the
    entries hold only usual spans, three fifths one unusual span among usual ones, a fifth many unusual spans."""
    from tracer.codec import encode_batch

    rng = random.Random(seed)
    entries: list[tuple[str, dict]] = []
    made = 0
    sent: list[list] = []
    while made < total:
        mix = rng.choice(["usual", "one", "one", "one", "many"])
        odd = {"usual": 0.0, "one": 0.0, "many": 0.15}[mix]
        resources = [[_pick(rng, odd, ["svc", "api", "llm-agent"], ["s" * 300, "a\x00b"]),
                      _pick(rng, odd, [{"host.name": "h1"}, {"host.name": "h2", "v": 1.5}, {}],
                            [{"b": [1, 2]}, {"x": None}])] for _ in range(rng.randrange(1, 4))]
        rows = []
        for _ in range(rng.randrange(1, 6)):  # traces
            trace_id = f"{rng.getrandbits(128):032x}"
            ids = [f"{rng.getrandbits(64):016x}" for _ in range(rng.choice([1, 3, 10, 10, 40]))]
            for i, span_id in enumerate(ids):
                parent = None if i == 0 else rng.choice([ids[(i - 1) // 3], f"{rng.getrandbits(64):016x}"])
                rows.append(_row(rng, trace_id, span_id, parent, rng.randrange(len(resources)), odd))
        if mix == "one":  # one usual span with one unusual field
            row = rows[rng.randrange(len(rows))]
            field, value = rng.choice(_one_odd(rng, row))
            if field == 5:  # start and end
                row[5], row[6] = value
            else:
                row[field] = value
        if sent and rng.random() < 0.2:  # spans sent again in a later entry (a tracer's spool replayed)
            rows.extend(rng.sample(sent, min(len(sent), rng.randrange(1, 20))))
        if rows and rng.random() < 0.1:
            rows.append(list(rows[0]))  # a span twice in one entry
        sent.extend(rows[-50:])
        sent = sent[-500:]
        entry_id = f"{1000 + len(entries)}-0"
        entries.append((entry_id, encode_batch(rows, [tuple(r) for r in resources])))
        made += len(rows)
        if rng.random() < 0.05:  # the same entry delivered again
            entries.append(entries[-1])
    return entries


def built_entries(seed: int) -> list[list[dict]]:
    """Spans built by code (never through the codec), in entries of usual spans with one unusual field or
    many: types and values the codec cannot carry."""
    rng = random.Random(seed + 1)
    base = {"parent_span_id": None, "name": "op", "kind": "server", "start_ns": NOW - 10**9, "end_ns": NOW - 10**8,
            "status_code": "ok", "status_message": None, "service": "svc", "resource": {"host.name": "h"},
            "attributes": {"k": "v"}, "events": [], "links": [], "scope": None}
    variants = [
        {"attributes": {"t": (1, 2), "s": {1}}}, {"attributes": {"o": Odd(1)}}, {"attributes": None},
        {"attributes": Attributes(a=1)}, {"name": Name("sub")}, {"service": 3}, {"service": None},
        {"service": ""}, {"service": Name("svc")}, {"resource": None}, {"resource": {"o": Odd(2)}},
        {"events": None}, {"links": ()}, {"depth": 2}, {"kind": None}, {"kind": ""}, {"status_code": ""},
        {"scope": 5}, {"scope": ""}, {"status_message": ""}, {"status_message": "m"}, {"status_message": 3},
        {"events": [{"name": "e", "time_ns": 1}]}, {"events": [{"name": "e", "time_ns": 1.0, "attributes": {}}]},
        {"links": [{"trace_id": "1" * 32, "span_id": "1" * 16, "attributes": {"b": b"x"}}]},
        {"attributes": {"k": "v" * 20000}}, {"events": [{"name": "e", "time_ns": 1, "attributes": {"s": {2}}}]},
        {"start_ns": 1.5}, {"end_ns": None}, {"name": "x\x00" * 300}, {"name": 5}, {"name": ""},
        {"resource": {"b": b"x"}}, {"attributes": {"k": None}}, {"events": ({"name": "e", "time_ns": 1,
                                                                            "attributes": {}},)},
    ]
    entries = []
    for e in range(300):
        trace = f"{rng.getrandbits(128):032x}"
        spans = []
        for i in range(rng.choice([1, 10, 30])):
            span = dict(base, trace_id=trace if i % 7 else f"{rng.getrandbits(128):032x}",
                        span_id=f"{e:08x}{i:08x}")
            spans.append(span)
        for span in rng.sample(spans, rng.choice([0, 1, 1, len(spans)])):
            span.update(rng.choice(variants))
            if rng.random() < 0.05:
                del span["scope"]
        entries.append(spans)
    return entries


def run(total: int, seed: int, out_path: str) -> None:
    """The steps after decoding in this tree, everything they produced written to ``out_path``."""
    from collector_worker import finalizer, validation
    from collector_worker.consumer import Entry, StreamConsumer
    from collector_worker.storage import open_engine, writer
    from tracer.codec import decode_entry
    from tracer.limits import SpanLimits

    rng = random.Random(seed + 2)
    lines: list[str] = []

    def put(line: str) -> None:  # long lines as a prefix and a digest of the whole (memory stays small)
        if len(line) > 400:
            line = f"{line[:300]} ... {hashlib.sha256(line.encode('utf-8', 'surrogatepass')).hexdigest()}"
        lines.append(line)

    limits = SpanLimits()
    decoded: list[Entry] = []
    for entry_id, fields in make_entries(total, seed):
        entry = Entry(entry_id, fields)
        try:
            spans = decode_entry(fields).spans
        except Exception as exc:  # noqa: BLE001 - recorded and compared
            put(f"decode {entry_id} {exc!r}")
            continue
        entry.spans = spans
        decoded.append(entry)
    for i, spans in enumerate(built_entries(seed)):
        decoded.insert(rng.randrange(len(decoded)), Entry(f"9{i}-0", None, spans=spans))
    index: dict[int, int] = {}
    kept: list[Entry] = []
    for entry in decoded:
        spans = []
        for span in entry.spans:
            try:
                reason = validation.admit_span(span, limits, NOW)
            except Exception as exc:  # noqa: BLE001
                reason = f"raised {exc!r}"
            put(f"admit {entry.id} {reason!r} {span!r}")
            if not reason:
                index[id(span)] = len(index)
                spans.append(span)
        kept.append(Entry(entry.id, None, spans=spans))
    put(f"counters {validation.counters()!r}")

    def name(span: dict) -> str:
        return f"#{index[id(span)]}" if id(span) in index else repr(span)

    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(f"sqlite:///{tmp}/eq.db")
        position = 0
        while position < len(kept):
            size = rng.choice([1, 2, 3, 8])
            batch, ahead = kept[position:position + size], kept[position + size:position + size + rng.choice([0, 0, 2])]
            position += len(batch) + len(ahead)
            limit = rng.choice([None, 50000, 25, 5])
            received = NOW + position
            parts = [StreamConsumer._prepare(batch, received)]
            if ahead:
                parts.append(StreamConsumer._prepare(ahead, received + 1))
            for part_spans, _, prepared, figures in parts:
                put(f"keys {prepared.keys!r}")
                put(f"by_key {[(k, name(v)) for k, v in prepared.by_key.items()]!r}")
                put(f"groups {[(k, [name(s) for s in g]) for k, g in prepared.groups.items()]!r}")
                put(f"figures {sorted(figures.acc.stats.items())!r} {sorted(figures.acc.hist.items())!r}")
                usage = [{k: (v.hex() if isinstance(v, float) else v) for k, v in r.items()} for r in figures.usage]
                put(f"usage {usage!r}")
            stored_rows: list = []
            try:
                with engine.begin() as conn:
                    for part_spans, part_ns, prepared, figures in parts:
                        new = writer.store_spans(conn, part_spans, part_ns, prepared=prepared, stored_rows=stored_rows,
                                                 trace_span_limit=limit)
                        if len(new) == len(prepared.keys):
                            figures.write(conn)
                        else:
                            finalizer.on_spans_stored(conn, new)
                        put(f"new {[name(s) for s in new]!r}")
            except Exception as exc:  # noqa: BLE001
                put(f"store raised {type(exc).__name__}: {exc}")
            put(f"stored_rows {[(t, b, [name(s) for s in g], n) for t, b, g, n in stored_rows]!r}")
            put(f"dropped {writer.dropped_over_limit!r}")
        with engine.connect() as conn:
            for table in ("spans", "pending_traces", "stats", "stats_histogram", "llm_usage"):
                rows = conn.exec_driver_sql(f"SELECT * FROM {table}").fetchall()
                for row in sorted(rows, key=repr):
                    put(f"{table} {tuple(v.hex() if isinstance(v, float) else v for v in row)!r}")
        engine.dispose()
    with open(out_path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=False, help="directory holding the code to compare with")
    parser.add_argument("--spans", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run(args.spans, args.seed, args.child)
        return
    outs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, tree in (("old", args.old), ("new", str(ROOT))):
            out = f"{tmp}/{name}.txt"
            subprocess.run([sys.executable, str(ROOT / "bench" / "ingest_equivalence.py"), "--spans", str(args.spans),
                            "--seed", str(args.seed), "--child", out], env=dict(os.environ, PYTHONPATH=tree),
                           check=True)
            outs[name] = Path(out).read_text(encoding="utf-8", errors="surrogatepass").splitlines()
    old, new = outs["old"], outs["new"]
    kinds = {}
    for line in new:
        kinds[line.split(" ", 1)[0]] = kinds.get(line.split(" ", 1)[0], 0) + 1
    print(json.dumps({"lines": len(new), "by_kind": kinds,
                      "digest_old": hashlib.sha256("\n".join(old).encode("utf-8", "surrogatepass")).hexdigest()[:16],
                      "digest_new": hashlib.sha256("\n".join(new).encode("utf-8", "surrogatepass")).hexdigest()[:16]}))
    if old != new:
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                print(f"first difference at line {i}:\nold: {a[:2000]}\nnew: {b[:2000]}")
                break
        else:
            print(f"one output is longer: old {len(old)} lines, new {len(new)} lines")
        sys.exit(1)
    print("identical")


if __name__ == "__main__":
    main()
