"""Encode benchmark: CPU per span of the finalizer's encode step, this tree against a git ref, and their bytes.

Run ``python bench/bench_encode.py [--traces 2000] [--rounds 15] [--against main] [--check 20000]``.

The encode step (``FinalizedBatch.encode``) turns each assembled trace into
its search postings and its block: ``blocks.pack`` (columns, msgpack),
``blocks.compress`` (zstd; plainly until a dictionary is trained, then with
it) and ``search_keys.postings``. The traces are ``bench_collector``'s
(10 spans over 5 services, decoded from stream entries as the consumer
decodes them, ``received_ns`` set as staging sets it), assembled once.

Each figure is the CPU time (``time.process_time``) of one pass over every
trace, divided by the spans, for the code of ``--against`` (read with
``git show``) and this tree's alternated in the same process, each first every other round; the median of
``--rounds`` rounds is reported. ``--check`` traces of varied shapes (deep,
wide, missing and looping parents, errors, LLM spans, staging rows whose
fields are JSON text, block rows, odd attribute values) are packed and posted
by both, and every byte compared first: the run fails on any difference.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zstandard  # noqa: E402

from bench.bench_collector import make_entries  # noqa: E402
from collector_worker import finalizer  # noqa: E402
from collector_worker.assembler import assemble  # noqa: E402
from collector_worker.storage import blocks, search_keys  # noqa: E402
from tracer.codec import decode_entry  # noqa: E402


def module_at(ref: str, path: str, name: str):
    """The module ``path`` as it is at git ``ref``, loaded under ``name`` beside this tree's package."""
    source = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = path.rsplit("/", 1)[0].replace("/", ".")
    exec(compile(source, f"{ref}:{path}", "exec"), module.__dict__)
    return module


