"""``promptdsl export``: labelled rows -> instruction data rendered by the spec's own compiler."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..datafile import DataFile
from ..export import FORMATS, export
from ..loader import load_spec
from .common import Commands, say


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="write instruction data (train/val JSONL + meta.json) from a spec and labelled rows",
    )
    p.add_argument("spec", type=Path)
    p.add_argument("--data", type=Path, required=True, help="labelled dataset: .jsonl or .csv")
    p.add_argument("--label", required=True, metavar="FIELD", help="the field holding the expected output")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="directory for train.jsonl, val.jsonl, meta.json (default: ./NAME-export, NAME the spec's name)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="record layout (default: openai for a chat spec, prompt-completion for a completion spec)",
    )
    p.add_argument("--zero-shot", action="store_true", help="render the prompts without the spec's examples")
    p.add_argument(
        "--split",
        type=float,
        metavar="FRACTION",
        help="put this fraction of the rows in train.jsonl, the rest in val.jsonl",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split's shuffle (default 0)")
    p.add_argument("--eval", type=Path, metavar="F", help="evaluation data to check the rows against for contamination")
    p.add_argument(
        "--decontaminate",
        action="store_true",
        help="drop rows that match or share an 8-gram with --eval or the spec's tests",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files in --out")
    p.add_argument("--json", action="store_true", help="print meta.json's content instead of a summary")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    data = DataFile(args.data)
    eval_data = DataFile(args.eval) if args.eval is not None else None
    result = export(
        spec,
        data,
        args.label,
        args.out if args.out is not None else Path(f"{spec.name}-export"),
        fmt=args.format,
        split=args.split,
        seed=args.seed,
        eval_data=eval_data,
        decontaminate=args.decontaminate,
        zero_shot_prompts=args.zero_shot,
        force=args.force,
    )
    if args.json:
        print(json.dumps(result.meta, ensure_ascii=False, indent=2))
        return 0
    counts = result.meta["counts"]
    for name, path in result.files.items():
        n = f" ({counts[name]} rows)" if name in counts else ""
        print(f"wrote {path}{n}")
    labels = ", ".join(f"{k} {v}" for k, v in result.meta["labels"].items())
    print(f"labels: {labels}")
    if result.contamination is not None:
        print(result.contamination.format())
    if args.decontaminate:
        say(f"--decontaminate dropped {result.dropped} of {counts['rows']} rows")
    for path in result.foreign:
        say(f"promptdsl: note: {path} was not written by this export (nor by an earlier one) and is left as it is; "
            "meta.json lists the files that are")
    return 0
