"""Streaming generation speed: promptdsl's Runner.response vs llama-cpp-python directly.

Same model object, same prompt, greedy decoding, same token budget; runs alternate
(direct, promptdsl, promptdsl, direct, ...) and the generated token count comes from
llama.cpp's own counters. The texts must be identical.
"""

from __future__ import annotations

import json
import time
from typing import Any

from common import Perf, Row, local_backend, median

from promptdsl import Runner, loads_spec

STORY = json.dumps({  # a spec as JSON (which is YAML): a long greedy generation
    "version": 1, "name": "story", "mode": "completion", "inputs": {"topic": {"type": "string"}},
    "template": "Here is a long, detailed story about {{ topic }}.\n\nOnce upon a time",
    "output": {"type": "text", "max_tokens": 160, "stop": []}, "model": {"options": {"temperature": 0}},
})


def bench(rounds: int = 6, max_tokens: int = 160) -> list[Row]:
    spec = loads_spec(STORY)
    backend: Any = local_backend()
    runner = Runner(spec, backend)
    llm = backend.llama
    values = {"topic": "a lighthouse keeper and a lost whale"}
    prompt_text = runner.prepare(values)[1].text

    def direct() -> tuple[str, float, int]:
        before = Perf.read(llm)
        start = time.perf_counter()
        parts = []
        for chunk in llm.create_completion(prompt_text, max_tokens=max_tokens, temperature=0.0, stream=True,
                                           repeat_penalty=1.0, seed=0, stop=[]):
            parts.append(chunk["choices"][0]["text"])
        seconds = time.perf_counter() - start
        return "".join(parts), seconds, (Perf.read(llm) - before).e_tokens

    def ours() -> tuple[str, float, int]:
        before = Perf.read(llm)
        start = time.perf_counter()
        parts = list(runner.response(values))
        seconds = time.perf_counter() - start
        return "".join(parts), seconds, (Perf.read(llm) - before).e_tokens

    direct()
    ours()  # warm-up: both now find the prompt in the KV cache alike
    d_rates, o_rates, texts = [], [], set()
    for i in range(rounds):
        order = (direct, ours) if i % 2 == 0 else (ours, direct)
        for fn in order:
            text, seconds, tokens = fn()
            texts.add(text.strip())
            (d_rates if fn is direct else o_rates).append(tokens / seconds)
    ratio = median(o_rates) / median(d_rates)
    identical = len(texts) == 1
    return [
        Row("3 streaming generation tokens/s vs llama-cpp-python directly", f"{median(o_rates):.1f} tok/s",
            f"{median(d_rates):.1f} tok/s", ratio, ">= 0.97x", ratio >= 0.97 and identical,
            [f"{rounds} alternating runs each of up to {max_tokens} tokens, medians; identical text: {identical}; "
             f"best run: {max(o_rates):.1f} vs {max(d_rates):.1f} tok/s"],
            {"ours_tps": median(o_rates), "direct_tps": median(d_rates), "ratio": ratio, "identical": identical}),
    ]
