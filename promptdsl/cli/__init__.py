"""The ``promptdsl`` command: a thin front end over the library API.

Exit codes: 0 success; 1 a run or test failed; 2 bad usage or bad input.
User mistakes print one line on stderr, never a traceback (``--debug`` shows it).
Argparse, printing and exit codes live here and nowhere else; each command group is
one module with a ``register(sub, common)`` function, listed in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO, cast

from .. import __version__
from ..errors import PromptDSLError
from .common import Parser, unknown_flags_hint
from .output import ResultsOnly

Handler = Callable[[argparse.Namespace], int]

#: Command groups (modules of this package) in ``--help`` order, with the commands each one
#: registers. A new command is a new module added here.
COMMANDS: dict[str, tuple[str, ...]] = {
    "run": ("run",),
    "evaluate": ("eval",),
    "export": ("export",),
    "tune": ("tune",),
    "specs": ("validate", "compile", "test", "schema"),
    "backends": ("backends",),
    "tools": ("tools",),
    "chat": ("chat",),
    "doctor": ("doctor",),
}


def _groups(argv: Sequence[str] | None) -> list[str]:
    """The command groups to register: only the named command's when argv names a known one.

    Each module imports what its command needs, so ``promptdsl run`` does not import export,
    tune or evaluate. Anything else (no command, ``--help``, a misspelt name) registers all,
    so help and "invalid choice" messages list every command.
    """
    if argv is None:
        return list(COMMANDS)
    first = next((a for a in argv if not a.startswith("-")), None)
    named = [group for group, names in COMMANDS.items() if first in names]
    return named or list(COMMANDS)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv`` (every command when ``argv`` is None or names none)."""
    # --debug works before or after the command: the command's copy only sets it when given,
    # so it never resets `promptdsl --debug run ...` back to False.
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = Parser(prog="promptdsl", description=(__doc__ or "").splitlines()[0].replace("``", ""))
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"promptdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for group in _groups(argv):
        importlib.import_module(f"{__name__}.{group}").register(sub, common)
    return parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args, extras = parser.parse_known_args(argv)
    if extras:  # as parse_args would, naming the command, with a did-you-mean among its own flags
        name = getattr(args, "command", None) or ""
        command = _commands(parser).get(name)
        if command is None:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        before = name in argv and extras[0] in argv and list(argv).index(extras[0]) < list(argv).index(name)
        hint = " (a command's flags go after it)" if before else unknown_flags_hint(command, extras)
        command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    handler: Handler = args.handler
    _blocking_stdout()
    real = sys.stdout
    if real is not None:  # None when started with stdout closed (`>&-`, some daemons)
        sys.stdout = cast(TextIO, ResultsOnly(real))  # a plugin's prints go to stderr, not into the results
    try:
        code = int(handler(args))
        if sys.stdout is not None:
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
    except OSError as exc:
        if args.debug:
            raise
        if exc.errno not in _WRITE_ERRNOS:  # not the output's fault: say what it was, as it is
            print(f"promptdsl: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        _drop_stdout()  # writing the output failed (a full disk, /dev/full)
        print(f"promptdsl: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        if real is not None and sys.stdout is not real:  # as it was (in-process callers, the tests)
            sys.stdout = real


#: The errors of writing to a full or broken output; any other OSError reaching the CLI (from a
#: plugin, say) is reported as itself, not blamed on the output.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF, errno.EROFS})


def _blocking_stdout() -> None:
    """Results go to stdout; one left non-blocking by whoever started us (a Node parent, say)
    would make writes fail half-way once the reader lags. Waiting for the reader loses nothing."""
    try:
        fd = sys.stdout.fileno()
        if not os.get_blocking(fd):
            os.set_blocking(fd, True)
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's StringIO) or closed: nothing to do
        pass


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
