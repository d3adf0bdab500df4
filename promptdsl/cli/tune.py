"""``promptdsl tune``: LoRA-tune the spec's GGUF model on labelled rows (the optional [tune] extra)."""

from __future__ import annotations

import argparse
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from ..loader import load_spec
from ..tune.config import DEFAULT_STEPS, TuneConfig, check_threads
from .common import Commands, say
from .dataset import stop_on_sigint
from .signals import interrupt_on_term

if TYPE_CHECKING:
    from ..tune import TuneReport
    from .tune_progress import CliListener


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
        help=f"weight of the answer tokens' mean loss in L = L_LM + alpha * L_align (default {d.alpha:g})",
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
        "--max-tokens", type=int, default=d.max_tokens, metavar="N",
        help=f"refuse a training row longer than N tokens, prompt and answer (default {d.max_tokens})",
    )
    p.add_argument(
        "--out-type", choices=("q8_0", "f16"), default=d.out_type,
        help=f"type of the changed tensors (default {d.out_type})",
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint Ctrl+C saved next to --out")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(handler=cmd_tune)


#: The flags that are TuneConfig fields of the same name.
CONFIG_FLAGS = ("alpha", "steps", "epochs", "lr", "rank", "batch", "seed", "max_tokens", "out_type")


def cmd_tune(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every other command would pay for rich and the tune package.
    from ..datafile import DataFile
    from ..tune import check_out_inputs, tune
    from ..tune.errors import TuneStopped
    from .tune_progress import CliListener

    # Every setting is checked first: a bad one is one line and exit 2, before anything loads.
    config = TuneConfig(**{name: getattr(args, name) for name in CONFIG_FLAGS})
    check_threads(args.threads)
    spec = load_spec(args.spec)
    data = DataFile(args.data)
    eval_data = DataFile(args.eval) if args.eval is not None else None
    check_out_inputs(args.out, spec, data, eval_data, args.model)  # before "exists": --force never clobbers an input
    if args.out.exists() and not args.force and not args.resume:
        say(f"promptdsl: error: {args.out} exists (use --force to overwrite)")
        return 2
    listener = CliListener()
    stop = threading.Event()
    # SIGTERM (kill, timeout, a supervisor) and SIGHUP (the terminal closed) stop as Ctrl+C does: at
    # the end of the step with a checkpoint, a second one at once; the exit code says which it was.
    with interrupt_on_term() as received:
        try:
            with stop_on_ctrl_c(stop, listener):
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
        except TuneStopped as exc:  # Ctrl+C: not an error, but what was kept (a checkpoint, or nothing)
            listener.close()
            by = f" by {received.name}" if received.name else ""
            say(f"promptdsl: interrupted{by}: {exc}")
            return received.exit_code(exc.exit_code)
        except KeyboardInterrupt:  # a second signal: stopped at once
            if received.name is None:
                raise
            listener.close()
            say(f"promptdsl: interrupted by {received.name}")
            return received.exit_code()
        finally:
            listener.close()
    code = print_report(report)
    return received.exit_code(code) if code == 130 else code


def print_report(report: TuneReport) -> int:
    """The summary and metrics on stdout; failed evaluation rows and an interruption on stderr.

    Like ``promptdsl eval``: failed rows count as wrong and their reasons are shown; an evaluation
    where no row succeeded is exit 1 (its metrics describe nothing); an interrupted one is 130."""
    from ..evaluate import ChoiceMetrics
    from ..tune import summary_lines

    for line in summary_lines(report):
        print(line)
    for which in ("before", "after"):
        m = getattr(report, which)
        if isinstance(m, ChoiceMetrics):
            print(f"\n{which} ({'base' if which == 'before' else 'tuned'} model):\n{m.format()}")
    code = 0
    for which, summary in report.evaluations.items():
        for reason, count in summary.top_reasons(3):
            say(f"promptdsl: {which}: {count} evaluation row{'s' if count != 1 else ''} failed: {reason}")
        if summary.errors and not summary.ok:
            say(f"promptdsl: error: {which}: none of the {summary.errors} evaluation rows succeeded, "
                "so these metrics mean nothing")
            code = 1
    if report.interrupted is not None:
        say(f"promptdsl: interrupted: {report.interrupted}; {report.out} is written")
        return 130
    return code


def stop_on_ctrl_c(stop: threading.Event, listener: CliListener) -> AbstractContextManager[None]:
    """Ctrl+C during training (and writing the model): finish the step, save a checkpoint, stop;
    a second one stops at once. Anywhere else (set-up, evaluation) nothing is lost: stop at once."""
    return stop_on_sigint(stop, "at the end of the current step", lambda: not listener.in_training)
