"""Shared helpers for the benchmarks: data, the plain llama-cpp-python baseline, timing, output."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
#: The labelled tweets the benchmarks read (``run.py --data FILE``); by default the sample shipped for the tests.
TWEETS = ROOT / "tests" / "data" / "tweeteval-sentiment-val500.jsonl"

#: llama.cpp threads for every side of every benchmark (None: the plugin's default, all cores).
THREADS: int | None = None


def threads() -> int:
    from promptdsl_llamacpp import cpu_count

    return THREADS or cpu_count()


def backend_options() -> dict[str, Any]:
    return {"n_threads": THREADS} if THREADS else {}


def local_backend() -> Any:
    """The promptdsl llamacpp backend on the embedded model, with the benchmark's thread count."""
    from promptdsl.registry import get_backend

    return get_backend("llamacpp", None, backend_options())


def tweets(n: int, start: int = 0, *, repeat: bool = False) -> list[dict[str, Any]]:
    """``n`` rows of the data file from ``start``; ``repeat`` cycles a shorter file (memory runs only)."""
    if not TWEETS.is_file():
        raise SystemExit(f"data file not found: {TWEETS}")
    with TWEETS.open(encoding="utf-8") as f:
        every = [json.loads(line) for line in f if line.strip()]
    rows = every[start:start + n]
    if repeat and every:
        rows = list(itertools.islice(itertools.cycle(every), n))
    if len(rows) < n:
        raise SystemExit(f"{TWEETS} has only {len(rows)} rows from {start}; asked for {n} (give a larger --data)")
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def common_prefix(seqs: list[list[int]]) -> int:
    """How many leading tokens every sequence shares (the prompt part evaluated once)."""
    first, n = seqs[0], len(seqs[0])
    for s in seqs[1:]:
        i = 0
        while i < min(n, len(s)) and s[i] == first[i]:
            i += 1
        n = i
    return n


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))  # type: ignore[no-any-return]


def plain_llama(model_path: Path, n_threads: int) -> Any:
    """A llama-cpp-python model loaded the ordinary way, with the plugin's context settings."""
    from llama_cpp import Llama

    return Llama(model_path=str(model_path), n_ctx=4096, n_batch=512, n_threads=n_threads,
                 n_threads_batch=n_threads, seed=0, verbose=False)


def last_logprobs(llm: Any) -> np.ndarray:
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return log_softmax(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)))


def plain_score(llm: Any, prompt: str, continuations: Sequence[str]) -> list[float]:
    """The baseline: evaluate the whole prompt from scratch, then any further continuation tokens."""
    base = llm.tokenize(prompt.encode("utf-8"), add_bos=True)
    llm.reset()
    llm.eval(base)
    first = last_logprobs(llm)
    out = []
    for cont in continuations:
        toks = llm.tokenize(cont.encode("utf-8"), add_bos=False, special=False)
        total = float(first[toks[0]])
        if len(toks) > 1:
            llm.n_tokens = len(base)
            for prev, tok in itertools.pairwise(toks):
                llm.eval([prev])
                total += float(last_logprobs(llm)[tok])
        out.append(total)
    return out


@dataclass
class Perf:
    """llama.cpp's own counters for one context (prompt-eval and eval tokens and milliseconds)."""

    p_ms: float = 0.0
    p_tokens: int = 0
    e_ms: float = 0.0
    e_tokens: int = 0

    @classmethod
    def read(cls, llm: Any) -> Perf:
        import llama_cpp

        d = llama_cpp.llama_perf_context(llm.ctx)
        return cls(d.t_p_eval_ms, d.n_p_eval, d.t_eval_ms, d.n_eval)

    def __sub__(self, other: Perf) -> Perf:
        return Perf(self.p_ms - other.p_ms, self.p_tokens - other.p_tokens,
                    self.e_ms - other.e_ms, self.e_tokens - other.e_tokens)

    def __add__(self, other: Perf) -> Perf:
        return Perf(self.p_ms + other.p_ms, self.p_tokens + other.p_tokens,
                    self.e_ms + other.e_ms, self.e_tokens + other.e_tokens)

    @property
    def prompt_speed(self) -> float:
        """Prompt-evaluation tokens per second, as llama.cpp measured them."""
        return self.p_tokens / (self.p_ms / 1000) if self.p_ms else 0.0


@contextmanager
def perf_delta(llm: Any, into: list[Perf]) -> Iterator[None]:
    before = Perf.read(llm)
    yield
    into.append(Perf.read(llm) - before)


@dataclass
class Timer:
    """Accumulates wall time over many interleaved slices."""

    seconds: float = 0.0
    slices: list[float] = field(default_factory=list)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - start
            self.seconds += dt
            self.slices.append(dt)


@dataclass
class Row:
    """One line of the final table."""

    name: str
    ours: str
    baseline: str
    ratio: float
    target: str
    passed: bool
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def alternate(n: int) -> Iterator[tuple[int, bool]]:
    """(slice number, baseline first?) — alternating who goes first, so drift hits both alike."""
    for i in range(n):
        yield i, i % 2 == 0


def run_pair(first_is_a: bool, a: Callable[[], None], b: Callable[[], None]) -> None:
    if first_is_a:
        a()
        b()
    else:
        b()
        a()


def fmt_mb(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"
