"""Dataset runs from the command line: flags, Ctrl+C, the progress bar and the closing line.

Shared by ``run --data`` and ``eval``; the work itself is :class:`promptdsl.dataset.DatasetRun`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from ..dataset import DEFAULT_REMOTE_CONCURRENCY, ON_ERROR, SERVER_DOWN_ROWS
from ..errors import InputError
from ..inputs import collect_inputs
from .common import runner_from_args, say
from .signals import Received, interrupt_on_term

if TYPE_CHECKING:
    from ..dataset import DatasetRun, Outcome, Summary
    from ..spec import Spec


def add_dataset_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``run --data`` and ``eval``."""
    g = p.add_argument_group("dataset runs")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: skip the rows already in --out")
    g.add_argument("--on-error", choices=ON_ERROR, default="skip",
                   help="a bad or failed row: record an error line and go on (skip, default) or stop")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the result cache")
    g.add_argument("--concurrency", type=_concurrency, metavar="N",
                   help="rows in flight at once (default: 1 for local models, "
                        f"{DEFAULT_REMOTE_CONCURRENCY} for remote backends; at most {MAX_CONCURRENCY})")
    g.add_argument("--limit", type=_positive, metavar="N", help="only the first N rows")
    g.add_argument("--field", action="append", default=[], metavar="INPUT=FIELD",
                   help="read input INPUT from the data's field FIELD (e.g. --field tweet=text); repeatable")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr (default: when stderr is a terminal)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


#: A thread per row in flight: 100,000 stalled for minutes, then failed with "can't start new thread".
MAX_CONCURRENCY = 256


def _concurrency(text: str) -> int:
    value = _positive(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"at most {MAX_CONCURRENCY} rows in flight, got {value:,}")
    return value


def dataset_run(
    spec: Spec, args: argparse.Namespace, on_resumed_line: Callable[[dict[str, Any]], None] | None = None
) -> DatasetRun:
    """Check the data and output first (bad usage costs no model load), then build the runner."""
    from ..datafile import DataFile, parse_fields
    from ..dataset import DatasetRun

    if str(args.data) == "-" and "-" in args.input:
        raise InputError("--data - and --input - both want standard input; give one of them a file")
    if args.out is not None and str(args.out) == "-":  # it made a file named '-'
        raise InputError("--out - is no file name; give a file (without --out, `run` prints the results on "
                         "standard output)")
    if args.resume and args.out is None:
        raise InputError("--resume needs --out (the results file to continue)")
    data = DataFile(args.data)
    fields = parse_fields(args.field, spec)
    constants = collect_inputs(spec, args.input, sys.stdin) if args.input else {}
    run = DatasetRun(
        spec,
        data,
        args.out,
        runner=lambda: runner_from_args(spec, args),
        resume=args.resume,
        on_error=args.on_error,
        cache=not args.no_cache,
        concurrency=args.concurrency,
        limit=args.limit,
        constants=constants,
        on_resumed_line=on_resumed_line,
        fields=fields,
        on_cache_problem=lambda message: say(f"promptdsl: warning: {message}"),
    )
    for notice in run.notices:
        say(f"promptdsl: {notice}")
    return run


