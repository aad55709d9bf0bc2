"""Varied generated traces for checking that the assembly, edge, usage and statistics code keeps its results.

Each trace is a list of span dicts in the shapes the finalizer is given: the codec's decoded spans, staged
rows (JSON text for attributes and resource) and spans read back from a block (holding ``depth``, as on a
re-finalization with late spans). Shapes: the benchmark's HTTP traces, deep chains, wide fan-outs, missing
parents, duplicate ids, self parents and parent loops, cross-host clock skew, messaging (producer/consumer),
errors, LLM calls with every usage-key variant and odd values, and odd attribute keys and values.
"""

from __future__ import annotations

import json
import random
from typing import Any

MS = 1_000_000
BASE = 1_700_000_000_000_000_000
SERVICES = ("gateway", "orders", "payments", "inventory", "llm-agent", "", None, 7, "svc\x00nul")
KINDS = ("server", "client", "internal", "producer", "consumer", None, "weird", "")
STATUSES = ("ok", "unset", "error", None, "ERROR")
LLM_MODELS = ("gpt-4o-mini", "gpt-4o-2024-08-06", "claude-3-5-haiku", "unknown-model", "", None, 5, "m\x00x",
              "x" * 300)
TOKEN_VALUES = (120, 0, -3, 10**9, 10**9 + 1, 3.7, "42", "4.5e2", "inf", "nan", "abc", True, None, "", 1e30,
                float("nan"), [1], 2**70)


class _Text(str):
    """A str subclass (equal to the plain string, but not of its type)."""


def _id(rng: random.Random) -> str:
    return "%016x" % rng.getrandbits(64)


def _odd_value(rng: random.Random) -> Any:
    return rng.choice([
        "v", "", "x" * 255, "y" * 256, "a\x00b", 0, 1, -1, 2**63, 10**300, 1.5, float("nan"), float("inf"),
        -0.0, True, False, None, [1, 2], {"n": 1}, ["a"], 3.0, "GET", 200, "10.0.0.7",
    ])


def _odd_key(rng: random.Random) -> Any:
    return rng.choice(["k", "", "k\x00", "z" * 256, "http.method", "messaging.system", "rpc.system", "url.full",
                       "celery.task", "gen_ai.usage.input_tokens", "user.id", "n" + str(rng.randrange(50)),
                       "http.route", "db.system"])


def _attributes(rng: random.Random, service: Any, llm: bool, odd: bool) -> Any:
    attrs: dict[Any, Any] = {"http.request.method": "GET", "http.route": f"/api/v1/items/{rng.randrange(7)}",
                             "http.response.status_code": rng.choice((200, 404, 500)), "net.peer.name": "10.0.0.7"}
    shape = rng.random()
    if shape < 0.1:
        attrs = {}
    elif shape < 0.2:
        attrs = {"messaging.system": "redis", "celery.task_name": "t"}
    elif shape < 0.27:
        attrs = {"rpc.system": "grpc", "rpc.method": "Get"}
    elif shape < 0.32:
        attrs = {"url.full": "http://x/y", "db.system": "postgresql", "db.statement": "SELECT 1"}
    if llm:
        attrs.update(_llm_attributes(rng))
    if odd:
        for _ in range(rng.randrange(1, 6)):
            attrs[_odd_key(rng)] = _odd_value(rng)
        if rng.random() < 0.2:
            attrs[rng.choice([3, 2.5, True])] = "non-str key"
    return attrs


def _llm_attributes(rng: random.Random) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    family = rng.randrange(4)
    if family == 0:
        keys = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.total_tokens",
                "gen_ai.usage.cache_read.input_tokens")
    elif family == 1:
        keys = ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens", "gen_ai.usage.total_tokens",
                "gen_ai.usage.cache_read_input_tokens")
    elif family == 2:
        keys = ("llm.token_count.prompt", "llm.token_count.completion", "llm.token_count.total",
                "llm.token_count.prompt_details.cache_read")
    else:
        keys = ()
    for key in keys:
        if rng.random() < 0.7:
            attrs[key] = 120 if rng.random() < 0.6 else rng.choice(TOKEN_VALUES)
    if rng.random() < 0.5:
        attrs["gen_ai.operation.name"] = rng.choice(("chat", "CHAT", "embeddings", "tool", "", None, 3))
    if rng.random() < 0.2:
        attrs["openinference.span.kind"] = rng.choice(("LLM", "llm", "CHAIN", None))
    for key in rng.sample(("gen_ai.response.model", "gen_ai.request.model", "llm.model_name"), rng.randrange(3)):
        attrs[key] = rng.choice(LLM_MODELS)
    for key in rng.sample(("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"), rng.randrange(2)):
        attrs[key] = rng.choice(("openai", "anthropic", "", 1))
    if rng.random() < 0.3:
        attrs[rng.choice(("user.id", "enduser.id"))] = rng.choice(("u1", "u2", "", 42, "u\x00"))
    if rng.random() < 0.3:
        attrs["gen_ai.agent.name"] = rng.choice(("planner", "", None))
    return attrs


