"""``python -m promptdsl.testing BACKEND [-m MODEL] [-o KEY=VALUE]...``: print a conformance report.

Exit code 0 when every applicable check passes, 1 when one fails, 2 when the
backend cannot be found or started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..backend import split_options
from ..errors import PromptDSLError
from ..inputs import parse_options
from ..registry import get_backend
from . import CHECKS, DEFAULT_TIMEOUT, check_backend


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promptdsl.testing", description=__doc__.splitlines()[0])
    parser.add_argument("backend", help="an installed backend plugin (see 'promptdsl backends')")
    parser.add_argument("--model", "-m")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--check", action="append", choices=list(CHECKS), help="run only these checks")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"time limit per check (default {DEFAULT_TIMEOUT:g}; raise it on a busy machine)")
    args = parser.parse_args(argv)
    try:
        _, options = split_options(parse_options(args.option))
        backend = get_backend(args.backend, args.model, options)
    except PromptDSLError as exc:
        print(f"promptdsl.testing: error: {exc}", file=sys.stderr)
        return exc.exit_code
    report = check_backend(backend, checks=args.check, timeout=args.timeout)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
