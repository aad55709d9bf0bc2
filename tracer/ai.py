"""AI-agent spans: agent runs, phases, tool calls and LLM calls.

Each helper is a context manager (``with`` and ``async with``) that is also a
decorator (sync and async functions). Spans follow the OpenTelemetry GenAI
semantic conventions (``gen_ai.*``) so any GenAI-aware backend understands
them, plus a few ``contrail.ai.*`` attributes for what the conventions lack.

The user, session and agent of a run travel in W3C baggage, so they reach
nested spans -- in this process and, through propagation, in other services --
and are copied onto every AI span below the run.

Prompts, tool inputs/outputs and responses are content: recorded only when
``settings.record_content`` is true, then redacted (emails, bearer tokens,
API keys, passwords) and truncated to ``settings.max_attribute_length``.

With tracing disabled every helper yields a handle whose methods do nothing.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from typing import Any, Callable

from opentelemetry import baggage, context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

# Baggage entries a run sets, and the span attributes each becomes on nested AI spans.
PROPAGATED = {
    "user.id": ("user.id",),
    "session.id": ("session.id", "gen_ai.conversation.id"),
    "gen_ai.agent.name": ("gen_ai.agent.name",),
}

_REQUEST_PARAMETERS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
}

TRUNCATION_MARK = "…[truncated]"

_REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*"), "Bearer [REDACTED]"),
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"), "[REDACTED_KEY]"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "[REDACTED_KEY]"),
    (re.compile(r"(?i)(\"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token)\"\s*:\s*)\"[^\"]*\""),
     r'\1"[REDACTED]"'),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token)(\s*[=:]\s*)[^\s&,;\"']+"),
     r"\1\2[REDACTED]"),
    (re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"), "[EMAIL]"),
]


def redact(text: str) -> str:
    """Mask secrets and personal data that commonly appear in prompts and tool I/O."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def content_value(value: Any, limit: int) -> str:
    """Content as a span attribute: text, redacted, then cut to ``limit`` characters."""
    text = redact(_as_text(value))
    if len(text) > limit:
        keep = max(0, limit - len(TRUNCATION_MARK))
        text = text[:keep] + TRUNCATION_MARK
    return text


def _attribute_value(value: Any, limit: int) -> Any:
    """A value OpenTelemetry accepts: primitives and homogeneous lists; the rest as text."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= limit else value[: max(0, limit - len(TRUNCATION_MARK))] + TRUNCATION_MARK
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return [str(v)[:limit] for v in value]
    if isinstance(value, (list, tuple)) and value and all(type(v) in (int, float, bool) for v in value) \
            and len({type(v) for v in value}) == 1:
        return list(value)
    return _attribute_value(_as_text(value), limit)


def _settings_of(manager: Any) -> Any:
    return getattr(manager, "settings", None)


def _is_enabled(manager: Any) -> bool:
    settings = _settings_of(manager)
    return manager is not None and getattr(manager, "tracer", None) is not None and \
        bool(getattr(settings, "enabled", True))


# --------------------------------------------------------------------------- handles


class AISpanHandle:
    """What a helper yields: the span plus setters that respect content settings."""

    def __init__(self, span: Any = None, settings: Any = None):
        self.span = span
        self._record_content = bool(getattr(settings, "record_content", False))
        self._limit = int(getattr(settings, "max_attribute_length", 1024) or 1024)

    @property
    def recording(self) -> bool:
        return self.span is not None and self.span.is_recording()

    def set_attribute(self, key: str, value: Any) -> None:
        if self.recording and value is not None:
            self.span.set_attribute(key, _attribute_value(value, self._limit))

    def set_error(self, exc: BaseException) -> None:
        """Mark the span failed without raising (e.g. an error the agent recovered from)."""
        if self.recording:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self.span.set_attribute("error.type", type(exc).__qualname__)

    def set_content(self, key: str, value: Any) -> None:
        """A content attribute, redacted and truncated; dropped unless ``record_content`` is on. Prompt
        messages (``gen_ai.input.messages``) are stored as the conventions' message list."""
        if self._record_content and self.recording and value is not None:
            if key == "gen_ai.input.messages":
                self.span.set_attribute(key, _messages_json(value, self._limit))
            else:
                self.span.set_attribute(key, content_value(value, self._limit))


