"""llama.cpp thread settings on a quiet and on a busy machine.

Three copies of the embedded model with different thread settings evaluate the same prompt
(a 256-token batch: how scoring runs) and generate the same greedy tokens (one token per
decode), in alternating order, first as the machine is, then with ``cores`` extra processes
spinning (a machine busy with other work). Speeds are medians of llama.cpp's own counters.
Ratios are against every core for both (llama.cpp's usual setting and the plugin's quiet default).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from common import SPECS, Perf, Row, median, tweets

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


def _measure(models: dict[str, Any], batch: list[int], story: list[int], rounds: int,
             gen_tokens: int) -> dict[str, tuple[float, float]]:
    p: dict[str, list[float]] = {k: [] for k in models}
    g: dict[str, list[float]] = {k: [] for k in models}
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            llm = models[name]
            before = Perf.read(llm)
            llm.reset()
            llm.eval(batch)
            p[name].append((Perf.read(llm) - before).prompt_speed)
            llm.reset()
            llm.eval(story)
            before = Perf.read(llm)
            for _ in range(gen_tokens):  # greedy one token at a time, as generation decodes
                llm.eval([_argmax(llm)])
            d = Perf.read(llm) - before
            g[name].append(d.e_tokens / (d.e_ms / 1000) if d.e_ms else 0.0)
    return {k: (median(p[k]), median(g[k])) for k in models}


def _argmax(llm: Any) -> int:
    import llama_cpp
    import numpy as np

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return int(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).argmax())


def bench(rounds: int = 5, gen_tokens: int = 32) -> list[Row]:
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
    prompts = [compiler.compile(validate_inputs(spec, {"text": r["text"]})) for r in tweets(10)]
    llm0 = next(iter(models.values()))
    stream = [t for p in prompts for t in llm0.tokenize(p.text.encode("utf-8"), add_bos=True)]
    batch, story = stream[:256], stream[:100]

    results: dict[str, dict[str, tuple[float, float]]] = {}
    loads: dict[str, str] = {}
    for case in ("quiet", "busy"):
        spinners = []
        if case == "busy":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores)]
            time.sleep(1.0)
        try:
            loads[case] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            results[case] = _measure(models, batch, story, rounds, gen_tokens)
        finally:
            for s in spinners:
                s.kill()
                s.wait()
    base = next(iter(models))
    rows = []
    for case in ("quiet", "busy"):
        b_p, b_g = results[case][base]
        for name, (p, g) in results[case].items():
            if name == base:
                continue
            rows.append(Row(
                f"threads, {case} machine: {name} vs {base}, prompt | generation",
                f"{p:.0f} | {g:.0f} tok/s", f"{b_p:.0f} | {b_g:.0f} tok/s", p / b_p if b_p else 0.0,
                "informative", True,
                [f"generation ratio {g / b_g if b_g else 0:.2f}x; load average at the start: {loads[case]}"
                 + (f" (+{cores} spinning processes)" if case == "busy" else "")],
                {"case": case, "setting": name, "prompt_tps": p, "gen_tps": g, "base_prompt_tps": b_p,
                 "base_gen_tps": b_g},
            ))
    return rows
