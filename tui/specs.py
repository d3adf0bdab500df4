"""Find the specs the picker offers: the paths given on the command line, then ``./specs/``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from promptdsl.errors import PromptDSLError
from promptdsl.loader import check_folder_entry, real_path, spec_files
from promptdsl.spec import Spec
from promptdsl.validate import validate_spec


@dataclass(frozen=True)
class SpecEntry:
    """A spec file and either the loaded spec or the one-line reason it failed to load."""

    path: Path
    spec: Spec | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else self.path.stem


def short_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (for display)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _files(path: Path) -> list[Path]:
    try:
        return spec_files(path)
    except PromptDSLError:  # a folder with no specs: nothing to offer
        return []


def discover(paths: Iterable[Path], cwd: Path) -> list[SpecEntry]:
    """Load every spec found; broken ones are listed with their error, never raised."""
    seen: set[Path] = set()
    out: list[SpecEntry] = []
    for root in [*paths, cwd / "specs"]:
        if root == cwd / "specs" and not root.is_dir():
            continue
        for file in _files(root):
            key = real_path(file)
            if key in seen:
                continue
            seen.add(key)
            try:
                check_folder_entry(root, file)
                out.append(SpecEntry(file, validate_spec(file, check_backend=False)))  # Ctrl+B picks another
            except PromptDSLError as exc:
                out.append(SpecEntry(file, error=str(exc)))
    return out
