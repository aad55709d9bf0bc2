"""Spans around functions and blocks: ``with_tracing`` and the db / external / tool helpers.

One object, :class:`SpanScope`, is both a context manager (sync and async)
and a decorator, so ``trace_database_operation(...)`` works either way.
Function arguments are recorded only through :func:`safe_repr`, which
redacts secret-looking names and truncates, because span attributes leave
the process.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

SECRET_NAME = re.compile(r"password|passwd|secret|token|api_key|apikey|authorization|auth|cookie|credential",
                         re.IGNORECASE)
REDACTED = "[REDACTED]"
_PRIMITIVES = (str, bool, int, float)
_FAST_TYPES = frozenset(_PRIMITIVES)
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_SQL_NUMBER = re.compile(r"(?<![\w$.])-?\d+(?:\.\d+)?(?![\w$])")
_MAX_ITEMS = 50
_MAX_DEPTH = 4

KINDS = {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER, "client": SpanKind.CLIENT,
         "producer": SpanKind.PRODUCER, "consumer": SpanKind.CONSUMER}


def span_kind(kind: SpanKind | str | None) -> SpanKind:
    if kind is None:
        return SpanKind.INTERNAL
    if isinstance(kind, SpanKind):
        return kind
    try:
        return KINDS[str(kind).lower()]
    except KeyError:
        raise ValueError(f"unknown span kind {kind!r}: use one of {', '.join(KINDS)}") from None


# --------------------------------------------------------------------------- safe values


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def is_secret_name(name: Any) -> bool:
    return isinstance(name, str) and SECRET_NAME.search(name) is not None


def safe_repr(value: Any, limit: int) -> str:
    """repr() with secret-named mapping keys redacted, never raising, at most ``limit`` characters."""
    try:
        text = _repr(value, limit, 0)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return truncate(text, limit)


def _repr(value: Any, limit: int, depth: int) -> str:
    if isinstance(value, str):
        return repr(value[: limit + 1])
    if depth < _MAX_DEPTH and isinstance(value, Mapping):
        parts = []
        for i, (key, item) in enumerate(value.items()):
            if i >= _MAX_ITEMS:
                parts.append("...")
                break
            shown = REDACTED if is_secret_name(key) else _repr(item, limit, depth + 1)
            parts.append(f"{key!r}: {shown}")
        return "{" + ", ".join(parts) + "}"
    if depth < _MAX_DEPTH and isinstance(value, (list, tuple, set, frozenset)):
        items = [_repr(v, limit, depth + 1) for _, v in zip(range(_MAX_ITEMS), value)]
        if len(value) > _MAX_ITEMS:
            items.append("...")
        if isinstance(value, list):
            return "[" + ", ".join(items) + "]"
        if isinstance(value, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "{" + ", ".join(items) + "}"
    return repr(value)


def clean_value(value: Any, limit: int) -> Any:
    """A value OpenTelemetry accepts as an attribute: primitives pass, others become a safe repr."""
    if isinstance(value, _PRIMITIVES):
        return truncate(value, limit) if isinstance(value, str) else value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, _PRIMITIVES) for v in value) \
            and len({type(v) for v in value}) == 1:
        return tuple(value)
    return safe_repr(value, limit)


def clean_attributes(attributes: Mapping[str, Any] | None, limit: int) -> Mapping[str, Any] | None:
    """Attributes OpenTelemetry accepts: values that are not str/bool/int/float become a safe repr.

    The common case (all primitive values) returns the mapping itself, because
    this runs on the application thread for every span; long strings are
    truncated by the SDK's span limits.
    """
    if not attributes:
        return None
    for value in attributes.values():
        if type(value) not in _FAST_TYPES:
            break
    else:
        return attributes
    return {str(key): clean_value(value, limit) for key, value in attributes.items() if value is not None}


def redact_query(query: str) -> str:
    """Replace SQL string and number literals with ``?`` so values never reach a span."""
    return _SQL_NUMBER.sub("?", _SQL_STRING.sub("?", query))


def safe_url(url: str) -> str:
    """Drop credentials from a URL."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


def mark_error(span: Span, error: BaseException) -> None:
    """ERROR status, error.type and an ``exception`` event, as OpenTelemetry conventions describe."""
    if not span.is_recording():
        return
    span.set_attribute("error.type", type(error).__qualname__)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


