"""with_tracing and the db / external / tool helpers, on every kind of callable."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import get_current_span

from tracer.decorators import redact_query, safe_repr

from tests.tracer.tracer_helpers import by_name, stream_spans


def test_sync_function_records_arguments_redacted_and_truncated(make_manager, redis_url):
    tracing = make_manager(max_attribute_length=40)

    @tracing.with_tracing("login", tags={"area": "auth-service"})
    def login(user, password, options=None, *rest, api_key=None, **extra):
        return user

    assert login("ann", "s3cret", {"authorization": "Bearer x", "n": 1}, 7, api_key="k", cookie="c",
                 note="y" * 100) == "ann"
    assert tracing.flush(5)
    (span,) = stream_spans(redis_url)
    attrs = span["attributes"]
    assert span["name"] == "login"
    assert attrs["area"] == "auth-service"
    assert attrs["function.args.user"] == "'ann'"
    assert attrs["function.args.password"] == "[REDACTED]"
    assert attrs["function.args.api_key"] == "[REDACTED]"
    assert attrs["function.args.cookie"] == "[REDACTED]"
    assert attrs["function.args.options"] == "{'authorization': [REDACTED], 'n': 1}"
    assert attrs["function.args.rest"] == "(7,)"
    assert len(attrs["function.args.note"]) == 40 and attrs["function.args.note"].endswith("...")
    assert "s3cret" not in repr(span) and "Bearer" not in repr(span)
    assert attrs["code.function.name"].startswith("test_sync_function")  # SDK limit truncates it too


def test_bare_decorator_default_name_and_record_args_off(make_manager, redis_url):
    tracing = make_manager()

    @tracing.with_tracing
    def add(a, b):
        return a + b

    @tracing.with_tracing(record_args=False)
    def quiet(secret_value):
        return 1

    assert add(1, 2) == 3 and quiet("x") == 1
    assert tracing.flush(5)
    spans = by_name(stream_spans(redis_url))
    assert f"{__name__}.test_bare_decorator_default_name_and_record_args_off.<locals>.add" in spans
    quiet_span = next(s for n, s in spans.items() if n.endswith("quiet"))
    assert not any(k.startswith("function.args") for k in quiet_span["attributes"])


def test_methods_skip_self(make_manager, redis_url):
    tracing = make_manager()

    class Repo:
        @tracing.with_tracing("repo.get")
        def get(self, key):
            return key

    assert Repo().get("k") == "k"
    assert tracing.flush(5)
    (span,) = stream_spans(redis_url)
    assert "function.args.self" not in span["attributes"]
    assert span["attributes"]["function.args.key"] == "'k'"


def test_exception_marks_error_and_propagates(make_manager, redis_url):
    tracing = make_manager()

    @tracing.with_tracing("boom")
    def boom():
        raise RuntimeError("bad")

    with pytest.raises(RuntimeError):
        boom()
    assert tracing.flush(5)
    (span,) = stream_spans(redis_url)
    assert span["status_code"] == "error"
    assert span["events"][0]["name"] == "exception"


def test_async_function_and_nesting(make_manager, redis_url):
    tracing = make_manager()

    @tracing.with_tracing("inner")
    async def inner():
        await asyncio.sleep(0)
        return 2

    @tracing.with_tracing("outer")
    async def outer():
        return await inner() + 1

    assert asyncio.run(outer()) == 3
    assert tracing.flush(5)
    spans = by_name(stream_spans(redis_url))
    assert spans["inner"]["parent_span_id"] == spans["outer"]["span_id"]


def test_generator_span_covers_iteration_and_context_does_not_leak(make_manager, redis_url):
    tracing = make_manager()
    seen_inside = []

    @tracing.with_tracing("rows")
    def rows(n):
        for i in range(n):
            seen_inside.append(get_current_span().get_span_context().span_id)
            with tracing.span(f"row{i}"):
                pass
            yield i

    with tracing.span("caller") as caller:
        results = []
        for value in rows(3):
            assert get_current_span() is caller  # between steps the caller's span is current
            results.append(value)
    assert results == [0, 1, 2]
    assert tracing.flush(5)
    spans = by_name(stream_spans(redis_url))
    gen_span = spans["rows"]
    assert gen_span["parent_span_id"] == spans["caller"]["span_id"]
    assert gen_span["attributes"]["generator.items"] == 3
    assert {format(x, "016x") for x in seen_inside} == {gen_span["span_id"]}
    for i in range(3):
        assert spans[f"row{i}"]["parent_span_id"] == gen_span["span_id"]
    assert gen_span["end_ns"] >= spans["row2"]["end_ns"]


def test_generator_send_throw_and_early_close(make_manager, redis_url):
    tracing = make_manager()

    @tracing.with_tracing("echo")
    def echo():
        received = None
        while True:
            try:
                received = yield received
            except ValueError:
                received = "recovered"

    gen = echo()
    assert next(gen) is None
    assert gen.send("a") == "a"
    assert gen.throw(ValueError("x")) == "recovered"
    gen.close()

    @tracing.with_tracing("failing_gen")
    def failing():
        yield 1
        raise KeyError("k")

    with pytest.raises(KeyError):
        list(failing())
    assert tracing.flush(5)
    spans = by_name(stream_spans(redis_url))
    assert spans["echo"]["attributes"]["generator.closed_early"] is True
    assert spans["echo"]["status_code"] == "unset"
    assert spans["failing_gen"]["status_code"] == "error"


def test_async_generator(make_manager, redis_url):
    tracing = make_manager()

    @tracing.with_tracing("agen")
    async def agen():
        for i in range(2):
            with tracing.span("step"):
                await asyncio.sleep(0)
            yield i

    async def consume():
        return [x async for x in agen()]

    assert asyncio.run(consume()) == [0, 1]
    assert tracing.flush(5)
    spans = stream_spans(redis_url)
    gen_span = next(s for s in spans if s["name"] == "agen")
    steps = [s for s in spans if s["name"] == "step"]
    assert len(steps) == 2 and all(s["parent_span_id"] == gen_span["span_id"] for s in steps)
    assert gen_span["attributes"]["generator.items"] == 2


def test_database_external_tool_helpers_as_decorator_and_context_manager(make_manager, redis_url):
    tracing = make_manager()

    with tracing.trace_database_operation("SELECT", table="orders",
                                          query="SELECT * FROM orders WHERE email = 'a@b.c' AND id = 42"):
        pass

    @tracing.trace_external_call("payments", endpoint="https://user:pw@pay.example.com:8443/charge")
    def charge():
        return "ok"

    assert charge() == "ok"

    async def run_tool():
        async with tracing.trace_tool_execution("search", "query") as span:
            assert span.is_recording()
            raise LookupError("no hits")

    with pytest.raises(LookupError):
        asyncio.run(run_tool())
    assert tracing.flush(5)
    spans = by_name(stream_spans(redis_url))
    db = spans["SELECT orders"]
    assert db["kind"] == "client"
    assert db["attributes"]["db.operation.name"] == "SELECT"
    assert db["attributes"]["db.collection.name"] == "orders"
    assert db["attributes"]["db.query.text"] == "SELECT * FROM orders WHERE email = ? AND id = ?"
    ext = next(s for n, s in spans.items() if n.startswith("payments"))
    assert ext["kind"] == "client"
    assert ext["attributes"]["peer.service"] == "payments"
    assert ext["attributes"]["url.full"] == "https://pay.example.com:8443/charge"
    assert ext["attributes"]["server.address"] == "pay.example.com"
    assert ext["attributes"]["server.port"] == 8443
    tool = next(s for n, s in spans.items() if "search" in n)
    assert tool["attributes"]["gen_ai.tool.name"] == "search"
    assert tool["attributes"]["tool.operation"] == "query"
    assert tool["status_code"] == "error"


def test_helper_scope_reusable_for_nested_entries(make_manager, redis_url):
    tracing = make_manager()
    scope = tracing.trace_external_call("cache")
    with scope as first:
        with scope as second:
            assert second.parent.span_id == first.get_span_context().span_id
    assert tracing.flush(5)
    assert len(stream_spans(redis_url)) == 2


def test_safe_repr_never_raises_and_redacts_nested():
    class Bad:
        def __repr__(self):
            raise RuntimeError("no")

    assert safe_repr(Bad(), 100) == "<unrepresentable Bad>"
    assert safe_repr({"creds": {"client_secret": "x", "name": "n"}}, 200) == \
        "{'creds': {'client_secret': [REDACTED], 'name': 'n'}}"
    assert len(safe_repr("z" * 10_000, 50)) == 50
    assert safe_repr(list(range(1000)), 10_000).endswith("...]")


def test_redact_query_keeps_identifiers():
    assert redact_query("UPDATE t2 SET a = 'it''s', b = -3.5 WHERE col_1 = 7") == \
        "UPDATE t2 SET a = ?, b = ? WHERE col_1 = ?"
