"""tracer/otel_internals.py is the one place that touches OpenTelemetry internals, and its fallbacks are exact.

The first test reads the source of the three packages: outside that module,
no import of a private name or module of opentelemetry, celery or kombu, and
no attribute access (``x._name``, ``getattr(x, "_name")``) whose name is a
private attribute those libraries define, on anything but the module's own
``self``/``cls``. The private names are read from the installed libraries'
own source, so an SDK upgrade that adds one is covered too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from tracer import codec, otel_internals, propagation
from tracer.export import encode_sdk_spans

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("tracer", "collector_worker", "web")
LIBRARIES = ("opentelemetry", "celery", "kombu")
THE_MODULE = ROOT / "tracer" / "otel_internals.py"


def _library_roots() -> list[Path]:
    """The installed libraries' source directories (every one of a namespace package like opentelemetry)."""
    roots = []
    for name in LIBRARIES:
        for entry in sys.path:
            candidate = Path(entry or ".") / name
            if candidate.is_dir() and candidate not in roots:
                roots.append(candidate)
    return roots


def library_private_names() -> set[str]:
    """Single-underscore attribute names the libraries define on their objects (``self._x``, ``def _x``)."""
    names: set[str] = set()
    for root in _library_roots():
        for path in root.rglob("*.py"):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            names.add(item.name)
                        elif isinstance(item, ast.Assign):
                            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
                elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                      and isinstance(node.value, ast.Name) and node.value.id == "self"):
                    names.add(node.attr)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def product_modules() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            if "__pycache__" not in path.parts and path != THE_MODULE]


def _is_private_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] in LIBRARIES and any(part.startswith("_") and not part.startswith("__") for part in parts)


def violations_in(path: Path, private: set[str]) -> list[str]:
    """``"file:line what"`` for each import or attribute access of a library's private name in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    where = lambda node: f"{path.name}:{node.lineno}"  # noqa: E731
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            if _is_private_module(node.module):
                found.append(f"{where(node)} imports from {node.module}")
            found += [f"{where(node)} imports {node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Import):
            found += [f"{where(node)} imports {a.name}" for a in node.names if _is_private_module(a.name)]
        elif isinstance(node, ast.Attribute) and node.attr in private:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{where(node)} reads .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in private):
            found.append(f"{where(node)} {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_nothing_outside_otel_internals_touches_library_internals():
    private = library_private_names()
    assert {"_context", "_attributes", "_span_limits", "_root", "_add_event"} <= private  # the reader works
    found = [f"{path.parent.name}/{v}" for path in product_modules() for v in violations_in(path, private)]
    assert found == [], "use tracer/otel_internals.py (or the public API):\n" + "\n".join(found)


def test_the_grep_finds_what_it_looks_for(tmp_path):
    private = library_private_names()
    sample = tmp_path / "sample.py"
    sample.write_text("from opentelemetry.trace.propagation import _SPAN_KEY\n"
                      "from opentelemetry.sdk.trace._tracer_metrics import X\n"
                      "def f(span, self):\n    return span._context, getattr(span, '_attributes'), self._context\n")
    found = [v.split(" ", 1)[1] for v in violations_in(sample, private)]
    assert found == ["imports opentelemetry.trace.propagation._SPAN_KEY",
                     "imports from opentelemetry.sdk.trace._tracer_metrics", "reads ._context",
                     "getattr(..., '_attributes')"]


# --------------------------------------------------------------------------- the shortcuts are on, and exact


def test_every_shortcut_is_in_use_with_the_pinned_sdk():
    """If an SDK upgrade changes a shape, the shortcuts fall back silently: this says so here."""
    assert otel_internals.CONTEXT_KEYS and otel_internals.DIRECT_SPAN_CONTEXT
    assert otel_internals.SPAN_FIELDS and otel_internals.READ_DIRECT


def _finished_spans():
    provider = TracerProvider(resource=Resource({"service.name": "internals"}))
    tracer = provider.get_tracer("t", "1")
    linked = SpanContext(0xAB, 0xCD, True, TraceFlags(1))
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"a": 1, "b": "x"}) as root:
        root.add_event("e", {"n": 2.5}, timestamp=5)
        child = tracer.start_span("child", links=[Link(linked, {"l": True})])
        child.set_status(trace.Status(trace.StatusCode.ERROR, "bad"))
        child.end()
    return [child, root]


def test_export_reads_the_same_rows_through_the_public_accessors(monkeypatch):
    spans = _finished_spans()
    direct = codec.decode_entry(encode_sdk_spans(spans)).spans
    monkeypatch.setattr(otel_internals, "READ_DIRECT", False)
    monkeypatch.setattr(otel_internals, "span_fields", otel_internals._read_public)
    public = codec.decode_entry(encode_sdk_spans(spans)).spans
    assert public == direct
    assert [s["name"] for s in direct] == ["child", "root"] and direct[1]["attributes"] == {"a": 1, "b": "x"}


@pytest.mark.parametrize("value", ["00-" + "a" * 32 + "-" + "b" * 16 + "-01", "00-" + "0" * 32 + "-" + "b" * 16 + "-00"])
def test_span_context_is_the_same_built_either_way(monkeypatch, value):
    direct = propagation.parse_traceparent(value)
    monkeypatch.setattr(otel_internals, "DIRECT_SPAN_CONTEXT", False)
    public = propagation.parse_traceparent(value)
    assert type(direct) is type(public) is SpanContext
    assert tuple(direct) == tuple(public) and direct.is_valid is public.is_valid


def test_context_helpers_answer_as_the_public_functions():
    span = trace.NonRecordingSpan(SpanContext(1, 2, True))
    with_baggage = baggage.set_baggage("k", "v", trace.set_span_in_context(span, context.Context()))
    for direct in (True, False):
        otel_internals.use_context_keys(direct)
        try:
            made = otel_internals.context_with_span(span)
            assert trace.get_current_span(made) is span and dict(made) == dict(trace.set_span_in_context(span))
            assert otel_internals.current_span(made) is span
            assert otel_internals.has_baggage(with_baggage) and not otel_internals.has_baggage(made)
        finally:
            otel_internals.use_context_keys(True)
