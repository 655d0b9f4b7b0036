"""The repository stands alone: every document a tracked file cites exists in the repository.

Rules checked over every tracked text file:
* no citation of the reference notes the project started from (they are not in the repository;
  their facts live in docs/PROTOCOL.md and docs/REAL_CEPH.md in our own words);
* every cited markdown path resolves, relative to the citing file, the repository root or docs/;
* outside Markdown files, a ``§`` section sign stands on a line that names the document it
  refers to (``PROTOCOL.md §7``, not a bare ``§7`` whose document the reader must guess), and the
  section heading exists in that document.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FOREIGN = ("api-contract", "real-ceph-findings", "ceph-msgr-v1", "performance-anchors",
           "style-by-example", "layout-sketch", "shared/docs")
_MD_PATH = re.compile(r"(?<![\w./-])((?:\.\./|\./)?[\w./-]*[A-Za-z0-9_-]+\.md)\b")
_SECTION = re.compile(r"§\s?(\d+(?:\.\d+)*)")
_NAMED_SECTION = re.compile(r"([\w./-]*[A-Za-z0-9_-]+\.md)((?:[ ,]+§\s?\d+(?:\.\d+)*(?:-\d+(?:\.\d+)*)?)+)")
_URL = re.compile(r"\w+://\S+")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or name == "LICENSE" or path == Path(__file__).resolve():
            continue  # this file names what it looks for
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        files.append(path)
    return files


def _resolve(ref: str, citing: Path) -> Path | None:
    for base in (citing.parent, ROOT, ROOT / "docs"):
        candidate = (base / ref).resolve()
        if candidate.is_file() and ROOT in candidate.parents:
            return candidate
    return None


def _headings(doc: Path) -> set[str]:
    """Section numbers that head a section of ``doc`` (``## 7.``, ``### 7.1 ...``)."""
    numbers = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#+\s+(\d+(?:\.\d+)*)\.?\s", line)
        if m:
            numbers.add(m.group(1))
    return numbers


def _problems(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    found = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{rel}:{lineno}"
        for name in FOREIGN:
            if name in line:
                found.append(f"{where}: cites {name!r}, which is not in the repository")
        bare = _URL.sub("", line)
        for ref in _MD_PATH.findall(bare):
            if _resolve(ref, path) is None:
                found.append(f"{where}: cites {ref}, which does not exist")
        if path.suffix == ".md" or "§" not in line:
            continue
        named = list(_NAMED_SECTION.finditer(bare))
        if not named:
            found.append(f"{where}: a § without the document it refers to: {line.strip()!r}")
        for m in named:
            doc = _resolve(m.group(1), path)
            if doc is None:
                continue  # reported above
            heads = _headings(doc)
            for sec in _SECTION.findall(m.group(2)):
                if sec not in heads:
                    found.append(f"{where}: {m.group(1)} has no section {sec}")
    return found


def test_every_cited_document_exists() -> None:
    problems = [p for f in _tracked_text_files() for p in _problems(f)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    # the rules applied to a sample file placed inside the repository tree
    sample = ROOT / "tests" / "_citation_sample.py"
    # the sample's citations are assembled here so that this file itself cites nothing it lacks
    foreign, missing = FOREIGN[0] + ".md", "docs/NOPE" + ".md"
    sample.write_text(
        f"# see {foreign} for this\n"           # foreign note
        f"# {missing} says so\n"                 # missing document
        "# the decision table (§7)\n"             # bare section sign
        "# PROTOCOL.md §99 row 1\n"               # no such section
        "# PROTOCOL.md §7 and REAL_CEPH.md §11.3, docs/ARCHITECTURE.md\n")  # all fine
    try:
        problems = _problems(sample)
    finally:
        sample.unlink()
    assert len(problems) == 5, problems  # the foreign note counts as foreign and as missing
    assert any(FOREIGN[0] in p and "not in the repository" in p for p in problems)
    assert any(missing[len("docs/"):] + ", which does not exist" in p for p in problems)
    assert any("without the document" in p for p in problems)
    assert any("has no section 99" in p for p in problems)
    assert not any(":5:" in p for p in problems)