def encode_at(ref: str, old_blocks, old_search_keys):
    """``FinalizedBatch.encode`` as it is at ``ref``, calling that ref's ``blocks`` and ``search_keys``."""
    source = subprocess.run(["git", "show", f"{ref}:collector_worker/finalizer.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "FinalizedBatch":
            method = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "encode")
            namespace = {"blocks": old_blocks, "search_keys": old_search_keys, "Any": object}
            exec(textwrap.dedent(ast.get_source_segment(source, method)), namespace)
            return namespace["encode"]
    raise LookupError(f"no FinalizedBatch.encode at {ref}")


def bench_traces(count: int) -> list[tuple[str, list[dict], object]]:
    """``count`` traces of ``bench_collector``'s shape as the finalizer holds them, assembled."""
    by_trace: dict[str, list[dict]] = defaultdict(list)
    received = time.time_ns()
    for entry in make_entries(count * 10):
        for span in decode_entry(entry).spans:
            span["received_ns"] = received
            by_trace[span["trace_id"]].append(span)
    return [(trace_id, spans, assemble(spans)) for trace_id, spans in by_trace.items()]


ODD_VALUES = [True, False, 0, -1, 2 ** 63 - 1, 2 ** 70, 1.5, float("inf"), "", "x" * 300, "nul\x00in", "ünï",
              [1, "a", None], {"nested": {"deep": [1, 2]}}, None, b"\x00\x01", frozenset({3}), (1, 2)]


def varied_trace(rnd: random.Random, number: int) -> list[dict]:
    """One trace of a random shape, its spans in the shapes the finalizer meets (decoded, staged as JSON
    text, read back from a block), with the odd values a span may carry."""
    trace_id = f"{rnd.getrandbits(128):032x}"
    n = rnd.choice([1, 1, 2, 3, 5, 10, 10, 10, 20, 50, 200])
    shape = rnd.choice(["chain", "wide", "tree", "random"])
    ids = [f"{rnd.getrandbits(64):016x}" for _ in range(n)]
    if rnd.random() < 0.05:
        ids[rnd.randrange(n)] = rnd.choice(["not-hex", "ABCDEF0123456789", "12"])
    base = 1_700_000_000_000_000_000 + number * 1_000_000
    resources = [{"host.name": f"h{i}", "service.version": "1.0"} for i in range(rnd.randint(1, 3))]
    resources.append(json.dumps(resources[0]))
    out = []
    for i, span_id in enumerate(ids):
        if i == 0:
            parent = None if rnd.random() < 0.9 else rnd.choice(["", f"{rnd.getrandbits(64):016x}"])
        elif shape == "chain":
            parent = ids[i - 1]
        elif shape == "wide":
            parent = ids[0]
        elif shape == "tree":
            parent = ids[(i - 1) // 3]
        else:
            parent = rnd.choice([ids[rnd.randrange(n)], None, f"{rnd.getrandbits(64):016x}", ""])
        start = base + rnd.randrange(0, 10 ** 9)
        attributes = {"http.route": f"/r/{rnd.randrange(20)}", "n": rnd.randrange(1000)}
        if rnd.random() < 0.3:
            attributes.update({"gen_ai.request.model": rnd.choice(["m-1", "m-2"]), "gen_ai.usage.input_tokens": 12})
        if rnd.random() < 0.2:
            attributes[rnd.choice(["odd", "k", ""])] = rnd.choice(ODD_VALUES)
        span = {
            "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent,
            "service": rnd.choice(["a", "b", "c", "", None, "svc-" + "s" * rnd.choice([1, 300])]),
            "name": rnd.choice(["op", f"op-{i % 7}", "", None, "GET /x"]),
            "kind": rnd.choice(["server", "client", "internal", "", None]),
            "start_ns": start, "end_ns": start + rnd.choice([0, 1, rnd.randrange(10 ** 8)]),
            "status_code": rnd.choice(["ok", "unset", "error", None, ""]),
            "status_message": rnd.choice([None, None, "", "boom"]),
            "attributes": attributes,
            "events": rnd.choice([[], [], [{"name": "e", "time_ns": start + 5, "attributes": {}}]]),
            "links": rnd.choice([[], [], [{"trace_id": trace_id, "span_id": ids[0], "attributes": {"w": 1}}]]),
            "resource": rnd.choice(resources + [None]),
            "scope": rnd.choice([None, None, "lib", ""]),
            "received_ns": rnd.choice([None, 0, base + 2 * 10 ** 9, base + 3 * 10 ** 9]),
        }
        if rnd.random() < 0.1:  # a staging row: JSON text fields
            for key in ("attributes", "events", "links"):
                span[key] = rnd.choice([json.dumps(span[key], default=str), "", "{}", "[]", f"no {key} json", None])
        if rnd.random() < 0.05:
            del span[rnd.choice(["scope", "received_ns", "status_message", "resource", "links"])]
        out.append(span)
    if rnd.random() < 0.1 and out:  # a trace finalized before: block rows beside staged spans
        block_rows = blocks.decode(blocks.encode(out[: n // 2 + 1], {}, {}, set()))
        out = block_rows + out[n // 2 + 1:]
    return out


def check(count: int, old_blocks, old_search_keys, seed: int = 7) -> int:
    """Pack, compress and post ``count`` varied traces with both versions; raise on any difference."""
    rnd = random.Random(seed)
    names: dict[str, int] = {}
    for number in range(count):
        spans = varied_trace(rnd, number)
        a = assemble(spans)
        old = old_blocks.pack(spans, a.depth, a.self_time_ns, a.critical_path)
        new = blocks.pack(spans, a.depth, a.self_time_ns, a.critical_path)
        if old != new:
            raise AssertionError(f"block {number} differs")
        if old_blocks.compress(old) != blocks.compress(new):
            raise AssertionError(f"compressed block {number} differs")
        tags = search_keys.search_tags(a)
        if tags != old_search_keys.search_tags(a):
            raise AssertionError(f"search tags of trace {number} differ")
        for name in search_keys.names_in(a.operations, tags):
            names.setdefault(name, len(names) + 1)
        if search_keys.postings(a.operations, tags, names) != old_search_keys.postings(a.operations, tags, names):
            raise AssertionError(f"postings of trace {number} differ")
    return count


def median_us(timings: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(values), 3) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--against", default="main", help="the git ref the code is compared with")
    parser.add_argument("--check", type=int, default=20000, help="varied traces compared byte for byte first")
    args = parser.parse_args()

    old_blocks = module_at(args.against, "collector_worker/storage/blocks.py", "_old_blocks")
    old_search_keys = module_at(args.against, "collector_worker/storage/search_keys.py", "_old_search_keys")
    old_encode = encode_at(args.against, old_blocks, old_search_keys)
    checked = check(args.check, old_blocks, old_search_keys) if args.check else 0

    traces = bench_traces(args.traces)
    spans = sum(len(s) for _, s, _ in traces)
    ids: dict[str, int] = {}
    for _, _, a in traces:
        for name in sorted(search_keys.names_in(a.operations, search_keys.search_tags(a))):
            ids.setdefault(name, len(ids) + 1)
    bodies = [blocks.pack(s, a.depth, a.self_time_ns, a.critical_path) for _, s, a in traces]
    dictionary = zstandard.ZstdCompressionDict(
        zstandard.train_dictionary(32 * 1024, bodies[:1000], level=blocks.LEVEL).as_bytes())
    tags = [search_keys.search_tags(a) for _, _, a in traces]

    def batch(dictionary_used):
        b = finalizer.FinalizedBatch()
        b.assembled, b.tags_of, b.postings, b.blocks = list(traces), {}, {}, {}
        b.dictionary, b.samples = dictionary_used, []
        return b

    versions = {"old": (old_blocks, old_search_keys, old_encode),
                "new": (blocks, search_keys, finalizer.FinalizedBatch.encode)}
    steps = {
        "pack": lambda m, k, e: [m.pack(s, a.depth, a.self_time_ns, a.critical_path) for _, s, a in traces],
        "compress (no dictionary)": lambda m, k, e: [m.compress(b) for b in bodies],
        "compress (dictionary)": lambda m, k, e: [m.compress(b, dictionary) for b in bodies],
        "postings": lambda m, k, e: [k.postings(a.operations, t, ids) for (_, _, a), t in zip(traces, tags)],
        "encode (dictionary)": lambda m, k, e: e(batch(dictionary), ids),
    }
    for name, (m, k, e) in versions.items():  # every step once before timing (caches, the dictionary loaded)
        for step in steps.values():
            step(m, k, e)
    timings: dict[str, dict[str, list[float]]] = {step: {"old": [], "new": []} for step in steps}
    for round_no in range(args.rounds):
        for step_name, step in steps.items():
            order = list(versions.items()) if round_no % 2 == 0 else list(versions.items())[::-1]
            for name, (m, k, e) in order:  # each goes first every other round: the second finds warm caches
                started = time.process_time()
                step(m, k, e)
                timings[step_name][name].append((time.process_time() - started) / spans * 1e6)
    print(f"{len(traces)} traces, {spans} spans; {checked} varied traces identical to {args.against}; "
          f"CPU µs per span, median of {args.rounds} rounds ({args.against} / this tree):")
    for step_name, found in timings.items():
        medians = median_us(found)
        print(f"  {step_name:<26} {medians['old']:>7.3f} {medians['new']:>7.3f}  "
              f"({medians['new'] / medians['old']:.2f}x)")


if __name__ == "__main__":
    main()
