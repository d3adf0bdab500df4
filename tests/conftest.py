"""Shared fixtures. Topic-specific fixtures live in their own modules, listed in pytest_plugins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins: list[str] = ["openai_server", "test_tui_support"]


@pytest.fixture(scope="session")
def llamacpp_backend() -> Iterator[object]:
    """The real llamacpp backend on the embedded SmolLM2 model (loaded once per session)."""
    from promptdsl.registry import get_backend

    yield get_backend("llamacpp")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated PROMPTDSL_HOME (caches, history) per test."""
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
