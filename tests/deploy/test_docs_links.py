"""Relative links in README.md, docs/ and deploy/ point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "deploy").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(document: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)  # code blocks hold no links
    return [target for target in LINK.findall(text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")]


def anchors(document: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def broken(document: Path, target: str) -> bool:
    path, _, anchor = target.partition("#")
    file = document.parent / path
    if not file.exists():
        return True
    return bool(anchor) and file.suffix == ".md" and anchor not in anchors(file)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
    missing = [t for t in relative_links(document) if broken(document, t)]
    assert not missing, f"{document.relative_to(ROOT)} links to missing files or headings: {missing}"


def test_the_check_sees_links_and_anchors():
    assert "docs/performance.md" in relative_links(ROOT / "README.md")
    assert not broken(ROOT / "docs" / "statistics.md", "collector.md#measured-figures")
    assert broken(ROOT / "docs" / "statistics.md", "collector.md#no-such-heading")
    assert broken(ROOT / "README.md", "docs/no-such-file.md")
