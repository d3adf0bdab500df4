"""The ``promptdsl`` command: a thin front end over the library API.

Exit codes: 0 success; 1 a run or test failed; 2 bad usage or bad input.
User mistakes print one line on stderr, never a traceback (``--debug`` shows it).
Argparse, printing and exit codes live here and nowhere else; each command group is
one module with a ``register(sub, common)`` function, listed in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import PromptDSLError
from . import backends, chat, doctor, evaluate, export, run, specs, tools, tune
from .common import Commands, Parser

Handler = Callable[[argparse.Namespace], int]
Register = Callable[[Commands, argparse.ArgumentParser], None]

#: Command groups in ``--help`` order. A new command is a new module added here.
COMMANDS: tuple[Register, ...] = (
    run.register,
    evaluate.register,
    export.register,
    tune.register,
    specs.register,
    backends.register,
    tools.register,
    chat.register,
    doctor.register,
)


def build_parser() -> argparse.ArgumentParser:
    # --debug works before or after the command: the command's copy only sets it when given,
    # so it never resets `promptdsl --debug run ...` back to False.
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = Parser(prog="promptdsl", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"promptdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for register in COMMANDS:
        register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        code = int(handler(args))
        sys.stdout.flush()  # a full stdout (/dev/full) fails here, not at exit
        return code
    except PromptDSLError as exc:
        if args.debug:
            raise
        print(f"promptdsl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("promptdsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _drop_stdout()
        return 0
    except OSError as exc:  # writing the output failed (a full disk, /dev/full)
        if args.debug:
            raise
        _drop_stdout()
        print(f"promptdsl: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by something without a descriptor
        pass


if __name__ == "__main__":
    sys.exit(main())
