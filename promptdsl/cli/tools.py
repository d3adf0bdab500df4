"""``promptdsl tools``, the ``-T``/``--yes`` flags of ``run``, and tool calls on a terminal.

Tool calls and results go to stderr (stdout stays the answer). ``ask`` tools
ask on a terminal; where none can ask, ``--yes`` approves and its absence denies.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import traceback
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import InputError, clip, escape, mask_secrets
from ..inputs import json_or_text
from .common import Commands

if TYPE_CHECKING:  # the tool machinery (and jsonschema) loads only when a run has tools
    from ..tools import Step, Tool, ToolCall, ToolUse
    from ..tools.loop import Approver, ToolSettings

#: ``-T mcp:COMMAND`` (the same prefix as :data:`promptdsl.tools.check.MCP_PREFIX`, without importing it).
MCP_PREFIX = "mcp:"

PREVIEW = 200


def add_tool_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tool", "-T", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
        help="add a tool for this run, e.g. -T calculator, -T read_file:root=./notes, -T 'mcp:python server.py'",
    )
    p.add_argument("--yes", "-y", action="store_true",
                   help="approve every tool call whose approval is 'ask' (and MCP servers a spec starts)")


def parse_tool_flag(text: str) -> ToolUse:
    """``NAME``, ``NAME:KEY=VALUE,KEY=VALUE`` or ``mcp:COMMAND ARGS``."""
    from ..tools.base import ToolUse

    if text.startswith(MCP_PREFIX):
        return ToolUse(text)
    name, _, rest = text.partition(":")
    if not name:
        raise InputError(f"-T expects NAME[:KEY=VALUE,...], got {text!r}")
    options: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise InputError(f"-T {name}: options are KEY=VALUE separated by commas, got {pair!r}")
        options[key] = json_or_text(raw)
    return ToolUse(name, options)


def _safe(text: str) -> str:
    """Text from a tool, a server or a model as the terminal may show it: secrets masked, and
    control, escape and bidi characters written as escapes (a file read by ``read_file`` must not
    retitle the terminal or print a fake "all tests passed")."""
    return escape(mask_secrets(text))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _safe(clip(text.replace("\n", " "), PREVIEW))


def _every_key(arguments: Any) -> str:
    """The arguments of a call to approve: every key shown, each value clipped on its own, so a long
    first value cannot push ``"action": "delete"`` out of sight."""
    if not isinstance(arguments, dict):
        return _short(arguments)
    parts = [f"{_short(json.dumps(str(k), ensure_ascii=False))}: {_short(json.dumps(v, ensure_ascii=False))}"
             for k, v in arguments.items()]
    return "{" + ", ".join(parts) + "}"


def show_step(kind: str, step: Step, out: TextIO | None = None, *, debug: bool = False) -> None:
    """``tool: calculator {"expression": "1+2"}`` then ``  -> 3`` (or the error, or denied) on stderr;
    with ``debug``, the traceback of what a tool raised unexpectedly (the model gets one line)."""
    out = out or sys.stderr
    if debug and kind == "result" and step.exception is not None:
        traceback.print_exception(step.exception, file=out)
    if kind == "call":
        out.write(f"tool: {_safe(step.tool)} {_short(step.arguments)}\n")
    elif step.approved is False:
        out.write(f"  denied: {_safe(step.error)}\n" if step.error and "denied" not in step.error else "  denied\n")
    elif step.error is not None:
        if step.approved is None:  # never got as far as a call
            out.write(f"tool: {_safe(step.tool)} {_short(step.arguments)}\n")
        out.write(f"  error: {_short(step.error)}\n")
    else:
        out.write(f"  -> {_short(step.result or '')}  ({step.seconds:.2f}s)\n")
    out.flush()


def terminal_approver(yes: bool, stdin: TextIO | None = None, out: TextIO | None = None) -> Approver:
    """``--yes`` approves; else ask on a terminal; else deny."""

    told: set[str] = set()

    def approve(tool: Tool, call: ToolCall) -> bool:
        if yes:
            return True
        inp, err = stdin or sys.stdin, out or sys.stderr
        if not (inp.isatty() and err.isatty()):
            if tool.name not in told:  # once a tool: a dataset run would say it on every row
                told.add(tool.name)
                err.write(f"promptdsl: no terminal to ask whether to run {_safe(tool.name)}, so it is denied; "
                          "--yes approves calls whose approval is 'ask'\n")
                err.flush()
            return False
        command = str(call.arguments.get("command"))
        what = f"start {_safe(repr(command))}" if call.tool == "mcp-server" else \
            f"run {_safe(call.tool)} {_every_key(call.arguments)}"
        err.write(f"promptdsl: {what}? [y/N] ")
        err.flush()
        return inp.readline().strip().lower() in ("y", "yes")

    return approve


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tools", parents=[common], help="list installed tool plugins and their argument schemas")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_tools)


def tool_settings(args: argparse.Namespace) -> ToolSettings:
    from ..tools.loop import ToolSettings
    from ..tools.registry import find_tool

    uses = [parse_tool_flag(t) for t in getattr(args, "tool", [])]
    for use in uses:
        if not use.name.startswith(MCP_PREFIX):
            find_tool(use.name)  # a typo fails here, before any backend starts
    return ToolSettings(
        extra=uses,
        approver=terminal_approver(bool(getattr(args, "yes", False))),
        on_event=functools.partial(show_step, debug=bool(getattr(args, "debug", False))),
    )


def cmd_tools(args: argparse.Namespace) -> int:
    from ..tools.registry import list_tools

    infos = list_tools()
    if args.json:
        print(json.dumps([
            {"name": i.name, "version": i.version, "distribution": i.distribution, "description": i.description,
             "read_only": i.read_only, "parameters": i.parameters, "options": i.options, "error": i.error}
            for i in infos
        ], indent=2, ensure_ascii=False))
        return 0
    if not infos:
        print("no tools installed")
        return 0
    for i in infos:
        if i.error:
            print(f"{i.name}  {i.version}  BROKEN: {i.error}")
            continue
        kind = "read-only" if i.read_only else "asks"
        print(f"{i.name}  {i.version}  ({i.distribution}, {kind})  {i.description}")
        print(f"    arguments: {json.dumps(i.parameters, ensure_ascii=False)}")
        if i.options is None:
            print("    options:   not declared (not checked)")
        elif i.options.get("properties"):
            print(f"    options:   {json.dumps(i.options, ensure_ascii=False)}")
    return 0
