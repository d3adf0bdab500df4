"""``promptdsl tune``: LoRA-tune the spec's GGUF model on labelled rows (the optional [tune] extra)."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from ..loader import load_spec
from ..tune.config import DEFAULT_STEPS, TuneConfig
from .common import Commands, say
from .dataset import stop_on_sigint


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "tune", parents=[common], help="LoRA-tune the spec's model on labelled rows and write a GGUF ([tune] extra)"
    )
    p.add_argument("spec", type=Path)
    p.add_argument("--data", type=Path, required=True, help="labelled training rows: .jsonl or .csv")
    p.add_argument("--label", required=True, metavar="FIELD", help="the field holding the expected output")
    p.add_argument("--out", type=Path, required=True, help="the tuned model to write (.gguf)")
    p.add_argument("--eval", type=Path, metavar="F", help="labelled rows to evaluate the base and the tuned model on")
    p.add_argument("--model", "-m", help="the GGUF to tune (default: the spec's model, else the embedded SmolLM2)")
    d = TuneConfig()
    p.add_argument(
        "--alpha", type=float, default=d.alpha,
        help=f"response tokens weigh 1 + alpha, prompt tokens 1 (default {d.alpha:g})",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help=f"optimizer steps (default {DEFAULT_STEPS})")
    budget.add_argument("--epochs", type=float, help="passes over the data, instead of --steps")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    p.add_argument("--batch", type=int, default=d.batch, help=f"rows per step (default {d.batch})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, help="CPU threads (default: the idle cores, at least 1)")
    p.add_argument(
        "--out-type", choices=("q8_0", "f16"), default=d.out_type,
        help=f"type of the changed tensors (default {d.out_type})",
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint Ctrl+C saved next to --out")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(handler=cmd_tune)


#: The flags that are TuneConfig fields of the same name.
CONFIG_FLAGS = ("alpha", "steps", "epochs", "lr", "rank", "batch", "seed", "out_type")


def cmd_tune(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every other command would pay for rich and the tune package.
    from ..datafile import DataFile
    from ..evaluate import ChoiceMetrics
    from ..tune import summary_lines, tune
    from .tune_progress import CliListener

    spec = load_spec(args.spec)
    data = DataFile(args.data)
    eval_data = DataFile(args.eval) if args.eval is not None else None
    if args.out.exists() and not args.force and not args.resume:
        say(f"promptdsl: error: {args.out} exists (use --force to overwrite)")
        return 2
    config = TuneConfig(**{name: getattr(args, name) for name in CONFIG_FLAGS})
    listener = CliListener()
    stop = threading.Event()
    try:
        with stop_on_sigint(stop):
            report = tune(
                spec,
                data,
                args.label,
                args.out,
                config,
                model=args.model,
                eval_data=eval_data,
                resume=args.resume,
                threads=args.threads,
                stop=stop,
                listener=listener,
            )
    finally:
        listener.close()
    for line in summary_lines(report):
        print(line)
    for which in ("before", "after"):
        m = getattr(report, which)
        if isinstance(m, ChoiceMetrics):
            print(f"\n{which} ({'base' if which == 'before' else 'tuned'} model):\n{m.format()}")
    return 0
