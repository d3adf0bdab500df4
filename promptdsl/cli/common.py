"""What every command shares: the parser class, common flags, one way to build a Runner."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn, Protocol

from ..errors import InputError, did_you_mean
from ..inputs import collect_inputs, missing_inputs, parse_options, validate_inputs
from ..runner import Runner
from ..spec import Spec


class Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line, like every other bad input, and start as every other error
    does (``promptdsl: error:``); a command's own parser names the command after it."""

    def error(self, message: str) -> NoReturn:
        tool, _, command = self.prog.partition(" ")
        self.exit(2, f"{tool}: error: {command + ': ' if command else ''}{message}{_choice_hint(message)}\n")


def _choice_hint(message: str) -> str:
    """argparse (before Python 3.14) lists the choices of a misspelt command or value, but names none."""
    import re

    found = re.match(r"argument [^:]+: invalid choice: '(.*)' \(choose from (.*)\)$", message)
    if found is None:
        return ""
    return did_you_mean(found.group(1), re.findall(r"'([^']*)'", found.group(2)))


def unknown_flags_hint(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """A did-you-mean for the first unrecognized flag, among the flags of the command it was given to."""
    flag = next((e.split("=", 1)[0] for e in extras if e.startswith("--")), None)
    if flag is None:
        return ""
    return did_you_mean(flag, [o for a in parser._actions for o in a.option_strings if o.startswith("--")])


class Commands(Protocol):
    """The ``add_parser`` side of ``ArgumentParser.add_subparsers()``."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", "-b", help="backend plugin to use (see 'promptdsl backends')")
    p.add_argument("--model", "-m", help="model: alias, .gguf path or remote id (backend-specific)")
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="override a model option, e.g. -o temperature=0.7 -o base_url=http://127.0.0.1:8000/v1",
    )


def add_input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", "-i", action="append", default=[], metavar="NAME=VALUE",
        help="an input value; NAME=@file reads a file, NAME=@@text is text starting with '@'; "
             "'-' reads a JSON object from stdin",
    )


def inputs_from_args(spec: Spec, args: argparse.Namespace) -> dict[str, Any]:
    """The one input's values from ``-i`` flags (and ``-i -``), checked; a missing input's error says
    which flag gives it, naming every input that is missing, not only the first."""
    values = collect_inputs(spec, args.input, sys.stdin)
    try:
        return validate_inputs(spec, values)
    except InputError as exc:
        missing = missing_inputs(spec, values)
        if exc.name not in missing:
            raise
        flags = " ".join(f"-i {n}=VALUE" for n in missing)
        what = f"input '{missing[0]}'" if len(missing) == 1 else "inputs " + ", ".join(f"'{n}'" for n in missing)
        stdin = " or in the JSON on standard input" if "-" in args.input else ""
        raise InputError(f"missing {what} (no default); give {'it' if len(missing) == 1 else 'them'} "
                         f"with {flags}{stdin}", name=exc.name) from None


def runner_from_args(spec: Spec, args: argparse.Namespace) -> Runner:
    """The one way a command turns --backend/--model/-o into a Runner."""
    from .tools import tool_settings  # -T, --yes, and tool calls shown on stderr

    # Without tools (none in the spec, no -T) the settings would go unused: building them loads the tool machinery.
    settings = tool_settings(args) if spec.tools or getattr(args, "tool", None) else None
    return Runner(spec, backend_name=args.backend, model=args.model, options=parse_options(args.option),
                  tool_settings=settings)


def print_value(value: Any) -> None:
    """A text answer as is; anything else as indented JSON."""
    if isinstance(value, str):
        print(value)
    else:
        print(json.dumps(value, ensure_ascii=False, indent=2))


def say(text: str) -> None:
    """A status line on stderr (stdout stays for results)."""
    print(text, file=sys.stderr, flush=True)
