"""Calculator agent: accuracy on generated arithmetic word problems, with tools vs `tool_choice: none`.

    python benchmarks/bench_agent.py [--n 50] [--seed 0] [--threads 1] [--json out.json]

Problems are generated (seeded) from templates for + - * / with 2-3-digit
operands; both sides run specs/calculator-agent.yaml on the embedded model,
the baseline with ``tool_choice: none`` (the model answers directly). Prints
accuracy, mean tool steps, seconds per problem and the stop reasons. Target:
accuracy >= 0.90 with tools.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "calculator-agent.yaml"
TARGET = 0.90

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana"]
TEMPLATES: dict[str, list[str]] = {
    "+": [
        "{name} has {a} marbles and finds {b} more. How many marbles does {name} have now?",
        "A library had {a} books and received {b} new books. How many books does it have now?",
        "A farm has {a} chickens and {b} ducks. How many birds are there in total?",
    ],
    "-": [
        "{name} had {a} stickers and gave away {b}. How many stickers are left?",
        "A tank held {a} litres of water and {b} litres leaked out. How many litres remain?",
        "A shop had {a} apples and sold {b} of them. How many apples are left?",
    ],
    "*": [
        "Each box holds {a} pencils. How many pencils are in {b} boxes?",
        "A farmer plants {b} rows with {a} trees in each row. How many trees does he plant?",
        "A ticket costs {a} dollars. How much do {b} tickets cost?",
    ],
    "/": [
        "{a} candies are shared equally among {b} children. How many candies does each child get?",
        "{name} packs {a} eggs into cartons of {b}. How many cartons does {name} fill?",
        "A rope {a} metres long is cut into {b} equal pieces. How long is each piece in metres?",
    ],
}


def problems(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` word problems cycling through + - * /, each with its exact integer answer."""
    rng = random.Random(seed)
    ops = list(TEMPLATES)
    out = []
    for i in range(n):
        op = ops[i % len(ops)]
        if op == "+":
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            answer = a + b
        elif op == "-":
            a, b = sorted((rng.randint(10, 999), rng.randint(10, 999)), reverse=True)
            answer = a - b
        elif op == "*":
            a, b = rng.randint(10, 999), rng.randint(10, 99)
            answer = a * b
        else:
            b = rng.randint(10, 31)
            answer = rng.randint(10, 999 // b)
            a = answer * b
        template = rng.choice(TEMPLATES[op])
        out.append({"question": template.format(a=a, b=b, name=rng.choice(NAMES)), "answer": answer, "op": op})
    return out


def correct(value: Any, answer: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value - answer) < 1e-6


def run_side(runner: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Run every problem; errors count as wrong."""
    hits, steps, seconds, reasons, errors = 0, [], [], Counter(), 0
    by_op: Counter[str] = Counter()
    for row in rows:
        start = time.perf_counter()
        try:
            result = runner.run({"question": row["question"]})
        except Exception as exc:  # an unparseable answer is a wrong answer here
            errors += 1
            reasons[f"error: {type(exc).__name__}"] += 1
            seconds.append(time.perf_counter() - start)
            continue
        seconds.append(time.perf_counter() - start)
        ok = correct(result.value, row["answer"])
        calls = [s["arguments"] for s in result.steps or []]
        print(f"{'ok ' if ok else 'bad'} {row['op']} {row['answer']} -> {result.value} {calls} "
              f"{seconds[-1]:.1f}s", file=sys.stderr, flush=True)
        hits += ok
        by_op[row["op"]] += ok
        steps.append(len(result.steps or []))
        reasons[result.stop_reason or "no tools"] += 1
    n = len(rows)
    per_op = Counter(r["op"] for r in rows)
    return {
        "accuracy": hits / n,
        "by_op": {op: by_op[op] / per_op[op] for op in per_op},
        "mean_steps": statistics.fmean(steps) if steps else 0.0,
        "seconds_per_problem": statistics.fmean(seconds),
        "stop_reasons": dict(reasons),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, default=50, help="problems (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="llama.cpp threads (default: all cores)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--side", choices=("both", "tools", "none"), default="both",
                   help="run one side only (e.g. the two sides in two processes)")
    args = p.parse_args(argv)

    from promptdsl import Runner, load_spec
    from promptdsl.registry import get_backend

    rows = problems(args.n, args.seed)
    spec = load_spec(SPEC)
    backend = get_backend("llamacpp", None, {"n_threads": args.threads} if args.threads else {})
    with_tools = Runner(spec, backend)
    without = Runner(replace(spec, tool_choice="none"), backend)
    assert with_tools.tool_loop is not None
    print(f"{args.n} problems, seed {args.seed}; backend {backend.name} ({backend.model_id}); "
          f"tool path: {with_tools.tool_loop.path} {getattr(with_tools.tool_loop.driver, 'how', '')}")
    sides = {"tools": with_tools, "none": without}
    figures = {name: run_side(r, rows) for name, r in sides.items() if args.side in (name, "both")}
    for side, f in figures.items():
        ops = " ".join(f"{op}:{v:.2f}" for op, v in f["by_op"].items())
        print(f"tool_choice {'calculator' if side == 'tools' else 'none':10s} accuracy {f['accuracy']:.2f} ({ops})  "
              f"mean steps {f['mean_steps']:.2f}  {f['seconds_per_problem']:.2f} s/problem  "
              f"stop {f['stop_reasons']}")
    if len(figures) == 2:
        ratio = figures["tools"]["accuracy"] / max(figures["none"]["accuracy"], 1e-9)
        print(f"accuracy with tools / without: {ratio:.1f}x")
    if "tools" in figures:
        print(f"target with tools >= {TARGET:.2f}: {'met' if figures['tools']['accuracy'] >= TARGET else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "seed": args.seed, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
