"""The documentation's references resolve inside the repository.

* Every relative link and image in every Markdown file points to a file or folder of the repository, and
  an anchor (``page.md#section``) to a heading of that page.
* Every section reference such as ``docs/design.md §2`` (in code, comments and docs) names an existing
  Markdown file that has a heading numbered 2; a bare ``§2`` is allowed in Markdown (it means the page
  itself) but not in code, where it would name no file. A quoted heading reference such as
  ``BENCHMARKS.md "Scale on paper"`` names an existing heading.
* Paths of the repository written as inline code in Markdown (``pipeline/sampler.py``) exist.
* Every page under ``docs/`` can be reached by links from the README.

The scanners are checked on small hand-made inputs first, so a regex that silently matches nothing cannot
make the repository checks pass.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Files scanned for section references (code, scripts, configs and docs).
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".cfg", ".txt"}
TEXT_NAMES = {"Dockerfile", "Makefile", "run"}
#: Folders never scanned when git cannot list the repository's files.
SKIP_DIRS = {".git", ".venv", "__pycache__", "runs", "data", "build", ".pytest_cache", ".hypothesis"}
#: Top-level folders whose paths, written as inline code in Markdown, must exist.
CODE_DIRS = ("preprocess", "pipeline", "model", "training", "docker", "tests", "docs", "bench", "synthetic", "shardformat", ".ci")

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
#: ``FILE §N``: FILE is a path ending in .md or an all-caps name (``NOTES §3`` must fail: no such file).
SECTION_REF = re.compile(r"(?:((?:[\w.-]+/)*[\w.-]+\.md|\b[A-Z][A-Z_]{3,}\b)[`'\"]?\s*)?§\s*(\d+)")
#: ``FILE.md "Heading"`` (or ``README "Heading"``): a named section of a Markdown file.
QUOTED_REF = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.md|\b[A-Z][A-Z_]{3,}\b)[`']?\s+\"([^\"\n]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


def repo_files() -> list[Path]:
    """The repository's files: git's list (tracked + untracked, not ignored) or, without git, a walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True, timeout=60).stdout
        return sorted({REPO / name for name in out.decode().split("\0") if name and (REPO / name).is_file()})
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in REPO.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(REPO).parts[:-1]))


def text_files() -> list[Path]:
    """Files scanned for section references; this file is left out, its examples are meant to fail."""
    me = Path(__file__).resolve()
    return [p for p in repo_files() if (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES) and p.resolve() != me]


def markdown_files() -> list[Path]:
    return [p for p in repo_files() if p.suffix == ".md"]


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def without_code(text: str) -> str:
    """Markdown text with fenced blocks and inline code blanked (same length, so offsets keep their lines)."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731
    return INLINE_CODE.sub(blank, FENCE.sub(blank, text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = LINK.sub(lambda m: m.group(1), heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    return [m.group(2) for m in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8")))]


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(path):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def section_numbers(path: Path) -> set[int]:
    """Numbers of the page's numbered headings: ``## 2. Sampling`` or ``## §2 Sampling``."""
    return {int(m.group(1)) for h in headings(path) if (m := re.match(r"§?\s*(\d+)[.)\s]", h + " "))}


def link_problems(md: Path) -> list[str]:
    """Every relative link or image of ``md`` that does not resolve to a file/folder (and heading) of the repo."""
    text = without_code(md.read_text(encoding="utf-8"))
    targets = [m.group(2) for m in LINK.finditer(text)] + LINK_DEF.findall(text)
    problems = []
    for target in targets:
        if SCHEME.match(target):
            continue  # http(s), mailto, ...: not a repository path
        path_part, _, anchor = target.partition("#")
        if path_part.startswith("/"):
            dest = (REPO / path_part.lstrip("/")).resolve()
        else:
            dest = (md.parent / path_part).resolve() if path_part else md
        if REPO.resolve() not in (dest, *dest.parents):
            problems.append(f"{rel(md)}: link {target!r} leaves the repository")
        elif not dest.exists():
            problems.append(f"{rel(md)}: link {target!r}: {path_part} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{rel(md)}: link {target!r}: {rel(dest)} has no heading with anchor #{anchor}")
    return problems


def _ref_file(name: str, source: Path) -> Path | None:
    """The Markdown file a reference names: relative to the repository root, or (in Markdown) to the page."""
    name = name if name.endswith(".md") else f"{name}.md"
    candidates = [REPO / name] + ([source.parent / name] if source.suffix == ".md" else [])
    return next((c.resolve() for c in candidates if c.is_file() and REPO.resolve() in c.resolve().parents), None)