# --------------------------------------------------------------------------- scopes


class CurrentSpan:
    """``with``: start a span, make it current, end it; exceptions mark it ERROR and propagate."""

    __slots__ = ("_tracer", "_name", "_kind", "_attributes", "_span", "_token")

    def __init__(self, tracer: trace.Tracer, name: str, kind: SpanKind, attributes: Mapping[str, Any] | None):
        self._tracer = tracer
        self._name = name
        self._kind = kind
        self._attributes = attributes

    def __enter__(self) -> Span:
        span = self._span = self._tracer.start_span(self._name, kind=self._kind, attributes=self._attributes)
        self._token = context_api.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type, exc, tb) -> bool:
        span = self._span
        if exc is not None:
            mark_error(span, exc)
        span.end()
        context_api.detach(self._token)
        return False

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return self.__exit__(exc_type, exc, tb)


class SpanScope:
    """A reusable recipe for a span: ``with`` it (each entry opens a new span) or decorate a function."""

    def __init__(self, tracer: trace.Tracer, name: str, kind: SpanKind = SpanKind.INTERNAL,
                 attributes: Mapping[str, Any] | None = None, max_length: int = 1024):
        self.tracer = tracer
        self.name = name
        self.kind = kind
        self.attributes = dict(attributes or {})
        self.max_length = max_length
        self._open: list[CurrentSpan] = []

    def __enter__(self) -> Span:
        scope = CurrentSpan(self.tracer, self.name, self.kind, self.attributes)
        self._open.append(scope)
        return scope.__enter__()

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._open.pop().__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable) -> Callable:
        return traced(self.tracer, func, self.name, self.kind, self.attributes, False, self.max_length)


class NoopScope:
    """What a disabled manager hands out: yields a non-recording span, decorates as identity."""

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, exc_type, exc, tb) -> bool:
        return False

    async def __aenter__(self) -> Span:
        return INVALID_SPAN

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return False

    def __call__(self, func: Callable) -> Callable:
        return func


NOOP_SCOPE = NoopScope()


# --------------------------------------------------------------------------- function tracing


def _argument_recorder(func: Callable, limit: int) -> Callable[[tuple, dict], dict[str, str]] | None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None

    def record(args: tuple, kwargs: dict) -> dict[str, str]:
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError:
            return {}
        attributes = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if name in ("self", "cls") and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                continue
            if kind is inspect.Parameter.VAR_KEYWORD:
                for key, item in value.items():
                    attributes[f"function.args.{key}"] = REDACTED if is_secret_name(key) else safe_repr(item, limit)
            elif is_secret_name(name):
                attributes[f"function.args.{name}"] = REDACTED
            else:
                attributes[f"function.args.{name}"] = safe_repr(value, limit)
        return attributes

    return record


def succeeded(span: Span, result: Any, record_result: bool, limit: int) -> None:
    """Mark a call that returned: ``success=True`` and status OK (as the original ``with_tracing`` did), and
    with ``record_result`` the return value as ``function.return_value`` (redacted and truncated like arguments)."""
    span.set_attribute("success", True)
    span.set_status(Status(StatusCode.OK))
    if record_result:
        span.set_attribute("function.return_value", safe_repr(result, limit))


def failed(span: Span, error: BaseException) -> None:
    """Mark a call that raised: ERROR status, the exception event and ``success=False``."""
    mark_error(span, error)
    span.set_attribute("success", False)


