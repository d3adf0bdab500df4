"""``promptdsl doctor``: what a bug report needs; exit 1 with one line per problem found."""

from __future__ import annotations

import argparse
import json

from .common import Commands


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", parents=[common],
                       help="print versions, CPU facts, llama.cpp's build; try a short decode in a child process")
    p.add_argument("--no-decode", dest="decode", action="store_false", help="skip the decode (loads no model)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import diagnose  # platform, subprocess: only for this command

    report = diagnose(decode=args.decode)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1
