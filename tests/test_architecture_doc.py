"""docs/architecture.md's "Where things are" table names every module of the tracer."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def where_things_are() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## Where things are")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_every_tracer_module_is_in_the_table():
    table = where_things_are()
    modules = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tracer").rglob("*.py")
                     if "__pycache__" not in path.parts)
    missing = [module for module in modules if f"`{module}`" not in table]
    assert missing == [], f"add to docs/architecture.md, Where things are: {missing}"
