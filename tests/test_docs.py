"""The documentation stays navigable and true: every relative link in the Markdown docs reaches a
file (and, with ``#anchor``, a heading of it, by GitHub's rules), and every ``infscope.…`` name the
docs mention still exists. History pages (the changelog, the benchmark history) describe the past,
so their names are not checked; their links are."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Pages whose ``infscope.…`` names may be historical (modules since moved or renamed).
HISTORY = {Path("CHANGELOG.md"), Path("docs/benchmarks/history.md")}

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
DOTTED = re.compile(r"\binfscope(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def markdown_files() -> list[Path]:
    files = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "bench").glob("*.md"))
    return [f for f in files if f.is_file()]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: the rendered text lower-cased, punctuation other than ``-`` and
    ``_`` dropped, spaces turned into hyphens (duplicates are numbered by the caller)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        out += [(number, target) for target in LINK.findall(line)]
        ref = REFERENCE.match(line)
        if ref:
            out.append((number, ref.group(1)))
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{where} (no heading with that anchor)")
    return problems


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_slug_follows_github():
    assert github_slug("Scaling to 10⁶: distributed extraction, an index") == (
        "scaling-to-10⁶-distributed-extraction-an-index"
    )
    assert github_slug("gpt2-trec (M = 50)") == "gpt2-trec-m--50"
    assert github_slug("`infscope audit` against cleanlab") == "infscope-audit-against-cleanlab"
    assert github_slug("Label propagation: ag_news (4000 examples)") == (
        "label-propagation-ag_news-4000-examples"
    )


def test_link_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Part two\n\n[ok](#part-two) [ok](b.md#b)\n")
    (tmp_path / "b.md").write_text("# B\n\n[bad](a.md#part-3) [gone](c.md) `[code](x.md)`\n")
    assert broken_links(tmp_path / "a.md", tmp_path) == []
    assert broken_links(tmp_path / "b.md", tmp_path) == [
        "b.md:3: a.md#part-3 (no heading with that anchor)",
        "b.md:3: c.md (no such file)",
    ]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_named_objects_exist():
    missing = []
    for path in markdown_files():
        if path.relative_to(ROOT) in HISTORY:
            continue
        names = set(DOTTED.findall(path.read_text(encoding="utf-8")))
        missing += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(names) if not resolves(n)]
    assert missing == []
