"""3-shot sentiment over TweetEval items: promptdsl vs a plain llama-cpp-python loop.

Both sides score the same compiled prompts with the same model file and thread count.
The baseline evaluates every full prompt from an empty context (what a plain loop does);
promptdsl runs the real dataset path (read JSONL, validate, compile, score, write JSONL),
where the shared instruction + examples stay in llama.cpp's KV cache and only each item's
own tokens are evaluated. Slices of the data alternate between the two sides (and who goes
first) so that load from other programs on the machine hits both alike.

Also measured against the hardware limit: the item-specific tokens (prompt tokens minus the
shared prefix) divided by the prompt-evaluation speed llama.cpp itself measured in the
baseline, in the same run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from common import (
    SPECS,
    Perf,
    Row,
    Timer,
    alternate,
    common_prefix,
    local_backend,
    perf_delta,
    plain_llama,
    plain_score,
    run_pair,
    threads,
    tweets,
    write_jsonl,
)

from promptdsl import Prompt, Runner, load_spec
from promptdsl.compiler import Compiler
from promptdsl.datafile import DataFile
from promptdsl.dataset import run_dataset


def bench(items: int = 200, slice_size: int = 10) -> list[Row]:
    spec = load_spec(SPECS / "sentiment.yaml")
    rows = tweets(items)
    backend: Any = local_backend()
    runner = Runner(spec, backend)
    compiler = Compiler(spec)
    prompts = [compiler.compile({"text": r["text"]}) for r in rows]
    choices = [prompts[0].continuation_prefix + c for c in spec.output.choices]
    base_llm = plain_llama(backend.path, threads())
    ours_llm = backend.llama

    # Warm both (page the weights in) on an unrelated text: the shared prefix is NOT pre-loaded.
    plain_score(base_llm, "Hello there.", choices)
    backend.score(Prompt("completion", text="Hello there."), choices)

    base_time, ours_time = Timer(), Timer()
    base_perf: list[Perf] = []
    ours_perf: list[Perf] = []
    base_pred: list[list[float]] = []
    ours_lines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        slices = []
        for k in range(0, items, slice_size):
            path = write_jsonl(Path(tmp) / f"slice{k}.jsonl", rows[k:k + slice_size])
            slices.append((k, DataFile(path)))

        for i, base_first in alternate(len(slices)):
            k, data = slices[i]

            def baseline(k: int = k) -> None:
                with base_time(), perf_delta(base_llm, base_perf):
                    for p in prompts[k:k + slice_size]:
                        base_pred.append(plain_score(base_llm, p.text, choices))

            def ours(data: DataFile = data) -> None:
                lines: list[str] = []
                with ours_time(), perf_delta(ours_llm, ours_perf):
                    run_dataset(runner, data, lines.append, cache=None, concurrency=1)
                ours_lines.extend(json.loads(x) for x in lines)

            run_pair(base_first, baseline, ours)

    labels = spec.output.choices
    base_labels = [labels[max(range(len(s)), key=s.__getitem__)] for s in base_pred]
    ours_labels = [x["value"] for x in ours_lines]
    same = sum(a == b for a, b in zip(base_labels, ours_labels, strict=True))
    max_diff = max(
        abs(x["scores"][c] - s[j]) for x, s in zip(ours_lines, base_pred, strict=True) for j, c in enumerate(labels)
    )

    toks = [backend.llama.tokenize(p.text.encode("utf-8"), add_bos=True) for p in prompts]
    shared = common_prefix(toks)
    item_tokens = sum(len(t) - shared for t in toks)
    bp = sum(base_perf, Perf())
    op = sum(ours_perf, Perf())
    speed = bp.prompt_speed
    limit = item_tokens / speed
    speedup = base_time.seconds / ours_time.seconds
    to_limit = ours_time.seconds / limit

    notes = [
        f"{items} items, {len(slices)} alternating slices; prompt {sum(map(len, toks)) / items:.1f} tokens on "
        f"average, of which {shared} shared (instruction + 3 examples) and {item_tokens / items:.1f} the item's own",
        f"identical predictions: {same}/{items} (largest |log-prob difference| {max_diff:.2e})",
        f"llama.cpp evaluated {bp.p_tokens + bp.e_tokens} tokens for the baseline, "
        f"{op.p_tokens + op.e_tokens} for promptdsl (prefix once; a few items share more than the prefix "
        "with the item before, e.g. a leading '@user')",
    ]
    return [
        Row("1 few-shot sentiment vs plain llama-cpp-python loop", f"{ours_time.seconds:.2f} s",
            f"{base_time.seconds:.2f} s", speedup, ">= 3x faster", speedup >= 3 and same == items, notes,
            {"ours_s": ours_time.seconds, "baseline_s": base_time.seconds, "speedup": speedup,
             "identical": same, "items": items, "max_logprob_diff": max_diff}),
        Row("2 same run vs hardware limit (item tokens / llama.cpp prompt-eval speed)",
            f"{ours_time.seconds:.2f} s", f"{limit:.2f} s", to_limit, "<= 1.15x the limit", to_limit <= 1.15,
            [f"{item_tokens} item-specific tokens / {speed:.1f} tokens/s (llama.cpp's prompt-eval speed, measured "
             f"in the baseline) = {limit:.2f} s; promptdsl's own llama.cpp time {(op.p_ms + op.e_ms) / 1000:.2f} s, "
             f"the rest ({ours_time.seconds - (op.p_ms + op.e_ms) / 1000:.2f} s) is Python: read, validate, "
             "compile, tokenize, write"],
            {"ours_s": ours_time.seconds, "limit_s": limit, "ratio": to_limit, "item_tokens": item_tokens,
             "prompt_eval_tokens_per_s": speed, "ours_llama_s": (op.p_ms + op.e_ms) / 1000}),
    ]