def traced(tracer: trace.Tracer, func: Callable, name: str | None, kind: SpanKind,
           attributes: Mapping[str, Any] | None, record_args: bool, limit: int,
           record_result: bool = False) -> Callable:
    """Wrap a sync/async function or (async) generator so each call (or iteration) is one span.

    A call that returns is marked ``success=True`` with status OK; one that raises is marked ERROR."""
    span_name = name or f"{func.__module__}.{func.__qualname__}"
    base = {"code.function.name": func.__qualname__, "code.namespace": func.__module__}
    base.update(attributes or {})
    recorder = _argument_recorder(func, limit) if record_args else None

    def start(args: tuple, kwargs: dict) -> Span:
        attrs = base
        if recorder is not None:
            attrs = {**base, **recorder(args, kwargs)}
        return tracer.start_span(span_name, kind=kind, attributes=attrs)

    if inspect.isasyncgenfunction(func):
        @functools.wraps(func)
        async def async_gen_wrapper(*args, **kwargs):
            span = start(args, kwargs)
            ctx = trace.set_span_in_context(span)
            items = 0
            try:
                token = context_api.attach(ctx)
                try:
                    agen = func(*args, **kwargs)
                finally:
                    context_api.detach(token)
                method, value = "asend", None
                while True:
                    token = context_api.attach(ctx)
                    try:
                        item = await (agen.asend(value) if method == "asend" else agen.athrow(value))
                    except StopAsyncIteration:
                        succeeded(span, None, False, limit)
                        return
                    finally:
                        context_api.detach(token)
                    items += 1
                    try:
                        value, method = (yield item), "asend"
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:  # thrown in by the consumer: forward it
                        value, method = exc, "athrow"
            except GeneratorExit:
                span.set_attribute("generator.closed_early", True)
                raise
            except BaseException as exc:
                failed(span, exc)
                raise
            finally:
                span.set_attribute("generator.items", items)
                span.end()

        return async_gen_wrapper

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def async_wrapper(*args, **kwargs):
            span = start(args, kwargs)
            token = context_api.attach(trace.set_span_in_context(span))
            try:
                result = await func(*args, **kwargs)
                succeeded(span, result, record_result, limit)
                return result
            except BaseException as exc:
                failed(span, exc)
                raise
            finally:
                span.end()
                context_api.detach(token)

        return async_wrapper

    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def gen_wrapper(*args, **kwargs):
            span = start(args, kwargs)
            ctx = trace.set_span_in_context(span)
            items = 0
            try:
                token = context_api.attach(ctx)
                try:
                    gen = func(*args, **kwargs)
                finally:
                    context_api.detach(token)
                method, value = "send", None
                while True:
                    token = context_api.attach(ctx)
                    try:
                        item = gen.send(value) if method == "send" else gen.throw(value)
                    except StopIteration as stop:
                        succeeded(span, stop.value, record_result, limit)
                        return stop.value
                    finally:
                        context_api.detach(token)
                    items += 1
                    try:
                        value, method = (yield item), "send"
                    except GeneratorExit:
                        gen.close()
                        raise
                    except BaseException as exc:  # thrown in by the consumer: forward it
                        value, method = exc, "throw"
            except GeneratorExit:
                span.set_attribute("generator.closed_early", True)
                raise
            except BaseException as exc:
                failed(span, exc)
                raise
            finally:
                span.set_attribute("generator.items", items)
                span.end()

        return gen_wrapper

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        span = start(args, kwargs)
        token = context_api.attach(trace.set_span_in_context(span))
        try:
            result = func(*args, **kwargs)
            succeeded(span, result, record_result, limit)
            return result
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            span.end()
            context_api.detach(token)

    return wrapper


# --------------------------------------------------------------------------- semantic helpers


def database_attributes(operation: str, table: str | None, query: str | None, limit: int) -> tuple[str, dict]:
    attributes: dict[str, Any] = {"db.operation.name": operation}
    if table:
        attributes["db.collection.name"] = table
    if query:
        attributes["db.query.text"] = truncate(redact_query(query), limit)
    return (f"{operation} {table}" if table else operation), attributes


def external_attributes(service_name: str, endpoint: str | None, limit: int) -> tuple[str, dict]:
    attributes: dict[str, Any] = {"peer.service": service_name}
    if endpoint:
        if "://" in endpoint:
            url = safe_url(endpoint)
            attributes["url.full"] = truncate(url, limit)
            try:
                parts = urlsplit(url)
                if parts.hostname:
                    attributes["server.address"] = parts.hostname
                if parts.port:
                    attributes["server.port"] = parts.port
            except ValueError:
                pass
        else:
            attributes["peer.endpoint"] = truncate(endpoint, limit)
    return (f"{service_name} {endpoint}" if endpoint else service_name), attributes


def tool_attributes(tool_name: str, operation: str) -> tuple[str, dict]:
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool_name,
                  "tool.name": tool_name, "tool.operation": operation}
    return f"execute_tool {tool_name}.{operation}", attributes
