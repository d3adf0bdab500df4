"""One reply being generated: shared between the worker thread and the UI.

The worker thread only appends chunks (O(1) a token: no join, no write). The UI
*pulls* on a timer (:data:`FRAME_SECONDS`): each tick first saves the text that came
since the last one (:meth:`Generation.save`, one row update for however many tokens),
and only saved text is ever shown, so nothing shown is lost even to ``kill -9``; a
killed reply comes back as "interrupted" with at most one tick of text missing, none
of it seen. Showing text costs a frame, so frames are held to a CPU budget and the
UI's cost per second is bounded however fast tokens come: a reply streams in the TUI
at the backend's own rate (benchmarks/bench_tui.py). Cancelling sets a flag under the
same lock, so the text the UI keeps on Esc is exactly the text the worker then saves
as the final one. The thread is the only one that touches the backend's iterator, and
it closes it as soon as it sees the flag (closing a generator from another thread is
an error).
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable

from promptdsl.backend import Backend, CutOff, GenerationOptions, bounded, close_stream
from promptdsl.errors import BackendError, BackendErrorKind, PromptDSLError
from promptdsl.prompt import Message, Prompt
from promptdsl.tools import Step
from promptdsl.tools.chat import ChatSteps

from .conversation import Status, Turn
from .history import HistoryStore, unsaved
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


class ToolsStopped(PromptDSLError):
    """Esc during a tool run: raised from the loop's hooks, the reply ends as stopped."""


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
        self._saved = len(self._parts)  # parts in _visible (and in the store)
        self.save_error: str | None = None  # saving failed: the reply stops with this error
        self.final_error: str | None = None  # the final save (text and status) failed: the UI retries it
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
        #: the chat's tools: runs the tool steps for the fitted prompt (model thread) before the answer streams
        self.use_tools: Callable[[Backend, Generation], ChatSteps] | None = None
        self.steps: list[Step] = []  # the tool steps so far (appended by the loop's events)
        self.tools_running = False  # the loop runs (the reply's title says so, not "reading the prompt")

    def append(self, chunk: str) -> bool:
        """Add a chunk (O(1): the worker's whole per-token cost); False once cancelled or failed."""
        with self._lock:
            if self.cancelled or self._closed or self.save_error is not None:
                return False
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self._parts.append(chunk)
            self.tokens += 1
            return True

    def cancel(self) -> str:
        """Stop taking chunks; returns the text kept (the worker saves exactly this as the final text)."""
        with self._lock:
            self.cancelled = True
            return "".join(self._parts)

    def stop_and_save(self, store: HistoryStore | None) -> None:
        """The app is closing: cancel, and save the text kept as stopped now (the worker may never get to).

        Nothing happens when the worker already finished (it saved the final text and status).
        The worker's own final save, if it comes, writes the same text.
        """
        with self._lock:
            if self._closed:
                return
            self.cancelled = True
            text = "".join(self._parts)
            turn_id = self.turn.id
            if store is None or turn_id is None:
                return
            try:
                store.update_turn(turn_id, text, "cancelled", self.error or "")
                if self.steps:
                    store.set_steps(turn_id, [s.to_dict() for s in self.steps])
            except Exception:  # the app is closing: nowhere to say it; the row reads "interrupted"
                return

    def close(self) -> str:
        """The worker is done: take no more chunks; returns the final text."""
        with self._lock:
            self._closed = True
            return "".join(self._parts)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._parts)

    def save(self, store: HistoryStore | None) -> str:
        """Save the text that came since the last save, then let the UI show it; returns what may be shown.

        Called by the UI on each tick. Runs under the lock, so it never writes after the worker's
        final save (close) or past a cancel. A failed write shows nothing new and stops the reply.
        """
        with self._lock:
            if self.cancelled or self._closed or self.save_error is not None or len(self._parts) == self._saved:
                return self._visible
            text = "".join(self._parts)
            if store is not None and self.turn.id is not None:
                turn_id = self.turn.id
                self.save_error = unsaved(lambda: store.update_turn(turn_id, text, "streaming"))
                if self.save_error is not None:  # a full disk: stop rather than show what is not kept
                    return self._visible
            self._saved = len(self._parts)
            self._visible = text
            return text

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

    Per chunk the thread only appends; the UI saves (and then shows) the text on its
    ticks, and this thread saves the final text with its status.
    """
    backend: Backend | None = None
    FastSwitching.enter()
    try:
        backend = get_backend()
        gen.fitted = fit_prompt(gen.messages, backend, gen.options.max_tokens)
        on_prompt(gen.fitted)
        prompt: Prompt | None = gen.fitted.prompt
        marked = False  # the backend said max_tokens stopped it (CUT_OFF): no count needed
        if gen.use_tools is not None:
            gen.tools_running = True
            try:
                found = gen.use_tools(backend, gen)
            finally:
                gen.tools_running = False
            if gen.cancelled:
                raise ToolsStopped("stopped")
            prompt = found.prompt
            if found.text is not None:
                gen.append(found.text)  # the model (or a direct tool) already answered
                prompt, marked = None, found.cut_off is not None
        stream = backend.stream(prompt, gen.options) if prompt is not None else iter(())
        cpu0 = time.thread_time()
        try:
            # a plugin that ignores max_tokens is stopped, as in a run, before the memory fills
            for chunk in bounded(stream, gen.options.max_tokens, backend.name):
                gen.worker_cpu = time.thread_time() - cpu0
                if isinstance(chunk, CutOff):
                    marked = True
                    continue
                if not gen.append(chunk):
                    break
        finally:
            close_stream(stream)
        if gen.save_error is not None:
            raise PromptDSLError(gen.save_error)
        cut = marked or _cut(backend, gen)
        gen.status = "cancelled" if gen.cancelled else "length" if cut else "done"
    except ToolsStopped:
        gen.status = "cancelled"
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
        if gen.steps:
            gen.turn.steps = [s.to_dict() for s in gen.steps]
        if store is not None and gen.turn.id is not None:
            steps = gen.turn.steps if gen.steps else []
            final = functools.partial(store.finish_turn, gen.turn.id, text, gen.status, gen.error or "", steps)
            gen.final_error = unsaved(final)  # locked by another process, disk full: the reply still ends, says so
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
    except Exception:  # a plugin bug here must not keep the reply from ending
        return gen.fitted.used
