"""Docs and help name only files the repository ships.

Checked in README.md, docs/*.md, examples/, the Makefile, every source file under
src/ (docstrings become the API reference and the help) and every ``kpsim VERB
--help``:

- a Markdown link ``[text](target)`` that is not a URL points at a file or directory;
- a document name ``NAME.md`` (with or without a path) is a shipped file: beside the
  text that names it, at the top of the repository, or in docs/;
- a repository path (``src/kpsim/...``, ``tests/...``, ``docs/*.md``, ``examples/...``,
  ``benchmarks/...``, ``tools/NAME``) exists (``src/simpy/...`` is another project's
  layout, ``tools/testing/kunit/...`` the kernel's);
- a section reference ``spec §N`` / ``kpkeys-spec.md §N`` / ``pt-lifecycle.md §N``
  names a numbered heading of docs/kpkeys-spec.md / docs/pt-lifecycle.md, and
  ``DESIGN.md, "Title"`` a heading or a bullet's lead word (``- Errors:``) of
  docs/DESIGN.md.

Kernel paths (``arch/arm64/mm/ptdump.c``, ``Documentation/...rst``) and URLs are not
this repository's and are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_URL = re.compile(r"\b[a-z]+://\S+")
_MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_MD_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)\b")
_REPO_PATH = re.compile(
    r"(?<![\w/.$-])((?:src/kpsim|tests|examples|benchmarks)/[\w./-]*[\w/]"
    r"|docs/[\w.-]+\.md|tools/[\w.-]+(?![\w./-]))"
)
_SECTION = re.compile(r"\b(spec|kpkeys-spec\.md|pt-lifecycle\.md)`{0,2},? §\s?(\d+(?:\.\d+)?)")
_DESIGN = re.compile(r'DESIGN\.md`{0,2}, "([^"]+)"')
_PLACEHOLDER = re.compile(r"[{}*<>$]|\b[A-Z]{3,}\b")


def _headings(path: Path) -> list[str]:
    return [ln.lstrip("#").strip() for ln in path.read_text().splitlines() if ln.startswith("#")]


def _numbered(path: Path) -> set[str]:
    """Section numbers of a document's headings (``## 4. ...``, ``### 4.10 ...``)."""
    out = set()
    for h in _headings(path):
        m = re.match(r"(\d+(?:\.\d+)?)\.?\s", h)
        if m:
            out.add(m.group(1))
    return out


def _has_part(path: Path, title: str) -> bool:
    """A heading holding ``title``, or a bullet that starts with it (``- Errors:``)."""
    if any(title in h for h in _headings(path)):
        return True
    lead = re.compile(rf"^- \**{re.escape(title)}\**[:.]", re.MULTILINE | re.IGNORECASE)
    return lead.search(path.read_text()) is not None


def problems(text: str, where: Path, root: Path = ROOT) -> Iterator[str]:
    """Every reference in ``text`` (found in ``where``) to something not shipped."""
    text = _URL.sub(" ", text)
    docs = root / "docs"
    for target in _MD_LINK.findall(text):
        path = target.split("#", 1)[0]
        if path and not (where.parent / path).exists():
            yield f"link to missing {target}"
    for name in _MD_NAME.findall(text):
        places = [where.parent / name, root / name, docs / name]
        if not any(p.is_file() for p in places):
            yield f"names missing document {name}"
    for path in _REPO_PATH.findall(text):
        if not _PLACEHOLDER.search(path) and not (root / path).exists():
            yield f"names missing path {path}"
    numbered = {
        "spec": docs / "kpkeys-spec.md",
        "kpkeys-spec.md": docs / "kpkeys-spec.md",
        "pt-lifecycle.md": docs / "pt-lifecycle.md",
    }
    for doc, section in _SECTION.findall(text):
        target = numbered[doc]
        if not target.is_file() or section not in _numbered(target):
            yield f"names missing section {doc} §{section}"
    design = docs / "DESIGN.md"
    for title in _DESIGN.findall(text):
        if not design.is_file() or not _has_part(design, title):
            yield f'names missing section DESIGN.md, "{title}"'


def _texts() -> Iterator[tuple[Path, str]]:
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted(DOCS.glob("*.md"))]
    files += sorted((ROOT / "src").rglob("*.py"))
    files += sorted(p for p in (ROOT / "examples").rglob("*") if p.is_file())
    for path in files:
        yield path, path.read_text(encoding="utf-8")


def _help_texts() -> Iterator[tuple[str, str]]:
    from kpsim.cli.main import build_parser

    parser = build_parser()
    yield "kpsim --help", parser.format_help()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():  # type: ignore[attr-defined]
        yield f"kpsim {name} --help", p.format_help()


def test_docs_and_sources_name_only_shipped_files() -> None:
    """No document, docstring or example names a file, path or section not shipped."""
    found = [
        f"{path.relative_to(ROOT)}: {p}" for path, text in _texts() for p in problems(text, path)
    ]
    assert found == []


def test_help_names_only_shipped_files() -> None:
    """No ``kpsim VERB --help`` names a file, path or section not shipped."""
    found = [f"{cmd}: {p}" for cmd, text in _help_texts() for p in problems(text, ROOT / "x")]
    assert found == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("see [the design](nowhere.md)", "link to missing nowhere.md"),
        ("as pt-lifecycle-old.md says", "names missing document pt-lifecycle-old.md"),
        ("in `src/kpsim/nothing.py`", "names missing path src/kpsim/nothing.py"),
        ("spec §42", "names missing section spec §42"),
        ("pt-lifecycle.md §9.9", "names missing section pt-lifecycle.md §9.9"),
        ('DESIGN.md, "No such part"', 'names missing section DESIGN.md, "No such part"'),
    ],
)
def test_the_checker_finds_each_kind_of_missing_reference(text: str, problem: str) -> None:
    """The checker can fail: each kind of dangling reference is reported."""
    assert problem in list(problems(text, ROOT / "README.md"))


def test_the_checker_accepts_what_is_shipped() -> None:
    """Negative control: references to shipped files and sections pass."""
    text = (
        "[docs](docs/README.md) fidelity.md `src/kpsim/cli/main.py` spec §4.10 "
        'pt-lifecycle.md §2.1 DESIGN.md, "Conventions" arch/arm64/mm/ptdump.c '
        "https://example.org/x.md"
    )
    assert list(problems(text, ROOT / "README.md")) == []
