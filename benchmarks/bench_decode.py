"""Tokens per llama.cpp decode: does putting several items in one decode pay on this machine?

Two measurements on the embedded model, with the 3-shot sentiment spec's prefix cached:

* the decode-size curve: prompt-evaluation speed for decodes of 8 to 256 tokens after the
  prefix (random tokens, the same context), in rotating order, medians. Batching can only win
  where small decodes run below large ones;
* ``-o batch=true``'s scoring (several items per decode, ``promptdsl_llamacpp.batch``) against
  one item at a time, on the same rows in slices of 16 (a dataset run's call size), the sides
  alternating who goes first. The scores must be identical, bit for bit.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from common import SPECS, Row, alternate, common_prefix, local_backend, run_pair, tweets

from promptdsl import load_spec
from promptdsl.compiler import Compiler

SIZES = (8, 16, 34, 64, 128, 256)
SLICE = 16  # rows per score_many call, as promptdsl.dataset.DEFAULT_BATCH_ROWS


def _curve(llm: Any, prefix: list[int], rounds: int) -> dict[int, float]:
    """Median tokens/s of one decode of n random tokens after ``prefix``, for each n in SIZES."""
    import llama_cpp

    ctx, mem = llm.ctx, llama_cpp.llama_get_memory(llm.ctx)
    batch = llama_cpp.llama_batch_init(max(SIZES[-1], len(prefix)), 0, 1)
    rng = np.random.default_rng(0)

    def decode(toks: list[int], start: int) -> None:
        for j, t in enumerate(toks):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, start + j, 1
            batch.seq_id[j][0], batch.logits[j] = 0, j == len(toks) - 1
        batch.n_tokens = len(toks)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    speeds: dict[int, list[float]] = {n: [] for n in SIZES}
    try:
        llama_cpp.llama_memory_clear(mem, True)
        decode(prefix, 0)
        for r in range(rounds):
            for n in SIZES[r % len(SIZES):] + SIZES[: r % len(SIZES)]:  # rotate the order
                toks = [int(x) for x in rng.integers(1000, 40000, n)]
                reps = max(1, 256 // n)
                start = time.perf_counter()
                for _ in range(reps):
                    llama_cpp.llama_memory_seq_rm(mem, 0, len(prefix), -1)
                    decode(toks, len(prefix))
                speeds[n].append(n * reps / (time.perf_counter() - start))
    finally:
        llama_cpp.llama_memory_clear(mem, True)
        llm.n_tokens = 0  # the Llama's own record of what the context holds
        llama_cpp.llama_batch_free(batch)
    return {n: statistics.median(v) for n, v in speeds.items()}


def bench(items: int = 96, rounds: int = 3) -> list[Row]:
    from promptdsl_llamacpp.batch import score_many

    backend = local_backend()
    model = backend._model
    spec = load_spec(SPECS / "sentiment.yaml")
    compiler = Compiler(spec)
    prompts = [compiler.compile({"text": r["text"]}) for r in tweets(items)]
    conts = [prompts[0].continuation_prefix + c for c in spec.output.choices]  # type: ignore[union-attr]
    toks = [model.tokens(p) for p in prompts]
    shared = common_prefix(toks)
    curve = _curve(model.llm, toks[0][:shared], rounds)

    one_s = many_s = 0.0
    alone: list[list[float]] = []
    together: list[Any] = []
    backend.score(prompts[0], conts)  # warm both paths
    score_many(model, prompts[:2], conts)
    for i, first_alone in alternate(-(-items // SLICE)):
        chunk = prompts[i * SLICE:(i + 1) * SLICE]
        got: dict[str, Any] = {}

        def one(chunk: Any = chunk, got: dict[str, Any] = got) -> None:
            nonlocal one_s
            start = time.perf_counter()
            out = []
            for p in chunk:
                model.llm.n_tokens = min(model.llm.n_tokens, shared)  # each row decoded whole after the prefix
                out.append(backend.score(p, conts))
            one_s += time.perf_counter() - start
            got["one"] = out

        def many(chunk: Any = chunk, got: dict[str, Any] = got) -> None:
            nonlocal many_s
            start = time.perf_counter()
            got["many"] = score_many(model, chunk, conts)
            many_s += time.perf_counter() - start

        run_pair(first_alone, one, many)
        alone += got["one"]
        together += got["many"]

    same = sum(a == b for a, b in zip(alone, together, strict=True))
    item_tokens = sum(len(t) - shared for t in toks)
    best = max(curve.values())
    return [
        Row("D1 decode-size curve: items' size (34 tokens) vs the best size", f"{curve[34]:.0f} tok/s",
            f"{best:.0f} tok/s", best / curve[34], "informative", True,
            ["tok/s by tokens per decode after the cached prefix: "
             + ", ".join(f"{n}: {v:.0f}" for n, v in curve.items())]),
        Row(f"D2 {items} tweets scored, several per decode (batch=true) vs one at a time", f"{many_s:.2f} s",
            f"{one_s:.2f} s", one_s / many_s, "identical scores", same == items,
            [f"identical scores: {same}/{items}; {item_tokens} item tokens; one at a time "
             f"{item_tokens / one_s:.0f} tok/s, batched {item_tokens / many_s:.0f} tok/s"]),
    ]
