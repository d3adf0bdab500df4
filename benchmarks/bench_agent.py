"""Calculator agent: accuracy on generated arithmetic word problems, with tools vs `tool_choice: none`.

    python benchmarks/bench_agent.py [--n 50] [--seed 0] [--threads 1] [--json out.json]
        [--wordings bench|held-out] [--shots K] [--form expression|operands]

Problems are generated (seeded) from templates for + - * / with 2-3-digit
operands; both sides run specs/calculator-agent.yaml on the embedded model,
the baseline with ``tool_choice: none`` (the model answers directly). Prints
accuracy, mean tool steps, seconds per problem and the stop reasons. Target:
accuracy >= 0.90 with tools.

``--wordings held-out`` uses a second set of templates, written to check that
the spec's worked examples are not fitted to the first; ``--shots 0`` (no
worked examples) and ``--form expression`` (the model writes the expression
under a grammar instead of choosing a listed call by score) measure what each
mechanism of the prompted tool path contributes.
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


#: Other wordings of the same operations (not in the spec's examples either), for checks against over-fitting.
HELD_OUT: dict[str, list[str]] = {
    "+": [
        "{name} scored {a} points on Monday and {b} points on Tuesday. How many points in all?",
        "There are {a} red cars and {b} blue cars in a car park. How many cars are there?",
        "A museum had {a} visitors in the morning and {b} in the afternoon. How many visitors came that day?",
    ],
    "-": [
        "A train carried {a} passengers; {b} got off at the station. How many passengers are still on the train?",
        "{name} saved {a} dollars and spent {b} dollars on a bike. How much money is left?",
        "A printer had {a} sheets of paper and used {b}. How many sheets remain?",
    ],
    "*": [
        "A classroom has {b} desks and each desk has {a} books. How many books are there?",
        "{name} reads {a} pages every day for {b} days. How many pages does {name} read?",
        "One crate weighs {a} kg. What is the weight of {b} crates in kg?",
    ],
    "/": [
        "{a} students are split into {b} equal teams. How many students are in each team?",
        "A baker uses {a} grams of flour for {b} equal loaves. How many grams go into each loaf?",
        "{name} drives {a} km in {b} hours at a steady speed. How many km does {name} drive each hour?",
    ],
}
WORDINGS = {"bench": TEMPLATES, "held-out": HELD_OUT}


def problems(n: int, seed: int = 0, templates: dict[str, list[str]] = TEMPLATES) -> list[dict[str, Any]]:
    """``n`` word problems cycling through + - * /, each with its exact integer answer."""
    rng = random.Random(seed)
    ops = list(templates)
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
        template = rng.choice(templates[op])
        out.append({"question": template.format(a=a, b=b, name=rng.choice(NAMES)), "answer": answer, "op": op})
    return out


def variant(spec: Any, shots: int | None, form: str | None) -> Any:
    """The spec with its calculator's worked examples cut to ``shots`` and/or its ``form`` changed (ablations)."""
    uses = []
    for use in spec.tools:
        if use.name == "calculator":
            if shots is not None:
                use = replace(use, shots=shots or None, examples=use.examples if shots else ())
            if form == "expression":
                use = replace(use, options={"form": "expression"})
        uses.append(use)
    return replace(spec, tools=uses)


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
    p.add_argument("--wordings", choices=tuple(WORDINGS), default="bench",
                   help="the benchmark's templates or the held-out ones")
    p.add_argument("--shots", type=int, help="worked calls shown (0: none; default: the spec's)")
    p.add_argument("--form", choices=("expression", "operands"),
                   help="calculator form (default: the spec's; expression: written under a grammar)")
    args = p.parse_args(argv)

    from promptdsl import Runner, load_spec
    from promptdsl.registry import get_backend

    rows = problems(args.n, args.seed, WORDINGS[args.wordings])
    spec = variant(load_spec(SPEC), args.shots, args.form)
    backend = get_backend("llamacpp", None, {"n_threads": args.threads} if args.threads else {})
    with_tools = Runner(spec, backend)
    without = Runner(replace(spec, tool_choice="none"), backend)
    assert with_tools.tool_loop is not None
    print(f"{args.n} problems ({args.wordings} wordings), seed {args.seed}; backend {backend.name} ({backend.model_id}); "
          f"tool path: {with_tools.tool_loop.path} {getattr(with_tools.tool_loop.driver, 'how', '')}")
    sides = {"tools": with_tools, "none": without}
    figures = {name: run_side(r, rows) for name, r in sides.items() if args.side in (name, "both")}
    for side, f in figures.items():
        ops = " ".join(f"{op}:{v:.2f}" for op, v in f["by_op"].items())
        print(f"tool_choice {'calculator' if side == 'tools' else 'none':10s} accuracy {f['accuracy']:.2f} ({ops})  "
              f"mean steps {f['mean_steps']:.2f}  {f['seconds_per_problem']:.2f} s/problem  "
              f"stop {f['stop_reasons']}")
    if len(figures) == 2:
        base = figures["none"]["accuracy"]
        ratio = f"{figures['tools']['accuracy'] / base:.1f}x" if base else "n/a (none right without tools)"
        print(f"accuracy with tools / without: {ratio}")
    if "tools" in figures:
        print(f"target with tools >= {TARGET:.2f}: {'met' if figures['tools']['accuracy'] >= TARGET else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "seed": args.seed, "wordings": args.wordings,
                                         "shots": args.shots, "form": args.form, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