def reference_problems(path: Path) -> list[str]:
    """Section references (``FILE §N``, ``FILE.md "Heading"``) in ``path`` that do not resolve."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    is_md = path.suffix == ".md"
    problems = []
    if is_md:
        # a link whose text holds §N (``[design §2](design.md#...)``): the link's target page must have section N
        for m in LINK.finditer(without_code(raw)):
            numbers = [int(n) for n in re.findall(r"§\s*(\d+)", m.group(1))]
            dest_part = m.group(2).partition("#")[0]
            if numbers and not SCHEME.match(m.group(2)):
                dest = (path.parent / dest_part).resolve() if dest_part else path
                missing = [n for n in numbers if not dest.is_file() or n not in section_numbers(dest)]
                if missing:
                    problems.append(f"{rel(path)}: link {m.group(0)!r}: no section §{missing[0]} in {dest_part or rel(path)}")
        # the links are checked above; inline code is an example, not a reference
        raw = LINK.sub(lambda m: " " * len(m.group(0)), without_code(raw))
    for m in SECTION_REF.finditer(raw):
        name, number = m.group(1), int(m.group(2))
        line = raw.count("\n", 0, m.start()) + 1
        if name is None:
            if not is_md:
                problems.append(f"{rel(path)}:{line}: '§{number}' names no file (write e.g. docs/design.md §{number})")
            elif number not in section_numbers(path):
                problems.append(f"{rel(path)}:{line}: no section §{number} in this page")
            continue
        target = _ref_file(name, path)
        if target is None:
            problems.append(f"{rel(path)}:{line}: '{name} §{number}': no file {name} in the repository")
        elif number not in section_numbers(target):
            problems.append(f"{rel(path)}:{line}: '{name} §{number}': {rel(target)} has no section {number}")
    for m in QUOTED_REF.finditer(raw):
        name, title = m.group(1), m.group(2)
        line = raw.count("\n", 0, m.start()) + 1
        target = _ref_file(name, path)
        if target is None:
            problems.append(f"{rel(path)}:{line}: '{name} \"{title}\"': no file {name} in the repository")
        elif not any(re.sub(r"^§?\d+[.)]?\s*", "", h.replace("`", "")).startswith(title) for h in headings(target)):
            problems.append(f"{rel(path)}:{line}: '{name} \"{title}\"': {rel(target)} has no such heading")
    return problems


def code_path_problems(md: Path) -> list[str]:
    """Repository paths written as inline code in ``md`` (``pipeline/sampler.py``) that do not exist."""
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    problems = []
    for m in INLINE_CODE.finditer(text):
        token = m.group(2).strip()
        if re.fullmatch(rf"(?:{'|'.join(map(re.escape, CODE_DIRS))})/[\w./-]*", token) and not (REPO / token).exists():
            problems.append(f"{rel(md)}: `{token}` does not exist")
    return problems


# ------------------------------------------------------------------------------- the scanners themselves


@pytest.fixture
def page(tmp_path, monkeypatch):
    """A scratch repository: ``docs/a.md`` with numbered sections, and a writer for more files."""
    monkeypatch.setitem(globals(), "REPO", tmp_path)  # the scanners read the module-level REPO
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## 1. Shard format\n\n## 2. Sampling (`x/`)\n\ntext §2\n")

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


def test_links_resolve_or_are_reported(page):
    good = page("docs/b.md", "[a](a.md) [s](a.md#2-sampling-x) ![i](a.md) [w](https://example.org/x.md) "
                             "[self](#b) `[not](a link)`\n\n```\n[in](code.md)\n```\n\n# B\n[r]: a.md\n")
    assert link_problems(good) == []
    bad = page("docs/c.md", "[x](missing.md) [y](a.md#nope) [z](../../outside.md)\n\n[d]: gone.md\n")
    found = link_problems(bad)
    assert len(found) == 4, found
    assert "missing.md does not exist" in found[0] and "#nope" in found[1] and "leaves the repository" in found[2]


def test_section_references_resolve_or_are_reported(page):
    good = page("pkg/mod.py", '"""See docs/a.md §1 and docs/a.md §2; details: docs/a.md "Sampling"."""\n')
    assert reference_problems(good) == []
    assert reference_problems(page("docs/d.md", "# D\n\nsee a.md §2, [a §1](a.md#1-shard-format), `X §9`\n")) == []
    bad = page("pkg/bad.py", '# NOTES §3 and NOTES.md §1 and docs/a.md §7 and bare §2 and README "Loader"\n')
    found = reference_problems(bad)
    assert [f.split(": ", 1)[1] for f in found] == [
        "'NOTES §3': no file NOTES in the repository",
        "'NOTES.md §1': no file NOTES.md in the repository",
        "'docs/a.md §7': docs/a.md has no section 7",
        "'§2' names no file (write e.g. docs/design.md §2)",
        "'README \"Loader\"': no file README in the repository",
    ]
    assert len(reference_problems(page("docs/e.md", "# E\n\nsee §4 and [a §5](a.md#x)\n"))) == 2


def test_code_paths_and_slugs(page):
    page("pipeline/sampler.py", "")
    md = page("docs/f.md", "`pipeline/sampler.py` `pipeline/` `pipeline/gone.py` `OUT/shards/x.tar` `tests/*.py`\n")
    assert code_path_problems(md) == ["docs/f.md: `pipeline/gone.py` does not exist"]
    assert slug("Loader (`pipeline/`)") == "loader-pipeline"
    assert slug("speedssl — self-supervised") == "speedssl--self-supervised"
    assert slug("3. Measured facts the code relies on") == "3-measured-facts-the-code-relies-on"


# ------------------------------------------------------------------------------- the repository


def test_markdown_files_are_found():
    names = {rel(p) for p in markdown_files()}
    assert {"README.md", "BENCHMARKS.md", "docs/design.md"} <= names


@pytest.mark.parametrize("md", markdown_files(), ids=rel)
def test_every_relative_link_resolves(md):
    assert link_problems(md) == []


def test_every_section_reference_resolves():
    problems = [p for path in text_files() for p in reference_problems(path)]
    assert not problems, "\n".join(problems)


def test_design_sections_keep_their_numbers():
    """Code cites docs/design.md §1-§4 by number: the numbering is part of the contract."""
    design = REPO / "docs" / "design.md"
    titles = {int(m.group(1)): m.group(2) for h in headings(design) if (m := re.match(r"(\d+)\. (.+)", h))}
    assert titles.keys() == {1, 2, 3, 4}
    assert titles[1].startswith("Shard format") and titles[2].startswith("Sampling semantics")
    assert titles[3].startswith("Measured facts")


@pytest.mark.parametrize("md", markdown_files(), ids=rel)
def test_repository_paths_in_docs_exist(md):
    assert code_path_problems(md) == []


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        text = without_code(page.read_text(encoding="utf-8"))
        for target in [m.group(2) for m in LINK.finditer(text)]:
            if not SCHEME.match(target) and target.partition("#")[0]:
                todo.append((page.parent / target.partition("#")[0]).resolve())
    pages = {p.resolve() for p in markdown_files() if p.parent == REPO / "docs"}
    assert not pages - seen, f"not linked from README.md (directly or through other pages): {sorted(rel(p) for p in pages - seen)}"


def test_readme_is_a_front_page():
    """The README links the reference pages instead of holding them (it was 45 KB of per-package manuals)."""
    assert (REPO / "README.md").stat().st_size < 15 * 1024


def test_preprocess_doc_lists_every_cli_option_with_its_default():
    """docs/preprocess.md lists the CLI's options: each option the parser has, none it lacks, and the defaults
    it writes beside them (``--gop 16``) are the parser's."""
    from preprocess.cli import merge_parser, parser

    actions = {opt: a for p in (parser(), merge_parser()) for a in p._actions
               for opt in a.option_strings if opt.startswith("--") and opt != "--help"}
    doc = (REPO / "docs" / "preprocess.md").read_text(encoding="utf-8")
    written = re.findall(r"`(--[a-z][\w-]*)(?: ([^`]+))?`", doc)
    assert {name for name, _ in written} == set(actions), "options in the doc vs the parser"
    units = {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    checked = 0
    for name, value in written:
        default, choices = actions[name].default, actions[name].choices
        if m := re.fullmatch(r"(\d+)(KiB|MiB|GiB)?", value):
            assert int(m.group(1)) * units[m.group(2) or ""] == default, (name, value, default)
            checked += 1
        elif value.startswith("{"):
            assert set(value.strip("{}").split(",")) == set(choices), (name, value, choices)
            checked += 1
    assert checked >= 5, "the doc's defaults were not found"
