"""A throwaway installed distribution (dist-info + modules) on sys.path, for plugin-discovery tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def fake_distribution(
    site: Path, monkeypatch: pytest.MonkeyPatch, name: str, version: str, group: str,
    entry_points: Mapping[str, str], modules: Mapping[str, str],
) -> Iterator[Path]:
    """Write ``name-version.dist-info`` with ``entry_points`` in ``group`` and ``modules`` beside it."""
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    try:
        yield site
    finally:
        for module in modules:
            sys.modules.pop(module, None)
