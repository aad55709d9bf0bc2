"""LLM and agent spans of other instrumentations, rewritten at admission into the attributes Contrail's own use.

OpenInference (``openinference-instrumentation-*``) and OpenLLMetry
(``opentelemetry-instrumentation-openai``) describe the same model calls as
Contrail's ``llm_call`` with other names, and older releases flatten messages
into numbered keys (``llm.input_messages.0.message.content``,
``gen_ai.prompt.0.content``). :func:`map_ai_conventions` runs on every
admitted span and gives such spans the GenAI semantic-convention attributes
the tracer writes (``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.usage.*``, ``gen_ai.input.messages`` / ``gen_ai.output.messages``
as JSON parts, ``gen_ai.request.*`` parameters, ``session.id``), so usage,
cost, the AI pages and the LLM call viewer read one convention. The numbered
message keys are folded into the JSON and dropped; nothing else is removed.

Those instrumentations record prompts and completions as they are. Their
content is redacted with the tracer's rules (:func:`tracer.ai.redact`:
e-mail addresses, keys, bearer tokens, passwords) and each text part cut to
the span value limit, as Contrail's tracer does before a span leaves the
process. Spans of Contrail's own tracer (scope ``contrail``) are already
redacted and only get the session alias. A value of an unexpected type is
left alone: this never raises for any span.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from tracer.ai import TRUNCATION_MARK, redact

CONTRAIL_SCOPE = "contrail"
_OI_KIND = "openinference.span.kind"
_OI_MESSAGES = {"llm.input_messages.": "gen_ai.input.messages", "llm.output_messages.": "gen_ai.output.messages"}
_OL_MESSAGES = {"gen_ai.prompt.": "gen_ai.input.messages", "gen_ai.completion.": "gen_ai.output.messages"}
# Content attributes redacted on spans from other tracers (JSON is redacted value by value).
CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "input.value", "output.value")
# A span holding none of these keys needs nothing here: one set test passes most spans through.
_MARKERS = frozenset((_OI_KIND, "gen_ai.system", "llm.request.type", "gen_ai.conversation.id",
                      "gen_ai.prompt.0.role", "gen_ai.prompt.0.content", "gen_ai.completion.0.role",
                      "gen_ai.completion.0.content", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens",
                      "traceloop.span.kind", "traceloop.association.properties.session_id",
                      "traceloop.association.properties.user_id") + CONTENT_KEYS)
_OI_OPERATIONS = {"LLM": "chat", "EMBEDDING": "embeddings", "AGENT": "invoke_agent", "TOOL": "execute_tool"}
_OL_OPERATIONS = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings", "rerank": "rerank"}
# Invocation parameters of a model call and the gen_ai.request.* attribute each becomes.
_PARAMETERS = {"temperature": "temperature", "max_tokens": "max_tokens", "max_completion_tokens": "max_tokens",
               "top_p": "top_p", "top_k": "top_k", "seed": "seed", "frequency_penalty": "frequency_penalty",
               "presence_penalty": "presence_penalty", "stop": "stop_sequences", "n": "choice.count"}
_NUMBERED = re.compile(r"(\d+)\.(.+)")
# JSON keys whose values are secrets (the tracer's key=value rule, for parsed JSON).
_SECRET_NAME = re.compile(r"(?i)password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token")


class MessageKeys(NamedTuple):
    """Where a convention keeps the fields of one flattened message (the keys below ``<prefix>.N.``)."""
    role: str
    content: str
    tool_call_id: str  # of a tool result (role ``tool``)
    tool_calls: str  # prefix of the numbered calls the model asked for
    call_id: str
    call_name: str
    call_arguments: str
    contents: str | None = None  # prefix of numbered text parts, beside ``content``
    content_text: str | None = None  # the text of one of those parts
    finish_reason: str | None = None


OPENINFERENCE_MESSAGE = MessageKeys(
    role="message.role", content="message.content", tool_call_id="message.tool_call_id",
    tool_calls="message.tool_calls.", call_id="tool_call.id", call_name="tool_call.function.name",
    call_arguments="tool_call.function.arguments", contents="message.contents.", content_text="message_content.text")
OPENLLMETRY_MESSAGE = MessageKeys(
    role="role", content="content", tool_call_id="tool_call_id", tool_calls="tool_calls.", call_id="id",
    call_name="name", call_arguments="arguments", finish_reason="finish_reason")


def map_ai_conventions(span: dict[str, Any], value_limit: int) -> None:
    """Give an OpenInference / OpenLLMetry span Contrail's GenAI attributes, in place (see the module doc)."""
    attrs = span.get("attributes")
    if type(attrs) is not dict or _MARKERS.isdisjoint(attrs):
        return
    limit = max(64, int(value_limit))
    own = span.get("scope") == CONTRAIL_SCOPE
    if not own:
        kind = attrs.get(_OI_KIND)
        if isinstance(kind, str):
            _openinference(span, attrs, kind.upper(), limit)
        else:
            _openllmetry(span, attrs, limit)
        for key in CONTENT_KEYS:
            value = attrs.get(key)
            if isinstance(value, str) and value:
                attrs[key] = _redacted(value, limit)
    conversation = attrs.get("gen_ai.conversation.id")
    if "session.id" not in attrs and isinstance(conversation, str) and conversation:
        attrs["session.id"] = conversation  # sessions are looked up by session.id