@contextmanager
def stop_on_sigint(
    stop: threading.Event,
    what: str = "after the row in flight",
    at_once: Callable[[], bool] = lambda: False,
) -> Iterator[None]:
    """First Ctrl+C: set ``stop`` and say the work stops ``what`` (unless ``at_once()``: then stop at
    once, as with a second Ctrl+C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    notice = f"\npromptdsl: stopping {what} (Ctrl+C again to stop at once)\n".encode()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set() or at_once():
            stop.set()
            raise KeyboardInterrupt
        stop.set()
        # A raw write: the handler may interrupt a write to sys.stderr (re-entering it would fail).
        with suppress(OSError):
            os.write(2, notice)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def execute(
    run: DatasetRun,
    args: argparse.Namespace,
    on_outcome: Callable[[Outcome, dict[str, Any]], None] | None = None,
    *,
    print_lines: bool = True,
) -> Summary:
    """Run every row with Ctrl+C handled and a progress bar; lines go to --out, else stdout."""
    from .progress import RowProgress  # rich: only for dataset runs

    to_stdout = run.out is None and print_lines
    wanted = args.progress
    if wanted is None:
        wanted = sys.stderr.isatty() and not (to_stdout and sys.stdout.isatty())
    stop = threading.Event()
    seen = len(run.notices)
    with RowProgress(run.total() if wanted else None, initial=run.resumed, enabled=wanted) as progress, \
            stop_on_sigint(stop):
        summary = run.execute(sys.stdout if to_stdout else None, on_outcome=on_outcome, progress=progress, stop=stop)
    for notice in run.notices[seen:]:
        say(f"promptdsl: {notice}")
    return summary


def execute_stoppable(
    run: DatasetRun,
    args: argparse.Namespace,
    on_outcome: Callable[[Outcome, dict[str, Any]], None] | None = None,
    *,
    print_lines: bool = True,
) -> tuple[Summary | None, Received]:
    """:func:`execute` with SIGTERM and SIGHUP (``kill``, ``timeout``, a supervisor, the terminal
    closed) handled as Ctrl+C; the summary is None when one stopped the run at once (a second
    signal, or one outside the rows), after its line is said."""
    with interrupt_on_term() as received:
        try:
            return execute(run, args, on_outcome, print_lines=print_lines), received
        except KeyboardInterrupt:
            if received.signum is None:
                raise
            say(f"promptdsl: interrupted by {received.name}")
            return None, received


def report(run: DatasetRun, summary: Summary, received: Received | None = None) -> int:
    """Print the end-of-run lines on stderr and return the exit code (``received``: a SIGTERM or
    SIGHUP that stopped the run as Ctrl+C would, named in the line and in the exit code)."""
    from .progress import format_duration

    where = f"; results in {run.out}" if run.out is not None else ""
    if summary.stopped_by is not None:
        failed = summary.stopped_by
        say(f"promptdsl: error: {run.data.name}: {failed.error}")
        more = " (fix it, then run the same command with --resume)" if run.out is not None else ""
        say(f"promptdsl: stopped at row {failed.row.index} (--on-error stop); {_rows(summary.rows)} done "
            f"before it{where}{more}")
        return failed.exit_code or 1
    if summary.server_down is not None:
        failed = summary.server_down
        say(f"promptdsl: error: {run.data.name}: {failed.error}")
        more = ("; once it answers, run the same command with --resume" if run.out is not None
                else "; to be able to resume, write to a file with --out")
        say(f"promptdsl: stopped at row {failed.row.index}: {SERVER_DOWN_ROWS} rows in a row could not reach "
            f"the server, so they were not written; {_rows(summary.rows)} done before{where}{more}")
        return failed.exit_code or 1
    total = summary.rows + summary.resumed
    rate = summary.rows / summary.seconds if summary.seconds > 0 else 0.0
    parts = [f"{summary.ok} ok"]
    if summary.cached:
        parts.append(f"{summary.cached} from the cache")
    if summary.truncated:
        parts.append(f"{summary.truncated} cut off by max_tokens or the context (\"truncated\" in the results)")
    if summary.errors:
        parts.append(f"{summary.errors} failed (error lines)")
    if summary.resumed:
        parts.append(f"{summary.resumed} done before")
    if summary.interrupted:
        if run.out is not None:
            hint = "; to continue, run the same command with --resume"
        else:
            hint = "; to be able to resume, write to a file with --out"
        by = f" by {received.name}" if received is not None and received.name else ""
        say(f"promptdsl: interrupted{by} after {_rows(total)} ({', '.join(parts)}){where}{hint}")
        return received.exit_code(130) if received is not None else 130
    speed = f" in {format_duration(summary.seconds)} ({rate:.1f} rows/s)" if summary.rows else ""  # none run now
    say(f"promptdsl: {_rows(total)}{speed}: {', '.join(parts)}{where}")
    report_reasons(summary, source=run.data.name)
    return 1 if summary.errors else 0


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def report_reasons(summary: Summary, shown: int = 3, source: str | None = None) -> None:
    """Why rows failed, grouped, most common first: the reasons must not hide inside --out."""
    if not summary.reasons:
        return
    if len(summary.reasons) == shown + 1:  # "1 more failed for 1 other reason" would hide the one
        shown += 1
    for reason, count in summary.top_reasons(shown):
        line = summary.first_line.get(reason)
        where = "" if source is None or line is None else f" ({'first ' if count > 1 else ''}at {source}:{line})"
        say(f"promptdsl: {count} row{'s' if count != 1 else ''} failed: {reason}{where}")
    rest = sum(summary.reasons.values()) - sum(n for _, n in summary.top_reasons(shown))
    if rest:
        say(f"promptdsl: {rest} more {'row' if rest == 1 else 'rows'} failed for {len(summary.reasons) - shown} "
            "other reasons")
