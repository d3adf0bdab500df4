"""``promptdsl run``: one input, or every row of a dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..backend import CUT_WORDS
from ..errors import InputError
from ..inputs import SURROGATE
from ..loader import load_spec
from ..result import Result
from .common import Commands, add_backend_flags, add_input_flags, inputs_from_args, print_value, runner_from_args
from .dataset import add_dataset_flags, dataset_run, execute_stoppable, report
from .tools import add_tool_flags

#: Tool loops that ended without the tool's help: the answer is the model's own guess, so the
#: command says so on stderr and exits 1 (a script would otherwise take it as the tool's answer).
_WITHOUT_TOOL = {
    "denied": "a tool call was denied",
    "error": "the tool failed twice",
}


#: What ``run`` says when a limit stopped the answer (it parsed, so it may just lack its end).
_CUT = {
    "max_tokens": f"promptdsl: {CUT_WORDS['max_tokens']}, so it may be incomplete; raise it with -o max_tokens=N\n",
    "context": f"promptdsl: {CUT_WORDS['context']}, so it may be incomplete; a larger -o n_ctx=N gives it room\n",
}


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run a spec on one input or a dataset")
    p.add_argument("spec", type=Path)
    add_input_flags(p)
    add_backend_flags(p)
    p.add_argument("--data", type=Path, help="dataset: .jsonl or .csv, one input object per row")
    p.add_argument("--out", type=Path, help="write one JSON result per line here (dataset runs)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    add_tool_flags(p)
    add_dataset_flags(p)
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if sys.stdout is None and (args.data is None or args.out is None):  # started with `>&-`
        raise InputError("standard output is closed, so the results would be lost; give --data with --out FILE, "
                         "or run with an open standard output")
    _check_flags(args)
    if args.data is not None:
        run = dataset_run(spec, args)
        summary, received = execute_stoppable(run, args)
        return received.exit_code() if summary is None else report(run, summary, received)
    values = inputs_from_args(spec, args)
    response = runner_from_args(spec, args).response(values)
    if args.stream and not args.json:
        try:
            for chunk in response:  # a lone surrogate cannot be written as UTF-8; the result refuses it
                sys.stdout.write(SURROGATE.sub("\ufffd", chunk))
                sys.stdout.flush()
        finally:  # the text so far ends its line, so an error line starts on its own
            sys.stdout.write("\n")
            sys.stdout.flush()
        return _warnings(response.result())
    result = response.result()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print_value(result.value)
    return _warnings(result)


def _dataset_only() -> dict[str, Any]:
    """Flags that only a dataset run reads, with the value that means "not given": --out and the
    dataset flags, their defaults read from the one place that declares them. ``--no-cache`` stays
    allowed: one input is never cached, so it holds as asked (and scripts pass it everywhere)."""
    probe = argparse.ArgumentParser(add_help=False)
    add_dataset_flags(probe)
    return {"out": None, **{a.dest: a.default for a in probe._actions if a.dest != "no_cache"}}


def _check_flags(args: argparse.Namespace) -> None:
    """A flag the run would not read is a mistake to say, not to drop: the user meant something by it."""
    if args.data is None:
        given = [name for name, unset in _dataset_only().items() if getattr(args, name) != unset]
        if given:
            flag = "--" + given[0].replace("_", "-")
            hint = "; for one input use --json" if given[0] == "out" else ""
            raise InputError(f"{flag} goes with --data (a dataset run){hint}")
    elif args.stream:
        raise InputError("--stream shows one answer as it is written; a dataset run writes a JSON line per row "
                         "(--progress shows how far it is)")
    if args.stream and args.json:
        raise InputError("--stream prints the text as it comes and --json the whole result at the end; give one")


def _warnings(result: Result) -> int:
    """Say on stderr what the printed answer lacks; the exit code."""
    if result.truncated:  # still an answer (it parsed), so exit 0; but maybe not the whole of it
        sys.stdout.flush()
        sys.stderr.write(_CUT[result.truncated])
    return _tool_warning(result.stop_reason)


def _tool_warning(stop_reason: str | None) -> int:
    """Exit code 1, with one line on stderr, when the answer came without the tool's result."""
    why = _WITHOUT_TOOL.get(stop_reason or "")
    if why is None:
        return 0
    sys.stdout.flush()
    sys.stderr.write(f"promptdsl: {why}, so the model answered without its result (stop_reason: {stop_reason})\n")
    return 1
