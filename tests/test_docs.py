"""The README and docs/ hold together: every relative link (and its #anchor) points at a file and heading that
exist, the README stays a newcomer's page (under 350 lines), and no page cites tracker issue numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
ISSUE_REF = re.compile(r"\b[Ii]ssues? #?\d+\b|(?<![\w&/])#\d+\b")


def _prose(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (links and headings in code are not links)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(page.read_text(encoding="utf-8")):
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(page: Path) -> list[str]:
    return [m.group(1) for line in _prose(page.read_text(encoding="utf-8")) for m in LINK.finditer(line)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto: ...
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no file {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target})")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no heading #{anchor} in {target.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)} has broken links: " + "; ".join(broken)


def test_the_readme_is_a_newcomers_page():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n < 350, f"README.md has {n} lines; move reference material into docs/ (limit 350)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_page_cites_issue_numbers(page):
    hits = [  # prose only: program output in code blocks may print "#214" (a probe text's index)
        f"{m.group(0)} in: {line.strip()[:60]}"
        for line in _prose(page.read_text(encoding="utf-8"))
        for m in ISSUE_REF.finditer(line)
    ]
    assert not hits, f"{page.relative_to(ROOT)} cites issue numbers (say what changed instead): {hits}"


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [bad anchor](#nowhere)\n```\n[in code](x.md)\n```\n")
    links = _links(page)
    assert links == ["#title", "missing.md", "#nowhere"]
    assert "title" in _anchors(page) and "nowhere" not in _anchors(page)


def test_the_issue_check_sees_issue_numbers():
    assert all(ISSUE_REF.search(s) for s in ("as issue 13 says", "(#4)", "see #12", "Issues 20"))
    assert not any(ISSUE_REF.search(s) for s in ("&#8203;", "a/b#3", "colour #fff", "step 1"))
