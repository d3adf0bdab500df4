"""llama.cpp thread settings on the machine as it is and on a busy one.

Three copies of the embedded model with different thread settings do what promptdsl does: a
256-token batch, the items of a dataset run (each item's own tokens after the cached few-shot
prefix) and greedy generation (one token per decode), in rotating order, first as the machine
is, then with ``cores`` extra processes spinning (a machine busy with other work). Speeds are
medians of wall time around the decodes. Ratios are against every core for both (llama.cpp's
usual setting and the plugin's default on a quiet machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from common import SPECS, Row, common_prefix, median, tweets

from promptdsl import load_spec
from promptdsl.compiler import Compiler
from promptdsl.inputs import validate_inputs

SPIN = "while True: pass"


def _settings(cores: int) -> dict[str, tuple[int, int]]:
    """name -> (n_threads for generation, n_threads_batch for prompts)."""
    out = {f"all cores ({cores}/{cores})": (cores, cores), "1 thread (1/1)": (1, 1)}
    if cores > 1:
        out[f"generation {cores - 1}, batch {cores}"] = (cores - 1, cores)
    return out


def _measure(models: dict[str, Any], work: Work, rounds: int) -> dict[str, tuple[float, float, float]]:
    """Median tokens/s per setting: a 256-token batch, items after a cached prefix, greedy generation.

    Wall time around each ``eval`` (the decode is synchronous), not llama.cpp's counters: those miss
    prompt batches on some builds, and the wall time is what a user waits for.
    """
    p: dict[str, list[float]] = {k: [] for k in models}
    s: dict[str, list[float]] = {k: [] for k in models}
    g: dict[str, list[float]] = {k: [] for k in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            llm = models[name]
            llm.reset()
            start = time.perf_counter()
            llm.eval(work.batch)
            p[name].append(len(work.batch) / (time.perf_counter() - start))
            llm.reset()
            llm.eval(work.prefix)
            n, start = 0, time.perf_counter()
            for item in work.items:  # what scoring a dataset does: each item's own tokens after the prefix
                llm.n_tokens = len(work.prefix)
                llm.eval(item)
                n += len(item)
            s[name].append(n / (time.perf_counter() - start))
            llm.reset()
            llm.eval(work.story)
            start = time.perf_counter()
            for _ in range(work.gen_tokens):  # greedy one token at a time, as generation decodes
                llm.eval([_argmax(llm)])
            g[name].append(work.gen_tokens / (time.perf_counter() - start))
    return {k: (median(p[k]), median(s[k]), median(g[k])) for k in models}


@dataclass
class Work:
    """The token lists every setting evaluates."""

    batch: list[int]
    prefix: list[int]
    items: list[list[int]]
    story: list[int]
    gen_tokens: int


def _argmax(llm: Any) -> int:
    import llama_cpp
    import numpy as np

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return int(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).argmax())


def bench(rounds: int = 3, gen_tokens: int = 16, items: int = 8) -> list[Row]:
    from llama_cpp import Llama
    from promptdsl_llamacpp import cpu_count, embedded_model_path

    cores = cpu_count()
    path = str(embedded_model_path())
    models = {
        name: Llama(model_path=path, n_ctx=1024, n_batch=512, n_threads=gen, n_threads_batch=bat, seed=0,
                    verbose=False)
        for name, (gen, bat) in _settings(cores).items()
    }
    spec = load_spec(SPECS / "sentiment.yaml")
    compiler = Compiler(spec)
    prompts = [compiler.compile(validate_inputs(spec, {"text": r["text"]})) for r in tweets(max(10, items))]
    llm0 = next(iter(models.values()))
    toks = [llm0.tokenize(p.text.encode("utf-8"), add_bos=True) for p in prompts]
    shared = common_prefix(toks)
    stream = [t for seq in toks for t in seq]
    work = Work(stream[:256], toks[0][:shared], [t[shared:] for t in toks[:items]], stream[:100], gen_tokens)

    results: dict[str, dict[str, tuple[float, float, float]]] = {}
    loads: dict[str, str] = {}
    for case in ("as is", "busy"):
        spinners = []
        if case == "busy":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores)]
            time.sleep(1.0)
        try:
            loads[case] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            results[case] = _measure(models, work, rounds)
        finally:
            for s in spinners:
                s.kill()
                s.wait()
    base = next(iter(models))
    rows = []
    for case in ("as is", "busy"):
        b_p, b_s, b_g = results[case][base]
        for name, (p, sc, g) in results[case].items():
            if name == base:
                continue
            rows.append(Row(
                f"threads, machine {case}: {name} vs {base}, items | 256 batch | generation",
                f"{sc:.0f} | {p:.0f} | {g:.1f} tok/s", f"{b_s:.0f} | {b_p:.0f} | {b_g:.1f} tok/s",
                sc / b_s if b_s else 0.0, "informative", True,
                [f"ratios: items {sc / b_s if b_s else 0:.2f}x, 256-token batch {p / b_p if b_p else 0:.2f}x, "
                 f"generation {g / b_g if b_g else 0:.2f}x; load average at the start: {loads[case]}"
                 + (f" (+{cores} spinning processes)" if case == "busy" else "")],
                {"case": case, "setting": name, "items_tps": sc, "prompt_tps": p, "gen_tps": g,
                 "base_items_tps": b_s, "base_prompt_tps": b_p, "base_gen_tps": b_g, "load": loads[case]},
            ))
    return rows
