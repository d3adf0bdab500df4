"""``promptdsl tune``: LoRA-tune the spec's GGUF model on labelled rows (the optional [tune] extra)."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..datafile import DataFile
from ..evaluate import ChoiceMetrics
from ..loader import load_spec
from ..tune import Listener, summary_lines, tune
from ..tune.config import DEFAULT_STEPS, TuneConfig
from .common import Commands, say
from .dataset import stop_on_sigint
from .progress import RowProgress


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads (default: the idle cores, at least 1)")
    p.add_argument(
        "--out-type", choices=("q8_0", "f16"), default="q8_0", help="type of the changed tensors (default q8_0)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint Ctrl+C saved next to --out")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(handler=cmd_tune)


class _CliListener(Listener):
    """Stages as status lines; training steps and evaluation rows on rich progress bars."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.bar: Progress | None = None
        self.task: Any = None

    def stage(self, text: str) -> None:
        self.close()
        say(f"promptdsl: {text}")

    def step(self, step: int, total: int, loss: float) -> None:
        if self.bar is None:
            self.bar = Progress(
                TextColumn("step"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                disable=not self.console.is_terminal,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=step, loss=f"{loss:.4f}")
        else:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}")
        if not self.console.is_terminal and (step == total or step % 25 == 0):
            say(f"promptdsl: step {step}/{total} loss {loss:.4f}")

    def eval_progress(self, label: str, total: int | None) -> Any:
        return _EvalBar(total, label.strip())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class _EvalBar(RowProgress):
    """A row progress bar that starts at once and ends with ``close()`` (what tune expects)."""

    def __init__(self, total: int | None, description: str) -> None:
        super().__init__(total, description=description)
        self.__enter__()

    def close(self) -> None:
        self.__exit__(None, None, None)


#: The flags that are TuneConfig fields of the same name.
CONFIG_FLAGS = ("alpha", "steps", "epochs", "lr", "rank", "batch", "seed", "out_type")


def cmd_tune(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    data = DataFile(args.data)
    eval_data = DataFile(args.eval) if args.eval is not None else None
    if args.out.exists() and not args.force and not args.resume:
        say(f"promptdsl: error: {args.out} exists (use --force to overwrite)")
        return 2
    config = TuneConfig(**{name: getattr(args, name) for name in CONFIG_FLAGS})
    listener = _CliListener()
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