# --------------------------------------------------------------------------- OpenInference


def _openinference(span: dict[str, Any], attrs: dict[str, Any], kind: str, limit: int) -> None:
    operation = _OI_OPERATIONS.get(kind)
    if operation:
        attrs.setdefault("gen_ai.operation.name", operation)
    if kind == "AGENT":
        _set(attrs, "gen_ai.agent.name", attrs.get("agent.name") or span.get("name"))
    elif kind == "TOOL":
        _set(attrs, "gen_ai.tool.name", attrs.get("tool.name") or span.get("name"))
        _set(attrs, "gen_ai.tool.call.arguments", attrs.get("tool.parameters") or attrs.get("input.value"))
        _set(attrs, "gen_ai.tool.call.result", attrs.get("output.value"))
    elif kind == "EMBEDDING":
        _set(attrs, "gen_ai.request.model", attrs.get("embedding.model_name"))
    if kind != "LLM":
        return
    parameters = _json_object(attrs.get("llm.invocation_parameters"))
    _set(attrs, "gen_ai.request.model", parameters.get("model") or attrs.get("llm.model_name"))
    _set(attrs, "gen_ai.response.model", attrs.get("llm.model_name"))
    _set(attrs, "gen_ai.provider.name", attrs.get("llm.provider") or attrs.get("llm.system"))
    for source, target in (("llm.token_count.prompt", "gen_ai.usage.input_tokens"),
                           ("llm.token_count.completion", "gen_ai.usage.output_tokens"),
                           ("llm.token_count.prompt_details.cache_read", "gen_ai.usage.cache_read.input_tokens"),
                           ("llm.token_count.total", "gen_ai.usage.total_tokens")):
        _set(attrs, target, attrs.get(source))
    _parameters(attrs, parameters)
    finish = attrs.get("llm.finish_reason")
    if isinstance(finish, str) and finish:
        attrs.setdefault("gen_ai.response.finish_reasons", [finish])
    for prefix, target in _OI_MESSAGES.items():
        _fold_messages(attrs, prefix, target, OPENINFERENCE_MESSAGE, limit)
    tools = _numbered(attrs, "llm.tools.")
    if tools:
        schemas = [_json_value(fields.get("tool.json_schema")) for _, fields in sorted(tools.items())]
        _set(attrs, "gen_ai.tool.definitions", json.dumps([s for s in schemas if s is not None], ensure_ascii=False))


# --------------------------------------------------------------------------- OpenLLMetry