def _resource(rng: random.Random, hosts: list[Any]) -> Any:
    shape = rng.random()
    host = rng.choice(hosts)
    if shape < 0.6:
        return {"service.version": "1.4.2", "host.name": host}
    if shape < 0.7:
        return {"host.id": host}
    if shape < 0.8:
        return json.dumps({"host.name": host})
    if shape < 0.85:
        return "{not json"
    if shape < 0.9:
        return None
    if shape < 0.95:
        return {}
    return "[1, 2]"


def _span(rng: random.Random, trace_id: str, span_id: str, parent: Any, start: int, end: int, *, service: Any,
          kind: Any, name: Any, llm: bool, odd: bool, hosts: list[Any]) -> dict[str, Any]:
    return {
        "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name, "kind": kind,
        "start_ns": start, "end_ns": end, "status_code": rng.choice(STATUSES) if rng.random() < 0.3 else "ok",
        "status_message": None, "service": service, "resource": _resource(rng, hosts),
        "attributes": _attributes(rng, service, llm, odd), "events": [], "links": [], "scope": None,
    }


def _tree(rng: random.Random, n: int, shape: str) -> list[int]:
    """Parent index of each of ``n`` spans (-1 for the root)."""
    if shape == "deep":
        return [-1] + list(range(n - 1))
    if shape == "wide":
        return [-1] + [0] * (n - 1)
    if shape == "bench":
        return [-1] + [(i - 1) // 3 for i in range(1, n)]
    return [-1] + [rng.randrange(i) for i in range(1, n)]


def varied_trace(rng: random.Random, broken: bool = True) -> list[dict[str, Any]]:
    """One trace of a random shape (see the module docstring); ``broken``: also spans without an end."""
    trace_id = "%032x" % rng.getrandbits(128)
    shape = rng.choice(("bench", "bench", "bench", "random", "random", "deep", "wide"))
    n = rng.choice((1, 2, 3, 5, 10, 10, 10, 20, 50)) if rng.random() < 0.95 else rng.randrange(100, 400)
    parents = _tree(rng, n, shape)
    ids = [_id(rng) for _ in range(n)]
    odd = rng.random() < 0.15
    llm_share = rng.choice((0.0, 0.0, 0.2, 0.5, 1.0))
    hosts = rng.sample(["host-0", "host-1", "host-2", 5, ""], rng.randrange(1, 4))
    skew = rng.random() < 0.15
    start = BASE + rng.randrange(10**13)
    spans = []
    starts, ends = [0] * n, [0] * n
    for i in range(n):
        p = parents[i]
        if p < 0:
            s, e = start, start + rng.randrange(1, 500) * MS
        else:
            ps, pe = starts[p], ends[p]
            s = ps + rng.randrange(0, max(1, pe - ps + 1))
            e = s + rng.randrange(0, max(1, pe - s + 1))
            if rng.random() < 0.1:  # outlives its parent
                e = pe + rng.randrange(1, 5 * MS)
            if skew and rng.random() < 0.3:
                s -= rng.randrange(0, 20 * MS)
        if rng.random() < 0.03:
            e = s - rng.randrange(1, 5 * MS)  # ends before it starts
        starts[i], ends[i] = s, max(e, s)
        service = rng.choice(SERVICES) if (odd and rng.random() < 0.3) else rng.choice(SERVICES[:5])
        if shape == "bench":
            service = SERVICES[0] if i == 0 else SERVICES[1 + i % 4]
        kind = rng.choice(KINDS) if odd else ("server" if p < 0 else rng.choice(KINDS[:5]))
        name = (rng.choice(("GET /x", "step-1", "", None, 3, "n\x00", "q" * 600)) if odd
                else f"step-{rng.randrange(6)}")
        llm = rng.random() < llm_share
        spans.append(_span(rng, trace_id, ids[i], None if p < 0 else ids[p], s, e, service=service, kind=kind,
                           name=name, llm=llm, odd=odd, hosts=hosts))
    _garble(rng, spans, ids, broken)
    return spans


def _garble(rng: random.Random, spans: list[dict[str, Any]], ids: list[str], broken: bool) -> None:
    """Missing parents, duplicates, loops, odd field values, staged-row and block shapes, in place."""
    n = len(spans)
    if rng.random() < 0.1 and n > 1:  # a parent never arrived
        del spans[rng.randrange(1, n) if rng.random() < 0.7 else 0]
    if rng.random() < 0.05 and spans:
        spans[rng.randrange(len(spans))]["parent_span_id"] = _id(rng)
    if rng.random() < 0.05 and spans:  # its own parent
        s = rng.choice(spans)
        s["parent_span_id"] = s["span_id"]
    if rng.random() < 0.05 and len(spans) > 2:  # a loop
        a, b = rng.sample(spans, 2)
        a["parent_span_id"], b["parent_span_id"] = b["span_id"], a["span_id"]
    if rng.random() < 0.05 and spans:  # duplicates (a redelivered span, maybe changed)
        for s in rng.sample(spans, min(3, len(spans))):
            copy = dict(s)
            if rng.random() < 0.5:
                copy["end_ns"] = s["end_ns"] + MS
                copy["service"] = "dup"
            spans.insert(rng.randrange(len(spans) + 1), copy)
    if rng.random() < 0.05 and spans:
        spans.append(dict(spans[0], span_id=None))
    if rng.random() < 0.05:
        rng.shuffle(spans)
    if rng.random() < 0.05 and spans:
        s = rng.choice(spans)
        s["parent_span_id"] = rng.choice(("", None, 0))
    if rng.random() < 0.05 and spans and broken:  # only assembly copes with these
        rng.choice(spans)["end_ns"] = None
    if rng.random() < 0.03 and spans:
        rng.choice(spans)["start_ns"] = 0
    if rng.random() < 0.1:  # staged rows: JSON text
        for s in spans:
            if rng.random() < 0.5:
                s["attributes"] = json.dumps(s["attributes"], default=str) if rng.random() < 0.9 else "{bad"
            if rng.random() < 0.3 and not isinstance(s["resource"], str):
                s["resource"] = json.dumps(s["resource"])
            s["duration_ns"] = (s["end_ns"] or 0) - (s["start_ns"] or 0)
    if rng.random() < 0.05 and spans:
        rng.choice(spans)["attributes"] = rng.choice((None, [], [("k", "v")], 5, "", "[]"))
    if rng.random() < 0.03 and spans:
        rng.choice(spans).pop("kind", None)
    if rng.random() < 0.01 and spans and broken:  # unhashable parent ids and kinds
        s = rng.choice(spans)
        s["parent_span_id" if rng.random() < 0.5 else "kind"] = rng.choice(([1], [], {"a": 1}))
    if rng.random() < 0.01 and spans:  # more distinct tags than a trace keeps
        for i, s in enumerate(spans):
            if type(s["attributes"]) is dict:
                s["attributes"].update({f"many.{i}.{k}": k for k in range(2100 // len(spans) + 1)})
    if rng.random() < 0.02 and spans:  # str subclasses, as a caller's own objects may be
        s = rng.choice(spans)
        s["service"], s["name"] = _Text(s["service"] or "x"), _Text("op")
        if type(s["attributes"]) is dict:
            s["attributes"][_Text("http.route")] = _Text("/api/v1/items/1")
            s["attributes"]["http.route"] = _Text("/api/v1/items/2")
    if rng.random() < 0.01:
        spans.clear() if rng.random() < 0.5 else [s.update(span_id=None) for s in spans]
    if rng.random() < 0.15 and spans:  # a re-finalization: the first spans come from the block
        for s in spans[:rng.randrange(1, len(spans) + 1)]:
            s["depth"], s["self_time_ns"], s["critical_path"] = 0, 0, False


def varied_traces(count: int, seed: int = 0, broken: bool = True) -> list[list[dict[str, Any]]]:
    """``count`` traces of random shapes; the same for the same seed."""
    rng = random.Random(seed)
    return [varied_trace(rng, broken) for _ in range(count)]
