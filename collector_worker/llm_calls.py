"""One LLM call as a person reads it: prompt messages, completion, requested tool calls, parameters, usage, cost.

Works on the API span dict (``queries.span_to_api``) of any LLM span:
Contrail's own ``llm_call`` and, once :mod:`collector_worker.conventions` has
mapped them at admission, OpenInference and OpenLLMetry spans. Messages are
GenAI-convention JSON (``[{"role", "parts": [{"type": "text", "content"}, {"type":
"tool_call", "name", "arguments"}]}]``); the older single-text form is read too.

Content is present only when it was recorded (``record_content`` in Contrail's
tracer, the instrumentation's own switch elsewhere) and was redacted before it
was stored; when it is absent the view says so instead of showing an empty prompt.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from tracer.ai import TRUNCATION_MARK

from . import pricing
from .llm_usage import llm_call_of

NOT_RECORDED_NOTE = ("Prompt and completion were not recorded. Contrail's tracer records them only with "
                     "record_content (CONTRAIL_RECORD_CONTENT=true), redacted; other instrumentations follow "
                     "their own switch (OpenInference: OPENINFERENCE_HIDE_INPUTS / _OUTPUTS, "
                     "OpenLLMetry: TRACELOOP_TRACE_CONTENT).")
RECORDED_NOTE = "Redacted before it was stored: e-mail addresses, keys, bearer tokens and passwords are masked."
_CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")
_MODEL_PARAMETER_PREFIX = "gen_ai.request."


def _first(attrs: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value not in (None, ""):
            return value
    return None


def parse_messages(value: Any) -> tuple[list[dict[str, Any]] | None, bool]:
    """(messages, truncated) of a content attribute; (None, False) when it was not recorded.

    Content cut by a length limit is no longer JSON: it comes back as one text
    part of role ``unknown`` with ``truncated`` true, so what was kept is still shown.
    """
    if value in (None, ""):
        return None, False
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [{"role": "unknown", "parts": [{"type": "text", "content": value}]}], True
    if isinstance(parsed, dict):
        parsed = [parsed]
    if not isinstance(parsed, list):
        return [{"role": "unknown", "parts": [{"type": "text", "content": str(parsed)}]}], False
    messages, truncated = [], False
    for item in parsed:
        message = _message(item)
        truncated = truncated or any(TRUNCATION_MARK in str(p.get("content") or "") for p in message["parts"])
        messages.append(message)
    return messages, truncated


def _message(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"role": "unknown", "parts": [{"type": "text", "content": str(item)}]}
    role = str(item.get("role") or "unknown")
    parts = item.get("parts")
    if not isinstance(parts, list):  # {"role", "content"}: the older single-text form
        content = item.get("content")
        parts = [] if content in (None, "") else [{"type": "text", "content": content}]
    clean = []
    for part in parts:
        if not isinstance(part, dict):
            part = {"type": "text", "content": str(part)}
        clean.append({key: value for key, value in part.items() if value is not None})
    out = {"role": role, "parts": clean}
    if item.get("finish_reason"):
        out["finish_reason"] = str(item["finish_reason"])
    return out


def _tool_calls(messages: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    calls = []
    for message in messages or []:
        for part in message["parts"]:
            if part.get("type") == "tool_call":
                arguments = part.get("arguments")
                if isinstance(arguments, str):  # Contrail's tracer stores arguments as (redacted) JSON text
                    try:
                        arguments = json.loads(arguments)
                    except ValueError:
                        pass
                calls.append({"id": part.get("id"), "name": part.get("name"), "arguments": arguments})
    return calls


def _json_list(value: Any) -> list | None:
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        return parsed if isinstance(parsed, list) else [parsed]
    return None


def llm_call_view(trace_id: str, span: Mapping[str, Any], prices: pricing.PriceTable) -> dict[str, Any] | None:
    """The viewer's answer for one API span dict, or None when the span is not an LLM call."""
    call = llm_call_of(span)
    if call is None:
        return None
    attrs = span.get("attributes") or {}
    input_messages, input_cut = parse_messages(attrs.get("gen_ai.input.messages"))
    output_messages, output_cut = parse_messages(attrs.get("gen_ai.output.messages"))
    instructions, instructions_cut = parse_messages(attrs.get("gen_ai.system_instructions"))
    recorded = any(attrs.get(key) not in (None, "") for key in _CONTENT_KEYS)
    parameters = {key[len(_MODEL_PARAMETER_PREFIX):]: value for key, value in sorted(attrs.items())
                  if key.startswith(_MODEL_PARAMETER_PREFIX) and key != "gen_ai.request.model"}
    model = call["model"]
    priced = prices.is_priced(model)
    cost = prices.cost(model, call["input_tokens"], call["output_tokens"], call["cache_read_tokens"])
    view = {
        "trace_id": trace_id,
        "span_id": span["span_id"],
        "parent_span_id": span.get("parent_span_id"),
        "service": span.get("service"),
        "name": span.get("name"),
        "start_time": span.get("start_time"),
        "start_ns": span.get("start_ns"),
        "duration_ms": span.get("duration_ms"),
        "status": span.get("status"),
        "status_message": span.get("status_message"),
        "operation": attrs.get("gen_ai.operation.name"),
        "model": model or None,
        "request_model": attrs.get("gen_ai.request.model"),
        "response_model": attrs.get("gen_ai.response.model"),
        "provider": call["provider"] or None,
        "purpose": attrs.get("contrail.ai.purpose"),
        "user_id": call["user_id"] or None,
        "session_id": _first(attrs, "session.id", "gen_ai.conversation.id"),
        "agent": call["agent"] or None,
        "parameters": parameters,
        "finish_reasons": _json_list(attrs.get("gen_ai.response.finish_reasons")) or [],
        "usage": {"input_tokens": call["input_tokens"], "output_tokens": call["output_tokens"],
                  "cache_read_tokens": call["cache_read_tokens"],
                  "total_tokens": call["input_tokens"] + call["output_tokens"]},
        "cost": round(cost, 6),
        "priced": priced,
        "price_source": prices.source,
        "content": {"recorded": recorded, "input": input_messages is not None, "output": output_messages is not None,
                    "truncated": input_cut or output_cut or instructions_cut,
                    "note": RECORDED_NOTE if recorded else NOT_RECORDED_NOTE},
        "system_instructions": instructions,
        "input_messages": input_messages,
        "output_messages": output_messages,
        "tool_calls": _tool_calls(output_messages),
        "tool_definitions": _json_list(attrs.get("gen_ai.tool.definitions")),
    }
    if not priced:
        view["price_hint"] = pricing.UNPRICED_HINT
    return view
