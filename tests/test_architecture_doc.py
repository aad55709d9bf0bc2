"""docs/architecture.md's "Where things are" table names every module of the packages it describes.

``collector_worker/storage/`` is described in the storage section of the same
document rather than module by module, so the check leaves it out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracer", "collector_worker", "web", "contrail_cli", "contrail_demo")
NOT_LISTED_ONE_BY_ONE = ("collector_worker/storage/",)


def where_things_are() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## Where things are")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_the_table(package):
    table = where_things_are()
    modules = sorted(str(path.relative_to(ROOT)) for path in (ROOT / package).rglob("*.py")
                     if "__pycache__" not in path.parts)
    assert modules, package
    missing = [module for module in modules if f"`{module}`" not in table
               and not module.startswith(NOT_LISTED_ONE_BY_ONE)]
    assert missing == [], f"add to docs/architecture.md, Where things are: {missing}"
