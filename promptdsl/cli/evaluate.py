"""``promptdsl eval``: run a spec over labelled data and print the metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError, did_you_mean, escape
from ..loader import load_spec
from .common import Commands, add_backend_flags, add_input_flags, say
from .dataset import add_dataset_flags, dataset_run, execute_stoppable, report
from .tools import add_tool_flags


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("eval", parents=[common], help="score a spec on labelled data: accuracy, macro-F1, confusion")
    p.add_argument("spec", type=Path)
    p.add_argument("--data", type=Path, required=True, help="labelled dataset: .jsonl or .csv")
    p.add_argument("--label", required=True, metavar="FIELD", help="the field holding the expected output")
    p.add_argument("--out", type=Path, help="write each row's result (with its label and correctness) here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_input_flags(p)
    add_backend_flags(p)
    add_dataset_flags(p)
    add_tool_flags(p)
    p.set_defaults(handler=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """Run, score, print the metrics; without --out only the metrics are printed."""
    from ..datafile import parse_fields
    from ..evaluate import Evaluation

    spec = load_spec(args.spec)
    evaluation = Evaluation(spec, args.label, parse_fields(args.field, spec))
    check_label_column(args.data, args.label)
    run = dataset_run(spec, args, on_resumed_line=evaluation.on_resumed_line)
    summary, received = execute_stoppable(run, args, evaluation.on_outcome, print_lines=False)
    if summary is None:
        return received.exit_code()
    code = report(run, summary, received)
    partial = summary.interrupted or summary.stopped_by is not None or summary.server_down is not None
    if args.json:
        figures = {**evaluation.metrics.to_dict(), "unreadable": evaluation.unreadable, "complete": not partial}
        print(json.dumps(figures, ensure_ascii=False, indent=2))
    else:
        if partial:
            print("partial: the run did not finish; these metrics cover only the rows done so far")
        print(evaluation.metrics.format())
        if evaluation.unreadable:
            print(f"rows that could not be read (left out): {evaluation.unreadable}")
    # Failed rows are part of the score (counted wrong); a stop, an interrupt, or no row
    # answered at all (the metrics would then describe nothing) is a failure.
    if partial:
        return code
    if evaluation.unreadable:
        n = evaluation.unreadable
        say(f"promptdsl: error: {n} row{'s' if n != 1 else ''} could not be read, so the metrics leave "
            f"{'it' if n == 1 else 'them'} out; fix the line{'s' if n != 1 else ''} named above")
        return 1
    if (why := evaluation.bad_labels()) is not None:
        say(f"promptdsl: error: {escape(why)}")
        return 1
    if (why := evaluation.no_labels()) is not None:
        say(f"promptdsl: error: {escape(why)}")  # a did-you-mean names a field of the data file
        return 1
    if summary.errors and not summary.ok and not summary.resumed:
        say(f"promptdsl: error: none of the {summary.errors} rows succeeded, so these metrics mean nothing")
        return 1
    return 0


#: JSONL rows read before the model loads to find the --label field in (a few milliseconds).
LABEL_SCAN_ROWS = 1000


def check_label_column(path: Path, label: str) -> None:
    """A misspelt --label fails before any model loads: a CSV's header names its fields, and in a
    JSONL file some of the first :data:`LABEL_SCAN_ROWS` rows carry the label (rows without one are
    scored as unlabelled, but a field no early row has is a typo, not a file labelled further down)."""
    from ..datafile import DataFile
    from ..evaluate import check_label_header

    if str(path) == "-":
        return
    data = DataFile(path)
    check_label_header(data, label)
    if data.format == "csv":
        return
    fields: set[str] = set()
    seen = 0
    for fields, count, _ in data.fields_seen(LABEL_SCAN_ROWS):
        seen = count
        if label in fields:
            return
    if seen:
        shown = ", ".join(sorted(fields)[:20])
        raise InputError(f"--label '{label}': none of the first {seen} rows has this field"
                         f"{did_you_mean(label, fields)}; their fields: {shown}", source=data.name)
