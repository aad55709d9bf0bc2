"""LLM usage and cost: per-minute and hourly token/cost rollups from GenAI spans.

The finalizer hands every newly stored span to :func:`record_llm_usage` inside
the ingest transaction. Spans that describe an LLM call -- OpenTelemetry GenAI
attributes (``gen_ai.usage.input_tokens`` ...), the older
``gen_ai.usage.prompt_tokens``/``completion_tokens`` names, or OpenInference
(``llm.token_count.prompt`` ...) -- become additive upserts into ``llm_usage``
keyed by (resolution, bucket, service, model, user, agent), so any number of
collectors can write concurrently and totals stay exact.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from . import pricing
from .stats import additive_upsert, sum_of
from .storage.schema import llm_usage

RESOLUTIONS = (60, 3600)
# Largest token count of one call taken as real: context windows are millions of tokens, so a billion is
# absurd; counts beyond it (or not finite) are ignored, so no sum of them can approach a 64-bit integer.
MAX_TOKENS = 10**9
GROUP_BY = {"model": "model", "user": "user_id", "agent": "agent", "service": "service"}

# Operation names of the GenAI semantic conventions that are model calls.
_LLM_OPERATIONS = {"chat", "text_completion", "generate_content", "embeddings", "completion"}

_INPUT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
_CACHE_KEYS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
               "llm.token_count.prompt_details.cache_read")
_TOTAL_KEYS = ("gen_ai.usage.total_tokens", "llm.token_count.total")
TOKEN_KEYS = frozenset(_INPUT_KEYS + _OUTPUT_KEYS + _CACHE_KEYS + _TOTAL_KEYS)
_MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_USER_KEYS = ("user.id", "enduser.id")
_AGENT_KEYS = ("gen_ai.agent.name",)
# A span carrying none of these keys is not an LLM call (see llm_call_of): one set test rules most spans out.
TRIGGER_KEYS = frozenset(_INPUT_KEYS + _OUTPUT_KEYS + _TOTAL_KEYS + ("gen_ai.operation.name",
                                                                    "openinference.span.kind"))


def _first(attrs: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def token_count(value: Any) -> int | None:
    """A token count from an attribute value; None when absent, not a finite number, negative or above
    :data:`MAX_TOKENS` (``"inf"``, ``1e30``: never an exception)."""
    if value is None or isinstance(value, bool):
        return None
    if type(value) is int:
        number = value
    else:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if not math.isfinite(number):
            return None
        number = int(number)
    return number if 0 <= number <= MAX_TOKENS else None


def _text(value: Any, limit: int = 255) -> str:
    if value is None:
        return ""
    text = str(value)[:limit]
    return text.replace("\x00", "\ufffd") if "\x00" in text else text  # PostgreSQL text cannot hold NUL


def llm_call_of(span: Mapping[str, Any]) -> dict[str, Any] | None:
    """The LLM usage a span describes, or None if it is not an LLM call.

    Works on both the codec span dict and the API span dict (``status`` or
    ``status_code``). Input tokens include cached tokens, as providers report.
    """
    attrs = span.get("attributes") or {}
    if type(attrs) is not dict and not isinstance(attrs, Mapping):  # a dict (the usual case) skips the ABC check
        return None
    tokens = _tokens(attrs)
    if tokens is None:
        return None
    input_tokens, output_tokens, cache_read = tokens
    error, start_ns, duration_ns = _call_times(span)
    return {
        "model": _text(_first(attrs, _MODEL_KEYS)),
        "provider": _text(_first(attrs, _PROVIDER_KEYS)),
        "user_id": _text(_first(attrs, _USER_KEYS)),
        "agent": _text(_first(attrs, _AGENT_KEYS)),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "error": error,
        "start_ns": start_ns,
        "duration_ns": duration_ns,
    }


def _tokens(attrs: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(input, output, cache read) tokens of an LLM call's attributes; None when they describe no LLM call.

    Input tokens include cached tokens, as providers report; when only a total is known it counts as input
    rather than being lost, and a total with one side known gives the other.
    """
    get = attrs.get
    input_tokens = _count_of(get, _INPUT_KEYS)
    output_tokens = _count_of(get, _OUTPUT_KEYS)
    total_tokens = _count_of(get, _TOTAL_KEYS)
    if input_tokens is None and output_tokens is None:
        if total_tokens is None:
            if (str(get("gen_ai.operation.name") or "").lower() not in _LLM_OPERATIONS
                    and str(get("openinference.span.kind") or "").upper() != "LLM"):
                return None
        else:
            input_tokens = total_tokens
    elif total_tokens is not None:
        if input_tokens is None:
            input_tokens = max(0, total_tokens - output_tokens)
        elif output_tokens is None:
            output_tokens = max(0, total_tokens - input_tokens)
    return input_tokens or 0, output_tokens or 0, _count_of(get, _CACHE_KEYS) or 0