class AgentRunHandle(AISpanHandle):
    """Handle of an ``invoke_agent`` span."""


class PhaseHandle(AISpanHandle):
    """Handle of a phase span."""


class ToolCallHandle(AISpanHandle):
    """Handle of an ``execute_tool`` span."""

    def set_output(self, value: Any) -> None:
        self.set_content("gen_ai.tool.call.result", value)


class LLMCallHandle(AISpanHandle):
    """Handle of a model call; usage accumulates across calls (streamed responses)."""

    def __init__(self, span: Any = None, settings: Any = None):
        super().__init__(span, settings)
        self._usage = {"input": 0, "output": 0, "cache_read": 0}

    def record_usage(self, input_tokens: int | None = None, output_tokens: int | None = None,
                     cache_hit: bool | None = None, cache_read_tokens: int | None = None) -> None:
        if not self.recording:
            return
        for key, attribute, value in (("input", "gen_ai.usage.input_tokens", input_tokens),
                                      ("output", "gen_ai.usage.output_tokens", output_tokens),
                                      ("cache_read", "gen_ai.usage.cache_read.input_tokens", cache_read_tokens)):
            if value is None:
                continue
            try:
                number = int(value)
            except (TypeError, ValueError):
                continue
            if number < 0:
                continue
            self._usage[key] += number
            self.span.set_attribute(attribute, self._usage[key])
        if cache_hit is None and cache_read_tokens:
            cache_hit = True
        if cache_hit is not None:
            self.span.set_attribute("contrail.ai.cache_hit", bool(cache_hit))

    def set_response(self, text: Any, tool_calls: Any = None) -> None:
        """The model's answer (content: recorded only with record_content); ``tool_calls`` are the calls the
        model asked for, as ``[{"name", "arguments", "id"}]`` (arguments redacted like any content)."""
        if self._record_content and self.recording and (text is not None or tool_calls):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            self.span.set_attribute("gen_ai.output.messages", _messages_json([message], self._limit))

    def set_response_model(self, name: str) -> None:
        if name:
            self.set_attribute("gen_ai.response.model", str(name))


