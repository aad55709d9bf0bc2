"""The import contract: ``tracer`` <- ``collector_worker`` <- ``web`` <- ``contrail_cli``, no circles inside a package.

``contrail_demo`` (the demo system, traced services) builds on the tracer and
the collector's terminal output only; ``contrail_cli`` (the ``contrail``
command and ``contrail up``) sits above everything and nothing imports it.

Read from the source, not from what happens to be imported: every ``import``
and ``from ... import`` of every module (at module level or inside a
function: a lazy import is still a dependency), every
``importlib.import_module("...")`` / ``__import__("...")`` with a literal
name, and every ``"module:attribute"`` string literal naming one of the three
packages' modules (``"contrail_cli.up:up"``, the way a command table or an app
factory path refers to code). What no source text names (a module name computed at run
time) is not seen.

Known violations are listed explicitly below; each entry is an edge that
must still exist (so the list shrinks as the code is fixed), and any edge or
circle not listed fails the test.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracer", "collector_worker", "web", "contrail_demo", "contrail_cli")
# a package may import only the packages listed for it
ALLOWED = {"tracer": set(), "collector_worker": {"tracer"}, "web": {"tracer", "collector_worker"},
           "contrail_demo": {"tracer", "collector_worker"},
           "contrail_cli": {"tracer", "collector_worker", "web", "contrail_demo"}}

# Known violations: none left. An entry here is an edge that must still exist.
KNOWN_LAYER_VIOLATIONS: set[tuple[str, str]] = set()
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


# --------------------------------------------------------------------------- the graph


def module_files() -> dict[str, Path]:
    """Every module of the three packages, by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if "__pycache__" in parts or any(not part.isidentifier() for part in parts):
                continue
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (they name modules in prose, not as dependencies)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (``a.b.c`` or ``a.b:attr``) starts with."""
    name = name.split(":", 1)[0]
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_import_call(func: ast.expr) -> bool:
    """``importlib.import_module``, ``import_module`` or ``__import__``."""
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name in ("import_module", "__import__")


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the three packages that ``module`` imports or names by an import string."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    docstrings = _docstrings(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                targets.add(name.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            value = node.value  # "contrail_cli.up:up": a "module:attribute" reference, loaded later by name
            module_name, colon, attribute = value.partition(":")
            if colon and attribute.isidentifier() and module_name.split(".", 1)[0] in PACKAGES \
                    and all(part.isidentifier() for part in module_name.split(".")):
                targets.add(value)
    resolved = {_resolve(target, modules) for target in targets}
    resolved.discard(None)
    resolved.discard(module)
    return resolved


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def top(module: str) -> str:
    return module.split(".", 1)[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


# --------------------------------------------------------------------------- the contract


def test_the_graph_sees_imports_of_every_kind(graph):
    """The reader finds lazy imports, relative imports and import strings (else the contract checks nothing)."""
    assert "tracer.celery" in graph["tracer.manager"]                 # inside a method, relative
    assert "tracer.celery.hot_spans" in graph["tracer.celery.tracing"]  # relative, from a subpackage
    assert "tracer.codec" in graph["collector_worker.consumer"]       # absolute
    assert {"contrail_cli.up", "web.server", "contrail_demo.cli"} <= graph["contrail_cli.main"]  # "web.server:web"


def test_packages_import_only_the_packages_below_them(graph):
    violations = {(module, target) for module, targets in graph.items() for target in targets
                  if top(target) != top(module) and top(target) not in ALLOWED[top(module)]}
    new = sorted(violations - KNOWN_LAYER_VIOLATIONS)
    assert not new, f"imports against tracer <- collector_worker <- web: {new}"
    stale = sorted(KNOWN_LAYER_VIOLATIONS - violations)
    assert not stale, f"fixed: delete these from KNOWN_LAYER_VIOLATIONS: {stale}"


def test_no_import_circles_inside_a_package(graph):
    for module, target in KNOWN_CYCLE_EDGES:
        assert target in graph[module], f"fixed: delete {(module, target)} from KNOWN_CYCLE_EDGES"
    inside = {module: {target for target in targets if top(target) == top(module)
                       and (module, target) not in KNOWN_CYCLE_EDGES}
              for module, targets in graph.items()}
    assert cycles(inside) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("statement", [
    "import tracer",
    "import tracer; from tracer.celery import instrument_celery, CeleryTracing",
    "from tracer.manager import TracingManager; TracingManager(service_name='x', enabled=False)",
])
def test_importing_the_tracer_imports_neither_celery_nor_flask(statement):
    code = (f"{statement}\nimport sys\n"
            "loaded = sorted(name for name in ('celery', 'flask', 'kombu', 'werkzeug') if name in sys.modules)\n"
            "assert not loaded, loaded\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
