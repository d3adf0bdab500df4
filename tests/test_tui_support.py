"""Fixtures and helpers for the TUI tests (registered in conftest's pytest_plugins).

``ScriptedBackend`` is the one fake: it yields a chunk only when the test releases
it, for the tests that need exact timing (cancel mid-reply, a server dropping
mid-stream, a process killed mid-reply). Everything else runs the real model.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui.app import PromptDSLApp
from promptdsl_tui.history import HistoryStore

from promptdsl.backend import Backend, Capability, Constraint, GenerationOptions
from promptdsl.errors import BackendError
from promptdsl.prompt import Prompt

ROOT = Path(__file__).resolve().parent.parent
#: The real embedded model, on one thread. llama.cpp's threads spin-wait: on this shared 2-core
#: machine two threads competing with other processes made a 5-token reply take ~40 s instead of
#: ~0.5 s. A distinct n_ctx gives the TUI tests their own single-threaded copy of the model.
MODEL_OPTIONS: dict[str, Any] = {"n_threads": 1, "n_ctx": 2048}
FAST: dict[str, Any] = {"temperature": 0, "max_tokens": 6, "seed": 0, **MODEL_OPTIONS}


class ScriptedBackend(Backend):
    """Streams ``chunks`` one per :meth:`release`; optionally fails like a server going away."""

    name = "scripted"
    capabilities = frozenset({Capability.CHAT, Capability.STREAM})

    def __init__(self, chunks: Sequence[str], *, fail_at: int | None = None, released: int = 0) -> None:
        super().__init__("scripted-model")
        self.chunks = list(chunks)
        self.fail_at = fail_at
        self.error = "connection refused: is the server running?"
        self.gate = threading.Semaphore(released)
        self.closed = threading.Event()
        self.prompts: list[Prompt] = []

    @property
    def model_id(self) -> str:
        return "scripted-model"

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def stream(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None
    ) -> Iterator[str]:
        self.prompts.append(prompt)
        self.closed.clear()

        def gen() -> Iterator[str]:
            try:
                for i, chunk in enumerate(self.chunks):
                    if not self.gate.acquire(timeout=60):
                        return
                    if self.fail_at is not None and i >= self.fail_at:
                        raise BackendError(self.error, backend=self.name)
                    yield chunk
            finally:
                self.closed.set()

        return gen()

    def context_length(self) -> int:
        return 1000

    def count_tokens(self, prompt: Prompt) -> int:
        return sum(len(m.content.split()) + 4 for m in prompt.messages)


async def wait_for(pilot: Any, cond: Callable[[], object], timeout: float = 90.0, what: str = "") -> None:
    """Let the app run until ``cond()`` is true (the model runs in a thread), then until it is idle.

    Polls with a bare sleep (the app runs meanwhile): ``pilot.pause`` per poll would post a
    callback to every widget and force a layout each time, CPU the app itself never spends.
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)
    await pilot.pause()


#: How long Pilot's idle check looks at the CPU at a time. Pilot waits after every key until the
#: process used under a quarter of it in CPU; Textual's 20 ms window made each key cost at least
#: 40 ms of sleep (two checks), most of the TUI tests' wall time. The app handles a key in one
#: burst of ready callbacks, so a 2 ms window still sees it working (the test asserts state, and
#: waits with wait_for/pause where something runs in a thread or on a timer).
IDLE_WINDOW = 0.002


@pytest.fixture(autouse=True)
def _quick_idle_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter idle windows for Pilot (textual._wait); the keys and what they do are unchanged."""
    from textual import _wait

    monkeypatch.setattr(_wait, "SLEEP_GRANULARITY", IDLE_WINDOW)
    monkeypatch.setattr(_wait, "SLEEP_IDLE", IDLE_WINDOW / 4)


@pytest.fixture(scope="session")
def tui_model() -> Backend:
    """The llamacpp backend on the embedded SmolLM2 as the TUI tests' apps get it (loaded once)."""
    from promptdsl.registry import get_backend

    return get_backend("llamacpp", None, MODEL_OPTIONS)


@pytest.fixture
def tui_home(home: Path) -> Path:
    """PROMPTDSL_HOME for one TUI test (history and exports land here)."""
    home.mkdir(parents=True, exist_ok=True)
    return home


# --------------------------------------------------------------------------- the app under test


SIZE = (100, 32)


class RecordingApp(PromptDSLApp):
    """The real app, keeping every notification so tests can read them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.notices: list[tuple[str, str]] = []

    def notify(self, message: str, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.notices.append((str(message), str(kwargs.get("severity", "information"))))
        super().notify(message, *args, **kwargs)


@pytest.fixture
def store(tui_home: Path) -> HistoryStore:
    return HistoryStore(tui_home / "history.sqlite3")


# --------------------------------------------------------------------------- killed-mid-reply child


def killed_child(db: str) -> None:
    """Run the app headless on ``db`` until killed: a reply is mid-stream when it prints STREAMING."""
    sys.path.insert(0, str(ROOT))
    from promptdsl_tui.app import PromptDSLApp
    from promptdsl_tui.history import HistoryStore

    backend = ScriptedBackend(["Rome ", "was ", "founded ", "in ", "753 ", "BC."], released=3)

    async def main() -> None:
        app = PromptDSLApp(backend_instance=backend, history=HistoryStore(Path(db)), cwd=Path(db).parent)
        async with app.run_test() as pilot:
            await pilot.press(*"When was Rome founded?")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.chat.generating and app.chat._gen and app.chat._gen.tokens == 3)
            await pilot.pause(0.2)
            print("STREAMING", os.getpid(), flush=True)
            await asyncio.sleep(120)

    asyncio.run(main())


if __name__ == "__main__":
    killed_child(sys.argv[1])