def _messages_json(messages: Any, limit: int) -> str:
    """GenAI-convention message list as JSON, each text part redacted and truncated."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        messages = [{"role": "user", "content": messages}]
    out = []
    for message in messages:
        calls: Any = ()
        if isinstance(message, dict):
            role = str(message.get("role") or "user")
            content = message.get("content")
            calls = message.get("tool_calls") or ()
        else:
            role, content = "user", message
        parts = [] if content is None and calls else [{"type": "text", "content": content_value(content, limit)}]
        for call in calls if isinstance(calls, (list, tuple)) else ():
            call = call if isinstance(call, dict) else {"name": str(call)}
            part = {"type": "tool_call", "name": str(call.get("name") or ""),
                    "arguments": content_value(call.get("arguments", ""), limit)}
            if call.get("id") is not None:
                part["id"] = str(call["id"])
            parts.append(part)
        out.append({"role": role, "parts": parts})
    text = json.dumps(out, ensure_ascii=False)
    return text if len(text) <= limit * 2 else text[: limit * 2] + TRUNCATION_MARK


# --------------------------------------------------------------------------- the context manager


class AISpan:
    """One AI span as a context manager, async context manager and decorator."""

    def __init__(self, manager: Any, handle_type: type[AISpanHandle], name: str, kind: SpanKind,
                 attributes: dict[str, Any], baggage_items: dict[str, str] | None = None,
                 content: dict[str, Any] | None = None):
        self._manager = manager
        self._handle_type = handle_type
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._baggage = baggage_items or {}
        self._content = content or {}
        self._active: list[tuple[Any, Any, AISpanHandle]] = []  # (span, token, handle) per entry

    # -- context manager
    def __enter__(self) -> AISpanHandle:
        manager = self._manager
        settings = _settings_of(manager)
        if not _is_enabled(manager):
            handle = self._handle_type(None, settings)
            self._active.append((None, None, handle))
            return handle
        ctx = context.get_current()
        for key, value in self._baggage.items():
            ctx = baggage.set_baggage(key, value, context=ctx)
        limit = int(getattr(settings, "max_attribute_length", 1024) or 1024)
        attributes: dict[str, Any] = {}
        for key, value in baggage.get_all(ctx).items():
            for attribute in PROPAGATED.get(key, ()):
                attributes[attribute] = _attribute_value(str(value), limit)
        for key, value in self._attributes.items():
            if value is not None:
                attributes[key] = _attribute_value(value, limit)
        span = manager.tracer.start_span(self._name, context=ctx, kind=self._kind, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span, ctx))
        handle = self._handle_type(span, settings)
        for key, value in self._content.items():
            handle.set_content(key, value)
        self._active.append((span, token, handle))
        return handle

    def __exit__(self, exc_type, exc, tb) -> bool:
        span, token, handle = self._active.pop()
        if span is None:
            return False
        try:
            if exc is not None:
                handle.set_error(exc)
            span.end()
        finally:
            try:
                context.detach(token)
            except Exception:  # detached from another context (e.g. a cancelled task): nothing to restore
                pass
        return False

    async def __aenter__(self) -> AISpanHandle:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return self.__exit__(exc_type, exc, tb)

    # -- decorator
    def _fresh(self) -> "AISpan":
        return AISpan(self._manager, self._handle_type, self._name, self._kind, self._attributes,
                      self._baggage, self._content)

    def __call__(self, func: Callable) -> Callable:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args, **kwargs):
                async with self._fresh():
                    return await func(*args, **kwargs)
            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return func(*args, **kwargs)
        return wrapper


# --------------------------------------------------------------------------- public helpers


def agent_run(manager: Any, name: str, user_id: Any = None, session_id: Any = None, **attributes: Any) -> AISpan:
    """One run of an agent: span ``invoke_agent <name>``; user, session and agent propagate to nested spans."""
    items = {"gen_ai.agent.name": str(name)}
    if user_id is not None:
        items["user.id"] = str(user_id)
    if session_id is not None:
        items["session.id"] = str(session_id)
    attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": str(name), **attributes}
    return AISpan(manager, AgentRunHandle, f"invoke_agent {name}", SpanKind.INTERNAL, attrs, items)


def phase(manager: Any, name: str, **attributes: Any) -> AISpan:
    """A named stage of a run (planning, retrieval, synthesis): span ``phase <name>``."""
    attrs = {"contrail.ai.phase": str(name), **attributes}
    return AISpan(manager, PhaseHandle, f"phase {name}", SpanKind.INTERNAL, attrs)


def tool_call(manager: Any, name: str, input: Any = None, **attributes: Any) -> AISpan:
    """A tool the agent executes: span ``execute_tool <name>``; input/output recorded only as content."""
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": str(name), **attributes}
    return AISpan(manager, ToolCallHandle, f"execute_tool {name}", SpanKind.INTERNAL, attrs,
                  content={"gen_ai.tool.call.arguments": input})


def llm_call(manager: Any, model: str, provider: str | None = None, purpose: str | None = None,
             prompt: Any = None, *, operation: str = "chat", **attributes: Any) -> AISpan:
    """A model call: span ``<operation> <model>`` (client kind); record usage on the yielded handle."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": operation, "gen_ai.request.model": str(model)}
    if provider:
        attrs["gen_ai.provider.name"] = str(provider)
    if purpose:
        attrs["contrail.ai.purpose"] = str(purpose)
    for key, value in attributes.items():
        attrs[_REQUEST_PARAMETERS.get(key, key)] = value
    return AISpan(manager, LLMCallHandle, f"{operation} {model}", SpanKind.CLIENT, attrs,
                  content={"gen_ai.input.messages": prompt})
