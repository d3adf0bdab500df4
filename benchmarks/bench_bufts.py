"""What the AMX-safe default costs: the plugin's ``extra_bufts=auto`` vs llama.cpp's own default.

On a CPU with AMX ``auto`` keeps the weights out of llama.cpp's AMX buffer (which
crashes multi-token decodes there); everywhere else it must cost nothing. Three
copies of the embedded model are loaded side by side: the plugin's default
(``auto``, resolved for this machine), llama.cpp's default (extra buffers on) and
extra buffers forced off (what ``auto`` picks on AMX machines). Each copy evaluates
the same 3-shot sentiment prompts from scratch and generates the same greedy text;
runs alternate and the medians of wall-clock tokens/s are compared (generation includes
its prompt).
"""

from __future__ import annotations

import time
from typing import Any

from common import SPECS, Row, median, threads, tweets

from promptdsl import load_spec
from promptdsl.compiler import Compiler
from promptdsl.inputs import validate_inputs


def bench(items: int = 12, rounds: int = 3, max_tokens: int = 32) -> list[Row]:
    from promptdsl_llamacpp import LoadSettings, _LoadedModel, amx_reason, cpu_flags, embedded_model_path, system_info

    path = embedded_model_path()
    auto = LoadSettings.from_options({"n_threads": threads()})
    models: dict[str, Any] = {
        "auto": _LoadedModel(path, auto),
        "on": _LoadedModel(path, LoadSettings.from_options({"n_threads": threads(), "extra_bufts": True})),
        "off": _LoadedModel(path, LoadSettings.from_options({"n_threads": threads(), "extra_bufts": False})),
    }
    for name, m in models.items():
        assert m.llm.model_params.use_extra_bufts == (auto.extra_bufts if name == "auto" else name == "on")
    spec = load_spec(SPECS / "sentiment.yaml")
    compiler = Compiler(spec)
    prompts = [compiler.compile(validate_inputs(spec, {"text": r["text"]})) for r in tweets(items)]
    token_lists = {name: [m.tokens(p) for p in prompts] for name, m in models.items()}
    story = prompts[0]

    def prompt_speed(name: str) -> float:
        llm = models[name].llm
        n = 0
        start = time.perf_counter()
        for toks in token_lists[name]:
            llm.reset()
            llm.eval(toks)
            n += len(toks)
        return n / (time.perf_counter() - start)

    def gen_speed(name: str) -> tuple[float, str]:
        llm = models[name].llm
        start = time.perf_counter()
        out: Any = llm.create_completion(models[name].tokens(story), max_tokens=max_tokens, temperature=0.0,
                                         repeat_penalty=1.0, seed=0, stop=[])
        seconds = time.perf_counter() - start
        return out["usage"]["completion_tokens"] / seconds, out["choices"][0]["text"]

    for name in models:  # warm-up: page the weights in
        prompt_speed(name)
    p_rates: dict[str, list[float]] = {n: [] for n in models}
    g_rates: dict[str, list[float]] = {n: [] for n in models}
    texts: dict[str, set[str]] = {n: set() for n in models}
    for i in range(rounds):
        order = list(models) if i % 2 == 0 else list(reversed(models))
        for name in order:
            p_rates[name].append(prompt_speed(name))
            rate, text = gen_speed(name)
            g_rates[name].append(rate)
            texts[name].add(text)
    p = {n: median(v) for n, v in p_rates.items()}
    g = {n: median(v) for n, v in g_rates.items()}
    same = len(set().union(*texts.values())) == 1
    reason = amx_reason(cpu_flags(), system_info())
    where = f"AMX here ({reason}): auto = off" if reason else "no AMX here: auto = on (llama.cpp's default)"
    r_prompt, r_gen = p["auto"] / p["on"], g["auto"] / g["on"]
    off_prompt, off_gen = p["off"] / p["on"], g["off"] / g["on"]
    notes = [
        where,
        f"prompt evaluation ({items} 3-shot prompts from scratch, {rounds} alternating rounds, medians): "
        f"auto {p['auto']:.0f}, on {p['on']:.0f}, off {p['off']:.0f} tok/s",
        f"generation ({max_tokens} greedy tokens): auto {g['auto']:.1f}, on {g['on']:.1f}, off {g['off']:.1f} tok/s; "
        f"identical text on all three: {same}",
        f"forcing extra buffers off (what auto does on AMX CPUs) on this machine: prompt {off_prompt:.2f}x, "
        f"generation {off_gen:.2f}x of llama.cpp's default",
    ]
    data = {"prompt_tps": p, "gen_tps": g, "identical": same, "amx": reason}
    return [
        Row("6a AMX-safe default, prompt evaluation tok/s vs llama.cpp's default", f"{p['auto']:.0f} tok/s",
            f"{p['on']:.0f} tok/s", r_prompt, ">= 0.97x (no regression)", r_prompt >= 0.97 and same, notes, data),
        Row("6b AMX-safe default, generation tok/s vs llama.cpp's default", f"{g['auto']:.1f} tok/s",
            f"{g['on']:.1f} tok/s", r_gen, ">= 0.97x (no regression)", r_gen >= 0.97 and same, [], data),
    ]