def _openllmetry(span: dict[str, Any], attrs: dict[str, Any], limit: int) -> None:
    _set(attrs, "gen_ai.provider.name", attrs.get("gen_ai.system"))
    request_type = attrs.get("llm.request.type")
    if isinstance(request_type, str) and request_type in _OL_OPERATIONS:
        attrs.setdefault("gen_ai.operation.name", _OL_OPERATIONS[request_type])
    for source, target in (("gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
                           ("gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens"),
                           ("gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
                           ("llm.usage.total_tokens", "gen_ai.usage.total_tokens")):
        _set(attrs, target, attrs.get(source))
    for source, target in (("traceloop.association.properties.session_id", "session.id"),
                           ("traceloop.association.properties.user_id", "user.id")):
        _set(attrs, target, attrs.get(source))
    kind = attrs.get("traceloop.span.kind")
    if kind == "agent":
        attrs.setdefault("gen_ai.operation.name", "invoke_agent")
        _set(attrs, "gen_ai.agent.name", attrs.get("traceloop.entity.name") or span.get("name"))
    elif kind == "tool":
        attrs.setdefault("gen_ai.operation.name", "execute_tool")
        _set(attrs, "gen_ai.tool.name", attrs.get("traceloop.entity.name") or span.get("name"))
        _set(attrs, "gen_ai.tool.call.arguments", attrs.get("traceloop.entity.input"))
        _set(attrs, "gen_ai.tool.call.result", attrs.get("traceloop.entity.output"))
    for prefix, target in _OL_MESSAGES.items():
        grouped = _fold_messages(attrs, prefix, target, OPENLLMETRY_MESSAGE, limit)
        if prefix == "gen_ai.completion.":
            reasons = [str(f["finish_reason"]) for _, f in sorted(grouped.items()) if f.get("finish_reason")]
            if reasons:
                attrs.setdefault("gen_ai.response.finish_reasons", reasons)


# --------------------------------------------------------------------------- shared


def _fold_messages(attrs: dict[str, Any], prefix: str, target: str, keys: MessageKeys,
                   limit: int) -> dict[int, dict[str, Any]]:
    """The numbered ``prefix.N.*`` message keys folded into the JSON attribute ``target``; the messages'
    fields by number (empty when there were none)."""
    grouped = _numbered(attrs, prefix)
    if grouped:
        _set(attrs, target, _messages_json([_message(fields, keys) for _, fields in sorted(grouped.items())], limit))
    return grouped


def _message(fields: dict[str, Any], keys: MessageKeys) -> dict[str, Any]:
    """One flattened message as a GenAI-convention message: text or tool-result part, then tool calls."""
    role = str(fields.get(keys.role) or "user")
    parts: list[dict[str, Any]] = []
    content = fields.get(keys.content)
    if isinstance(content, str) and content:
        if role == "tool":
            parts.append({"type": "tool_call_response", "id": fields.get(keys.tool_call_id), "response": content})
        else:
            parts.append({"type": "text", "content": content})
    if keys.contents is not None:
        for _, item in sorted(_numbered(fields, keys.contents).items()):
            text = item.get(keys.content_text)
            if isinstance(text, str) and text:
                parts.append({"type": "text", "content": text})
    for _, call in sorted(_numbered(fields, keys.tool_calls).items()):
        parts.append({"type": "tool_call", "id": call.get(keys.call_id), "name": call.get(keys.call_name),
                      "arguments": _json_value(call.get(keys.call_arguments))})
    message: dict[str, Any] = {"role": role, "parts": parts}
    if keys.finish_reason is not None:
        reason = fields.get(keys.finish_reason)
        if isinstance(reason, str) and reason:
            message["finish_reason"] = reason
    return message


def _set(attrs: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` unless the span already has it or the value is empty (the span's own names win)."""
    if key not in attrs and value is not None and value != "" and isinstance(value, (str, int, float, bool, list)):
        attrs[key] = value


def _numbered(attrs: dict[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """``prefix.N.rest = v`` keys grouped as {N: {rest: v}}; the keys are removed from ``attrs``
    (their values are folded into one JSON attribute by the caller)."""
    grouped: dict[int, dict[str, Any]] = {}
    for key in [k for k in attrs if type(k) is str and k.startswith(prefix)]:
        match = _NUMBERED.fullmatch(key[len(prefix):])
        if match is None:
            continue
        grouped.setdefault(int(match.group(1)), {})[match.group(2)] = attrs.pop(key)
    return grouped


def _parameters(attrs: dict[str, Any], parameters: dict[str, Any]) -> None:
    for name, target in _PARAMETERS.items():
        value = parameters.get(name)
        if isinstance(value, str):
            value = [value] if target == "stop_sequences" else value
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, list, str)):
            continue
        _set(attrs, f"gen_ai.request.{target}", value)


def _json_object(value: Any) -> dict[str, Any]:
    parsed = _json_value(value)
    return parsed if isinstance(parsed, dict) else {}


def _json_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(TRUNCATION_MARK))] + TRUNCATION_MARK


def _messages_json(messages: list[dict[str, Any]], limit: int) -> str:
    """Messages as GenAI-convention JSON that fits ``limit``: text parts are cut evenly until it does,
    so the attribute stays whole JSON rather than being cut mid-string by the span limits."""
    parts = max(1, sum(len(m["parts"]) for m in messages))
    part_limit = limit
    while True:
        text = json.dumps([_cut_parts(m, part_limit) for m in messages], ensure_ascii=False)
        if len(text) <= limit or part_limit <= 32:
            return text
        part_limit = max(32, min(part_limit // 2, limit // (2 * parts)))


def _cut_parts(message: dict[str, Any], limit: int) -> dict[str, Any]:
    parts = []
    for part in message["parts"]:
        part = dict(part)
        for key in ("content", "response"):
            if isinstance(part.get(key), str):
                part[key] = _cut(part[key], limit)
        if isinstance(part.get("arguments"), str):
            part["arguments"] = _cut(part["arguments"], limit)
        parts.append(part)
    return {**message, "parts": parts}


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: "[REDACTED]" if isinstance(k, str) and _SECRET_NAME.fullmatch(k) else _redact_tree(v)
                for k, v in value.items()}
    return value


def _redacted(text: str, limit: int) -> str:
    """Content text redacted with the tracer's rules; JSON is redacted value by value and stays JSON."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return _cut(redact(text), limit)
    if not isinstance(parsed, (dict, list)):
        return _cut(redact(text), limit)
    out = json.dumps(_redact_tree(parsed), ensure_ascii=False)
    return out if len(out) <= limit else _cut(out, limit)
