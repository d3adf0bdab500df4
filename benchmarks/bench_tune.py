"""Tuning target: LoRA-tune the embedded model on TweetEval emotion train, evaluate on val.

    python benchmarks/bench_tune.py TRAIN.jsonl VAL.jsonl [--alpha 1] [--steps N] [--alphas 0,1,4]

Prints the contamination report (train vs val), the loss curve, training time, peak memory,
the written GGUF's size, and the base and tuned model's accuracy / macro-F1 / per-class table on
val through the llamacpp backend, with the tuned/base macro-F1 ratio measured in the same run.
Target: macro-F1 >= 0.68 after at most 15 minutes of tuning on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from promptdsl import load_spec
from promptdsl.datafile import DataFile
from promptdsl.evaluate import ChoiceMetrics
from promptdsl.export import compile_rows, contamination, eval_reference, input_text
from promptdsl.tune import Listener, summary_lines, tune
from promptdsl.tune.config import TuneConfig

SPEC = Path(__file__).resolve().parent.parent / "specs" / "emotion.yaml"
TARGET_F1 = 0.68


class Log(Listener):
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def stage(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {text}", file=sys.stderr, flush=True)

    def step(self, step: int, total: int, loss: float) -> None:
        if step % 20 == 0 or step == total:
            print(f"[{time.perf_counter() - self.t0:7.1f}s] step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", type=Path)
    ap.add_argument("val", type=Path)
    ap.add_argument("--spec", type=Path, default=SPEC)
    ap.add_argument("--alpha", type=float, default=TuneConfig.alpha)
    ap.add_argument("--alphas", help="comma-separated alphas to compare on the same budget (skips the base eval after the first)")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int, default=TuneConfig.batch)
    ap.add_argument("--lr", type=float, default=TuneConfig.lr)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path, help="keep the tuned GGUF here (default: a temporary file)")
    args = ap.parse_args()

    spec = load_spec(args.spec)
    train, val = DataFile(args.train), DataFile(args.val)
    rows = list(compile_rows(spec, train, "label"))
    report = contamination([input_text(r.values, spec.inputs) for r in rows], [eval_reference(spec, val)])
    print(report.format())

    alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else [args.alpha]
    base_f1 = None
    with tempfile.TemporaryDirectory() as tmp:
        for alpha in alphas:
            out = args.out if args.out and len(alphas) == 1 else Path(tmp) / f"tuned-alpha{alpha:g}.gguf"
            config = TuneConfig(alpha=alpha, steps=args.steps, batch=args.batch, lr=args.lr)
            print(f"\n=== alpha = {alpha:g}, steps = {config.total_steps(len(rows))}, batch {config.batch}, lr {config.lr:g}")
            t0 = time.perf_counter()
            r = tune(spec, train, "label", out, config, eval_data=val, threads=args.threads, listener=Log())
            total = time.perf_counter() - t0
            for line in summary_lines(r):
                print(line)
            print(f"wall time (load + tokenize + train + write + two evaluations): {total:.0f} s")
            assert isinstance(r.before, ChoiceMetrics) and isinstance(r.after, ChoiceMetrics)
            if base_f1 is None:
                base_f1 = r.before.macro_f1
                print(f"\nbase model on {val.name}:\n{r.before.format()}")
            print(f"\ntuned model (alpha {alpha:g}) on {val.name}:\n{r.after.format()}")
            f1 = r.after.macro_f1
            print(
                f"\nmacro-F1 tuned {f1:.4f} vs base {base_f1:.4f}: {f1 / max(base_f1, 1e-9):.2f}x; "
                f"target >= {TARGET_F1} in <= 900 s of training: "
                f"{'met' if f1 >= TARGET_F1 and r.train_seconds <= 900 else 'NOT met'} "
                f"({r.train_seconds:.0f} s training)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
