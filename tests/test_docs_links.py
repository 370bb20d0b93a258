"""Every relative link, image and anchor in README.md and docs/*.md points at something that
exists, and so does every repository path named in backticks or code blocks (`configs/x.yaml`,
`bench/y.py`, `docs/z.md`, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# top-level folders (and files) of the repository a path in the text can start with
REPO_DIRS = ("bench", "configs", "docs", "src", "tests", ".ci")
REPO_FILES = ("Makefile", "pyproject.toml", "README.md")

_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_PATH = re.compile(r"(?<![\w./~<$-])((?:%s)/[\w.+-]+(?:/[\w.+-]+)*|(?:%s))(?![\w/*<>{$-])"
                   % ("|".join(map(re.escape, REPO_DIRS)), "|".join(map(re.escape, REPO_FILES))))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The ``#anchors`` a page's headings give (repeated headings get ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Relative links / images of ``page`` whose file or heading anchor does not exist."""
    text = _FENCE.sub("", page.read_text())
    text = _CODE.sub("", text)
    problems = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{page.name}: link to missing {target}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{page.name}: link to missing heading {target}")
    return problems


def missing_paths(page: Path) -> list[str]:
    """Repository paths named in inline code or code blocks of ``page`` that do not exist."""
    text = page.read_text()
    spans = [m.group(0) for m in _FENCE.finditer(text)]
    spans += [m.group(2) for m in _CODE.finditer(_FENCE.sub("", text))]
    problems = []
    for span in spans:
        for path in _PATH.findall(span):
            if not (ROOT / path.rstrip(".")).exists():
                problems.append(f"{page.name}: names missing {path}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_and_named_files_exist(page: Path) -> None:
    problems = broken_links(page) + missing_paths(page)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_broken_link_and_a_missing_file(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text("# Page\n\n[ok](there.md#a-heading) [gone](nothere.md) [bad](there.md#no-such) "
                    "![img](pic.png) [web](https://example.com) [self](#page)\n\n"
                    "Run `python bench/no_such_script.py` or `configs/birds_demo.yaml`.\n\n"
                    "```bash\nsynthdet experiment configs/no_such.yaml\n```\n")
    assert broken_links(page) == ["page.md: link to missing nothere.md", "page.md: link to missing heading there.md#no-such",
                                  "page.md: link to missing pic.png"]
    assert missing_paths(page) == ["page.md: names missing configs/no_such.yaml",
                                   "page.md: names missing bench/no_such_script.py"]


def test_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
