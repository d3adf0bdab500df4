"""``promptdsl chat``: open the terminal UI (Textual loads only for this command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inputs import parse_options
from .common import Commands, add_backend_flags


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("chat", parents=[common], help="open the terminal UI: chat, run specs, history")
    p.add_argument("specs", type=Path, nargs="*", help="spec files or folders for the spec picker")
    add_backend_flags(p)
    p.add_argument("--system", help="system prompt for new conversations")
    p.add_argument(
        "--tool", "-T", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
        help="a tool the chat's replies may call (as in `run -T`; repeatable), e.g. -T calculator, -T 'mcp:CMD'",
    )
    p.add_argument("--tool-choice", choices=("auto", "required"), default="auto",
                   help="required: every reply calls a tool first (small local models seldom choose one)")
    p.add_argument("--continue", "-c", dest="resume_latest", action="store_true",
                   help="resume the most recent conversation")
    p.set_defaults(handler=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from promptdsl_tui.launch import run_chat

    code: int = run_chat(args.specs, backend=args.backend, model=args.model, options=parse_options(args.option),
                         system=args.system, resume_latest=args.resume_latest, tools=args.tool,
                         tool_choice=args.tool_choice)
    return code
