"""The repository stands alone: no tracked file refers to a path outside the checkout.

A user who clones it has nothing next to it, so a README link, a test's data file or a
benchmark's default that points at ``../something`` outside the root is a broken promise.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Relative paths climbing out with ``../`` (resolved against the file that names them).
RELATIVE = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")
#: Absolute paths of the machines the project was built on, and code that climbs out of the root.
FORBIDDEN = [
    re.compile(p)
    for p in (
        "/" + "work/",
        r"/home/\w+",
        r"\bROOT\.parent\b",
        r"parent\.parent\.parent",
        "SPEC-LANG" + "UAGE",
    )
]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".json", ".jsonl", ".txt", ".cfg", ".ini", ".tcss", ""}


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True,
                             timeout=30).stdout
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [ROOT / n for n in names if (ROOT / n).suffix in TEXT_SUFFIXES and (ROOT / n).is_file()]


def outside_refs(path: Path, text: str) -> list[str]:
    """Every reference in ``text`` (the content of ``path``) to a place outside the repository."""
    found = []
    for m in RELATIVE.finditer(text):
        target = (path.parent / m.group(1)).resolve()
        if not target.is_relative_to(ROOT):
            found.append(m.group(1))
    found += [m.group(0) for pattern in FORBIDDEN for m in pattern.finditer(text)]
    return found


def test_the_check_catches_what_it_should() -> None:
    readme = ROOT / "README.md"
    sibling = "../" + "shared/SPEC.md"  # spelt in two parts so this file does not name a path outside
    assert outside_refs(readme, f"see [the spec]({sibling})") == [sibling]
    climbing = 'DATA = ROOT.parent / "sha' + 'red" / "val.jsonl"'
    assert outside_refs(ROOT / "tests" / "x.py", climbing) == ["ROOT.parent"]
    assert outside_refs(ROOT / "docs" / "x.md", "[plugins](../plugins/example/)") == []
    assert outside_refs(readme, "see /" + "work/shared/data") == ["/" + "work/"]


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = [p for p in tracked_files() if p != Path(__file__).resolve()]  # this file spells the patterns out
    assert len(files) > 50  # the listing worked
    bad = {}
    for path in files:
        refs = outside_refs(path, path.read_text(encoding="utf-8", errors="replace"))
        if refs:
            bad[str(path.relative_to(ROOT))] = refs
    assert bad == {}