def _call_times(span: Mapping[str, Any]) -> tuple[bool, int, int]:
    """(failed, start ns, duration ns) of a call's span (the codec's ``status_code`` or the API's ``status``)."""
    status = span.get("status_code", span.get("status"))
    start_ns = int(span.get("start_ns") or 0)
    end_ns = int(span.get("end_ns") or start_ns)
    return status == "error", start_ns, max(0, end_ns - start_ns)


_ADDITIVE = ("calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cost", "total_ns")


def aggregate_usage(new_spans: Iterable[Mapping[str, Any]], table: pricing.PriceTable | None = None) -> list[dict]:
    """Rows to add to ``llm_usage`` for these spans (both resolutions), in key order.

    The same figures as :func:`llm_call_of` per span, without building its mapping (a span without any
    GenAI usage key is passed over on one set test), and each distinct (model, tokens) priced once.
    """
    table = table or pricing.current_table()
    sums: dict[tuple, list] = {}  # key -> [calls, errors, input, output, cache read, cost, total_ns]
    costs: dict[tuple, float] = {}  # (model, input, output, cached) -> cost, within this call
    disjoint = TRIGGER_KEYS.isdisjoint
    for span in new_spans:
        attrs = span.get("attributes")
        if type(attrs) is dict:
            if disjoint(attrs):  # the usual span: no GenAI usage keys at all
                continue
        elif not isinstance(attrs, Mapping):  # no attributes, or text: no LLM call (llm_call_of)
            continue
        tokens = _tokens(attrs)
        if tokens is None:
            continue
        input_tokens, output_tokens, cached = tokens
        model, user_id, agent = (_text(_first(attrs, _MODEL_KEYS)), _text(_first(attrs, _USER_KEYS)),
                                 _text(_first(attrs, _AGENT_KEYS)))
        failed, start_ns, duration = _call_times(span)
        priced = (model, input_tokens, output_tokens, cached)
        cost = costs.get(priced)
        if cost is None:
            cost = table.cost(model, input_tokens, output_tokens, cached)
            if not math.isfinite(cost):  # a price table with absurd prices: the sum must stay a number
                cost = 0.0
            costs[priced] = cost
        service = _text(span.get("service")) or "unknown_service"
        seconds = start_ns // 1_000_000_000
        error = 1 if failed else 0
        for resolution in RESOLUTIONS:
            key = (resolution, seconds - seconds % resolution, service, model, user_id, agent)
            row = sums.get(key)
            if row is None:
                row = sums[key] = [0, 0, 0, 0, 0, 0.0, 0]
            row[0] += 1
            row[1] += error
            row[2] += input_tokens
            row[3] += output_tokens
            row[4] += cached
            row[5] += cost
            row[6] += duration
    # A fixed key order keeps concurrent PostgreSQL upserts from deadlocking.
    return [dict(zip(_KEY_COLUMNS, key), **dict(zip(_ADDITIVE, sums[key]))) for key in sorted(sums)]


def _count_of(get: Any, keys: tuple[str, ...]) -> int | None:
    """``token_count(_first(attrs, keys))`` with the usual value (a plain int) decided inline."""
    for key in keys:
        value = get(key)
        if value is not None and value != "":
            if type(value) is int:
                return value if 0 <= value <= MAX_TOKENS else None
            return token_count(value)
    return None


_KEY_COLUMNS = ("resolution", "bucket", "service", "model", "user_id", "agent")


def record_llm_usage(conn: Connection, new_spans: list[dict]) -> None:
    """Add the LLM usage of newly stored spans to ``llm_usage`` (call once per new span)."""
    write_usage(conn, aggregate_usage(new_spans))


