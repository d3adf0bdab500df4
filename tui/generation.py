"""One reply being generated: shared between the worker thread and the UI.

The thread appends chunks and saves them; the UI *pulls* the text on a timer
(:data:`FRAME_SECONDS`), so the UI's cost per second is fixed however fast tokens
come: a reply streams in the TUI at the backend's own rate (benchmarks/bench_tui.py).
Cancelling sets a flag under the same lock, so the text the UI keeps on Esc is
exactly the text that was saved. The thread is the only one that touches the
backend's iterator, and it closes it as soon as it sees the flag (closing a
generator from another thread is an error).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from promptdsl.backend import Backend, GenerationOptions, close_stream
from promptdsl.errors import BackendError, BackendErrorKind, PromptDSLError
from promptdsl.prompt import Message, Prompt

from .conversation import Status, Turn
from .history import HistoryStore
from .session import ContextFull, FittedPrompt, fit_prompt

#: How often the UI looks at a streaming reply (a look costs next to nothing; showing text costs a frame).
FRAME_SECONDS = 0.1
#: The UI's CPU for a streaming reply is held to this share of the CPU the generating thread uses
#: (when that thread computes locally), else of the wall time (a remote backend waits on the network).
#: A screen refresh costs ~10 ms of CPU; on a machine where the model's process gets a capped share
#: of the cores, every UI millisecond is a millisecond less for the model. 3% keeps it at >= 0.95x of its rate.
UI_SHARE = 0.03
#: The generating thread counts as computing when it is busy this share of the wall time.
CPU_BOUND = 0.2
#: Show new text at least this often whatever the budget says (the reply must visibly move).
MAX_FRAME_GAP = 2.0
#: The interpreter's thread switch interval while a reply streams. The backend's Python glue
#: takes the GIL several times per token; at the default 5 ms each take could wait for a
#: UI frame to yield it, which measured 30 ms of delay a token. 0.2 ms makes the hand-over quick.
SWITCH_SECONDS = 0.0002


class FastSwitching:
    """Short GIL switch interval while at least one reply streams (counted, so overlaps restore once)."""

    _lock = threading.Lock()
    _depth = 0
    _saved = 0.005

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            if cls._depth == 0:
                cls._saved = sys.getswitchinterval()
                sys.setswitchinterval(SWITCH_SECONDS)
            cls._depth += 1

    @classmethod
    def leave(cls) -> None:
        with cls._lock:
            if cls._depth == 0:
                return
            cls._depth -= 1
            if cls._depth == 0:
                sys.setswitchinterval(cls._saved)


class Generation:
    """State of one streaming reply; ``prefix`` is text already there (a continued reply)."""

    def __init__(
        self, turn: Turn, messages: tuple[Message, ...], options: GenerationOptions, prefix: str = ""
    ) -> None:
        self.turn = turn
        self.messages = messages
        self.options = options
        self._lock = threading.Lock()
        self._parts: list[str] = [prefix] if prefix else []
        self._visible = prefix  # the text saved so far: what the UI may show
        self.cancelled = False  # the user stopped it
        self._closed = False  # the worker finished with it
        self.tokens = 0
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.status: Status = "streaming"
        self.error: str | None = None
        self.not_sent = False  # the prompt did not fit the context: nothing was sent
        self.fitted: FittedPrompt | None = None
        self.context_used: int | None = None
        self.worker_cpu = 0.0  # CPU seconds the generating thread has used (thread_time)

    def append(self, chunk: str) -> str | None:
        """Add a chunk; returns the whole text so far, or None once cancelled."""
        with self._lock:
            if self.cancelled or self._closed:
                return None
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self._parts.append(chunk)
            self.tokens += 1
            return "".join(self._parts)

    def cancel(self) -> str:
        """Stop taking chunks; returns the text kept."""
        with self._lock:
            self.cancelled = True
            return "".join(self._parts)

    def close(self) -> str:
        """The worker is done: take no more chunks; returns the final text."""
        with self._lock:
            self._closed = True
            return "".join(self._parts)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)

    def publish(self, text: str) -> None:
        """``text`` is saved: the UI may show it now."""
        with self._lock:
            if not self.cancelled:
                self._visible = text

    @property
    def visible(self) -> str:
        with self._lock:
            return self._visible

    def tokens_per_second(self) -> float | None:
        """Decode speed after the first chunk (prompt processing excluded)."""
        if self.first_at is None or self.last_at is None or self.tokens < 2:
            return None
        span = self.last_at - self.first_at
        return (self.tokens - 1) / span if span > 0 else None

    def waiting_seconds(self) -> float:
        """Seconds since the request while no chunk has come yet (prompt processing)."""
        return time.perf_counter() - self.started


def run_generation(
    gen: Generation,
    get_backend: Callable[[], Backend],
    store: HistoryStore | None,
    on_prompt: Callable[[FittedPrompt], object] = lambda _: None,
) -> None:
    """Stream ``gen`` to the end, to cancel, or to an error (runs in a worker thread).

    Every chunk is saved before the UI can pull it, so nothing shown is ever lost
    (a row update in WAL mode costs ~50 µs, far below a token's time).
    """
    turn_id = gen.turn.id
    backend: Backend | None = None
    FastSwitching.enter()
    try:
        backend = get_backend()
        gen.fitted = fit_prompt(gen.messages, backend, gen.options.max_tokens)
        on_prompt(gen.fitted)
        stream = backend.stream(gen.fitted.prompt, gen.options)
        cpu0 = time.thread_time()
        try:
            for chunk in stream:
                gen.worker_cpu = time.thread_time() - cpu0
                text = gen.append(chunk)
                if text is None:
                    break
                if store is not None and turn_id is not None:
                    store.update_turn(turn_id, text, "streaming")
                gen.publish(text)
        finally:
            close_stream(stream)
        gen.status = "cancelled" if gen.cancelled else "length" if _cut(backend, gen) else "done"
    except PromptDSLError as exc:
        # A prompt the backend says is too long was not answered: the message stays unsent, like ContextFull.
        too_long = isinstance(exc, BackendError) and exc.kind is BackendErrorKind.CONTEXT_LENGTH
        gen.status, gen.error, gen.not_sent = "error", str(exc), isinstance(exc, ContextFull) or too_long
    except Exception as exc:  # a plugin bug must not kill the app
        who = f"{backend.name}: " if backend is not None else ""
        gen.status, gen.error = "error", f"{who}{type(exc).__name__}: {exc}"
    finally:
        FastSwitching.leave()
        if gen.status == "streaming":  # interrupted by BaseException (app shutting down)
            gen.status = "cancelled"
        text = gen.close()
        if store is not None and turn_id is not None:
            store.update_turn(turn_id, text, gen.status, gen.error or "")
    if backend is not None and gen.fitted is not None and gen.status != "error":
        gen.context_used = _count_after(backend, gen, text)


def _cut(backend: Backend, gen: Generation) -> bool:
    """Whether the reply stopped because it reached max_tokens (not because the model ended it)."""
    limit = gen.options.max_tokens
    if limit is None or gen.tokens == 0:
        return False
    if gen.tokens >= limit:
        return True
    try:  # a backend may send several tokens per chunk; a completion prompt's count adds at most a BOS
        counted = backend.count_tokens(Prompt(mode="completion", text=gen.text))
    except PromptDSLError:
        return False
    return counted is not None and counted > limit


def _count_after(backend: Backend, gen: Generation, reply: str) -> int | None:
    """Tokens the conversation takes now, reply included (what the next turn starts from)."""
    assert gen.fitted is not None
    messages = (*gen.fitted.prompt.messages, Message("assistant", reply))
    try:
        return backend.count_tokens(Prompt(mode="chat", messages=messages))
    except PromptDSLError:
        return gen.fitted.used
