"""Shared fixtures. Topic-specific fixtures live in their own modules, listed in pytest_plugins."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (in pyproject's addopts): the fast tier, which loads no model and starts no
    server, runs on every core; anything else runs in one process, where the tests share one
    loaded model and llama.cpp's threads have the cores to themselves."""
    expr = str(config.getoption("markexpr", "") or "")
    fast = "not model" in expr and "not server" in expr
    return (os.cpu_count() or 1) if fast else 0


pytest_plugins: list[str] = ["openai_server", "test_tui_support"]

#: Fixtures that start a server on 127.0.0.1 (fake OpenAI-compatible ones): a test using one is
#: marked ``server`` here, so the fast tier stays free of servers without a mark on each test.
SERVER_FIXTURES = frozenset({"serve", "canned", "recorder"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``server`` (or ``model``) that listens on a socket fails at once."""
    if request.node.get_closest_marker("server") or request.node.get_closest_marker("model"):
        return
    import socket

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{request.node.nodeid} starts a server but is not marked @pytest.mark.server")

    monkeypatch.setattr(socket.socket, "listen", refuse)

#: One llama.cpp thread for every model the tests load, in this process and in the ones they start:
#: llama.cpp's threads spin-wait, so on a busy 2-core machine more threads are slower, not faster.
os.environ.setdefault("PROMPTDSL_LLAMACPP_THREADS", "1")


@pytest.fixture(autouse=True)
def _fast_tier_loads_no_model(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``model`` that loads the real model fails at once (it belongs to the slow tier)."""
    if request.node.get_closest_marker("model") is not None:
        return
    try:
        import llama_cpp
    except ImportError:
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{request.node.nodeid} loads a llama.cpp model but is not marked @pytest.mark.model")

    monkeypatch.setattr(llama_cpp.Llama, "__init__", refuse)


@pytest.fixture(autouse=True)
def _secrets_registered_by_a_test_end_with_it() -> Iterator[None]:
    """A key one test registers (a backend reading ``OPENAI_API_KEY=sk-test-0123456789``) is not masked,
    whole or in pieces, out of the next test's text: each test starts with the registry it found."""
    from promptdsl import errors

    with errors._known_lock:
        before = dict(errors._known)
    yield
    with errors._known_lock:
        errors._known.clear()
        errors._known.update(before)


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
