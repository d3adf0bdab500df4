"""Which backend and settings the chat uses; resolved lazily, off the UI thread.

Loading a model can take seconds, so :meth:`Session.backend` is only called from
worker threads. The registry caches instances, so switching back is instant. Every
call that runs a model goes through :class:`ModelThread`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from promptdsl.backend import Backend, GenerationOptions, split_options
from promptdsl.errors import PromptDSLError
from promptdsl.prompt import Message, Prompt
from promptdsl.registry import get_backend, release, resolve_backend_name


def check_options(options: Mapping[str, Any]) -> None:
    """Hold ``-o`` options to the rules ``promptdsl run`` applies (raises InputError, exit code 2)."""
    from promptdsl.runner import check_options  # the runner's own check: one rule for both

    check_options(options)


T = TypeVar("T")


class ModelThread:
    """One long-lived thread for every call that runs a model (generation, spec runs, loading, counting).

    llama.cpp's OpenMP keeps an idle team of threads for each live thread that has computed;
    once those outnumber the cores, its threads stop spin-waiting between steps and a reply
    streams ~25% slower (measured: 42 vs 56 tok/s, benchmarks/bench_tui.py). Textual's thread
    workers come from a pool of several threads, so they hand their model work to this one
    thread. It also keeps two calls off one model at once (a llama.cpp context is not
    thread-safe): a spec run started while a reply streams waits for it.

    The thread is a daemon and :meth:`close` releases every caller at once: quitting while the
    model reads a long prompt must not keep the process alive until it is done (a
    ThreadPoolExecutor's thread is joined at exit, and so are the workers waiting on it).
    Whatever must outlive the app is saved by the UI before it closes (ChatView.on_unmount).
    """

    def __init__(self) -> None:
        self._ident: int | None = None
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._closed = False
        self._waiting: set[threading.Event] = set()  # one per caller; close() wakes them all

    @property
    def thread(self) -> threading.Thread | None:
        """The thread (started by the first call)."""
        return self._thread

    def _run(self) -> None:
        self._ident = threading.get_ident()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, as a pool does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model thread; blocks the calling (worker) thread until it returns.

        Raises :class:`concurrent.futures.CancelledError` when the thread is closed before or
        while ``fn`` runs (the call may still finish on its own, unwaited).
        """
        if threading.get_ident() == self._ident:
            return fn(*args)  # already there (a nested call must not wait for itself)
        future: Future[T] = Future()
        woken = threading.Event()
        future.add_done_callback(lambda _: woken.set())
        with self._lock:
            if self._closed:
                raise CancelledError("the model thread is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="promptdsl-model", daemon=True)
                self._thread.start()
            self._waiting.add(woken)
            self._jobs.put((future, fn, args))
        try:
            woken.wait()  # the result, or close()
        finally:
            with self._lock:
                self._waiting.discard(woken)
        if not future.done():
            future.cancel()  # closed: a queued call is dropped; a running one finishes unwaited
            raise CancelledError("the model thread is closed")
        return future.result()

    def close(self) -> None:
        """No more calls: queued ones are dropped, a running one finishes on its own (nobody waits for it)."""
        with self._lock:
            self._closed = True
            self._jobs.put(None)
            for woken in self._waiting:
                woken.set()


#: Chat defaults differ from spec runs: some variety, room for a real answer, no fixed seed.
CHAT_DEFAULTS: dict[str, Any] = {"temperature": 0.7, "max_tokens": 512, "seed": None}


@dataclass(frozen=True)
class BackendChoice:
    """A backend plugin name, its model (None = the plugin's default) and its settings."""

    name: str
    model: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.name} · {self.model or 'default'}"


class Session:
    """The chat's backend and generation settings.

    ``explicit`` is true when the user picked the backend (flag, picker or an
    instance given by a test); spec runs then use it instead of the spec's own.
    """

    def __init__(
        self,
        choice: BackendChoice,
        generation: Mapping[str, Any] | None = None,
        *,
        backend: Backend | None = None,
        explicit: bool = False,
    ) -> None:
        self.choice = choice
        self.user_generation: dict[str, Any] = dict(generation or {})
        self.generation = GenerationOptions.from_mapping({**CHAT_DEFAULTS, **self.user_generation})
        self.explicit = explicit or backend is not None
        self._backend = backend
        self._lock = threading.Lock()
        self.model_thread = ModelThread()
        #: the tools the chat's replies may call, as ``-T`` gives them (kept with each conversation)
        self.tools: list[str] = []
        self.tool_choice = "auto"  # "required": each reply's first step is a call

    @classmethod
    def from_cli(
        cls, backend: str | None, model: str | None, options: Mapping[str, Any]
    ) -> Session:
        gen, back = split_options(options)
        choice = BackendChoice(resolve_backend_name(backend), model, back)
        return cls(choice, gen, explicit=backend is not None or model is not None)

    def backend(self) -> Backend:
        """The ready backend (loads it on first use; call from a worker thread)."""
        with self._lock:
            if self._backend is None:
                c = self.choice
                self._backend = get_backend(c.name, c.model, dict(c.options))
            return self._backend

    def peek(self) -> Backend | None:
        """The backend if already loaded (safe on the UI thread)."""
        return self._backend

    def switch(self, choice: BackendChoice) -> Backend:
        """Load ``choice`` and make it current; on error the old backend stays (worker thread).

        Generation keys among its options (temperature, max_tokens…) become the chat's settings:
        the options given are all of them, so a key left out is dropped (the Ctrl+B field shows them all).
        """
        gen, back = split_options(choice.options)
        choice = BackendChoice(choice.name, choice.model, back)
        new = get_backend(choice.name, choice.model, back)
        with self._lock:
            old, self._backend = self._backend, new
            self.choice = choice
            self.explicit = True
            self.user_generation = dict(gen)
            self.generation = GenerationOptions.from_mapping({**CHAT_DEFAULTS, **self.user_generation})
        if old is not None and old is not new:
            release(old)  # each switch of options used to keep another copy of the model loaded
        return new

    def set_generation(self, generation: Mapping[str, Any]) -> None:
        """Replace the user's generation settings (a resumed conversation's)."""
        self.user_generation = dict(generation)
        self.generation = GenerationOptions.from_mapping({**CHAT_DEFAULTS, **self.user_generation})

    def settings(self) -> dict[str, Any]:
        """What a conversation keeps: backend options and generation settings, as ``-o`` would give them."""
        return {**dict(self.choice.options), **self.user_generation}

    def model_label(self) -> str:
        """The model id when loaded, else the model asked for ('' = the backend's default)."""
        backend = self._backend
        return backend.model_id if backend is not None else (self.choice.model or "")

    def other_settings(self, backend: str, options: Mapping[str, Any]) -> bool:
        """Whether these are another backend or other backend options: decided without loading anything."""
        _, back = split_options(options)
        return backend != self.choice.name or back != dict(self.choice.options)

    def differs(self, backend: str, model: str, options: Mapping[str, Any]) -> bool:
        """Whether restoring these settings needs another backend instance (not just other generation keys)."""
        same_model = model in ("", self.choice.model or "", self.model_label())
        return not same_model or self.other_settings(backend, options)

    def options_for(self, attempt: int) -> GenerationOptions:
        """Generation options; a fixed seed moves on with each regeneration so replies differ."""
        opts = self.generation
        if attempt and opts.seed is not None:
            opts = replace(opts, seed=opts.seed + attempt)
        return opts


class ContextFull(PromptDSLError):
    """The last message alone (with the system prompt and room for a reply) is longer than the context."""


@dataclass(frozen=True)
class FittedPrompt:
    prompt: Prompt
    dropped: int  # oldest turns left out to fit the context window
    used: int | None  # prompt tokens, when the backend can count them
    total: int | None  # the context window, when known


def fit_prompt(messages: tuple[Message, ...], backend: Backend, max_tokens: int | None) -> FittedPrompt:
    """Drop the oldest turns (never the system prompt or the last message) until prompt + reply fit.

    Raises :class:`ContextFull` when even the last message does not fit: sending it would
    only fail in the backend, or silently lose the whole conversation.
    """
    total = backend.context_length()
    prompt = Prompt(mode="chat", messages=messages)
    used = backend.count_tokens(prompt)
    if total is None or used is None:
        return FittedPrompt(prompt, 0, used, total)
    reserve = min(max_tokens or 256, total // 4)
    head = [m for m in messages[:1] if m.role == "system"]
    body = list(messages[len(head):])
    dropped = 0
    while used + reserve > total and len(body) > 1:
        body.pop(0)
        dropped += 1
        prompt = Prompt(mode="chat", messages=(*head, *body))
        used = backend.count_tokens(prompt) or 0
    if used + reserve > total:
        raise ContextFull(
            f"this message is too long for the model's context: with the system prompt it takes {used} tokens, "
            f"the context holds {total} and {reserve} are kept for the reply. Shorten it, or switch to a model "
            "with a longer context (Ctrl+B)."
        )
    return FittedPrompt(prompt, dropped, used, total)