def write_usage(conn: Connection, rows: list[dict]) -> None:
    """Add rows from :func:`aggregate_usage` to ``llm_usage``."""
    if rows:  # additive upsert on the usage key (the table's primary key)
        additive_upsert(conn, llm_usage, rows, _ADDITIVE)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolution_for(step_s: int) -> int:
    return 3600 if step_s >= 3600 and step_s % 3600 == 0 else 60


def query_usage(conn: Connection, start_ns: int, end_ns: int, group_by: str = "model", step_s: int = 3600,
                where: Mapping[str, str] | None = None, prices: pricing.PriceTable | None = None) -> dict:
    """Token and cost totals between two times, per group and as a time series.

    ``group_by`` is one of model, user, agent, service; ``step_s`` (a multiple
    of 60) is the width of a series point. Buckets overlapping the window are
    counted whole (minute or hour granularity). ``where`` keeps only rows whose
    group columns (same names as ``group_by``) equal the given values, e.g.
    ``{"user": "u1"}`` for one user's usage. ``prices`` (default: the process's
    configured table) tells which models have a price.
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
    step_s = int(step_s)
    if step_s < 60 or step_s % 60:
        raise ValueError("step must be a whole number of minutes")
    resolution = _resolution_for(step_s)
    start_s = int(start_ns) // 1_000_000_000
    end_s = int(end_ns) // 1_000_000_000
    column = getattr(llm_usage.c, GROUP_BY[group_by])
    point = (llm_usage.c.bucket - llm_usage.c.bucket % step_s).label("point")
    measures = [sum_of(conn, llm_usage.c[name]) for name in ("calls", "errors", "input_tokens", "output_tokens",
                                                             "cache_read_tokens")]
    measures += [func.sum(llm_usage.c.cost), sum_of(conn, llm_usage.c.total_ns)]
    conditions = [llm_usage.c.resolution == resolution,
                  llm_usage.c.bucket > start_s - resolution, llm_usage.c.bucket <= end_s]
    for name, value in (where or {}).items():
        if name not in GROUP_BY:
            raise ValueError(f"where: {name!r} is not one of {', '.join(GROUP_BY)}")
        conditions.append(getattr(llm_usage.c, GROUP_BY[name]) == value)
    where_clause = and_(*conditions)
    result = conn.execute(
        select(column.label("key"), point, *measures).where(where_clause).group_by(column, point).order_by(column, point)
    ).all()

    names = ("calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cost", "total_ns")
    totals = dict.fromkeys(names, 0)
    groups: dict[str, dict[str, Any]] = {}
    series: dict[str, list] = defaultdict(list)
    for key, bucket, *values in result:
        values = [float(v or 0) if n == "cost" else int(v or 0) for n, v in zip(names, values)]
        entry = dict(zip(names, values))
        group = groups.setdefault(key, dict.fromkeys(names, 0))
        for name in names:
            group[name] += entry[name]
            totals[name] += entry[name]
        series[key].append({"time": _iso(int(bucket)), "bucket_s": int(bucket), **_public(entry)})

    table = prices or pricing.current_table()
    unpriced = sorted(k for k in groups if group_by == "model" and k and not table.is_priced(k))
    hint = {"price_hint": pricing.UNPRICED_HINT} if unpriced else {}
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1]["cost"], -kv[1]["input_tokens"], kv[0]))
    return {
        "group_by": group_by,
        "step_s": step_s,
        "resolution_s": resolution,
        "start_ns": int(start_ns),
        "end_ns": int(end_ns),
        "totals": _public(totals),
        "groups": [{"key": key, **_public(values)} for key, values in ordered],
        "series": [{"key": key, "points": series[key]} for key, _ in ordered],
        "unpriced_models": unpriced,
        **hint,
        "price_source": table.source,
    }


def _public(values: Mapping[str, Any]) -> dict[str, Any]:
    """Sums as the API shows them: durations in ms, cost rounded."""
    out = {k: v for k, v in values.items() if k != "total_ns"}
    out["cost"] = round(float(values["cost"]), 6)
    out["duration_ms"] = round(values["total_ns"] / 1e6, 3)
    return out
