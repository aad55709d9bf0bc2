"""A module's underscore names are its own: no other Contrail module imports or reads them.

Read from the source: ``from x import _name`` of a Contrail module and ``module._name`` where
``module`` is a name bound by importing a Contrail module. A name another module needs is part of
its owner's interface and gets a public name. (Other libraries' private names are checked by
tests/tracer/test_otel_internals.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracer", "collector_worker", "web", "contrail_demo", "contrail_cli")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(path: Path) -> list[str]:
    """``file:line what`` for each use of another Contrail module's underscore name in ``path``."""
    module, tree = _module_name(path), ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found, modules = [], set()  # names bound to Contrail modules in this file
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                if _private(alias.name) and source != module:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} from {source} import {alias.name}")
                elif (ROOT / Path(*source.split("."), alias.name)).is_dir() or \
                        (ROOT / Path(*source.split("."), alias.name + ".py")).is_file():
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id in modules:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    uses = [use for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            for use in private_uses(path)]
    assert uses == []


def test_the_check_sees_both_forms(tmp_path, monkeypatch):
    package = tmp_path / "collector_worker"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "finalizer.py").write_text("_TRANSIENT = ()\n")
    (package / "pipeline.py").write_text("from . import finalizer\nfrom .finalizer import _TRANSIENT\n"
                                         "def f():\n    return finalizer._TRANSIENT, finalizer.__name__\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert [use.split(" ", 1)[1] for use in private_uses(package / "pipeline.py")] == [
        "from collector_worker.finalizer import _TRANSIENT", "finalizer._TRANSIENT"]
