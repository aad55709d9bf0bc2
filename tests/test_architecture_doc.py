"""docs/architecture.md's "Where things are" table names every module of the packages it describes.

A module is named by its path from the repository root in backticks. The
schema revisions are the one folder named as a whole
(``collector_worker/storage/migrations/versions/``): one numbered file per schema
change, described in the document's "Schema migrations" section. Every path
the table names exists, so a moved or deleted module does not linger there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracer", "collector_worker", "web", "contrail_cli", "contrail_demo")
NAMED_AS_A_FOLDER = "collector_worker/storage/migrations/versions/"


def where_things_are() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## Where things are")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def modules_of(package: str) -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / package).rglob("*.py")
                  if "__pycache__" not in path.parts)


def unnamed(modules: list[str], table: str) -> list[str]:
    """The modules the table does not name."""
    return [module for module in modules
            if f"`{module}`" not in table
            and not (module.startswith(NAMED_AS_A_FOLDER) and f"`{NAMED_AS_A_FOLDER}`" in table)]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_in_the_table(package):
    modules = modules_of(package)
    assert modules, package
    missing = unnamed(modules, where_things_are())
    assert missing == [], f"add to docs/architecture.md, Where things are: {missing}"


def test_a_module_left_out_is_found():
    table = where_things_are()
    module = "collector_worker/storage/vacuum.py"
    assert unnamed([module], table) == []
    assert unnamed([module], table.replace(f"`{module}`", "`vacuum.py`")) == [module]
    revision = NAMED_AS_A_FOLDER + "0001_v2_schema.py"
    assert unnamed([revision], table) == []
    assert unnamed([revision], table.replace(f"`{NAMED_AS_A_FOLDER}`", "")) == [revision]


def test_every_path_in_the_table_exists():
    named = re.findall(r"`((?:%s)/[\w/.]*)`" % "|".join(PACKAGES), where_things_are())
    assert len(named) > 50
    gone = [path for path in named if not (ROOT / path).exists()]
    assert gone == [], f"docs/architecture.md, Where things are, names what is not there: {gone}"
