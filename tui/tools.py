"""Tools in the terminal UI: asks through the approval dialog, reports steps as cards, checks ``-T``.

The tool loop runs in a worker thread; the dialog lives on the UI thread. The
approver pushes the dialog with ``call_from_thread`` and waits for the answer;
"Always" approves that tool for the rest of this chat (this object's life).
"""

from __future__ import annotations

import shlex
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from textual.app import App
from textual.containers import Vertical

from promptdsl.errors import InputError
from promptdsl.tools import Step, Tool, ToolCall, ToolUse
from promptdsl.tools.check import MCP_PREFIX
from promptdsl.tools.loop import ToolSettings
from promptdsl.tools.registry import open_tool

from .screens.tool_approval import Answer, ToolApproval
from .widgets.tool_card import ToolCard


class ChatTools:
    """Per-chat approval memory plus the hooks a ToolSettings needs."""

    def __init__(self, app: App[object], on_step: Callable[[str, Step], object]) -> None:
        self.app = app
        self.on_step = on_step
        self.always: set[str] = set()
        self.stop = threading.Event()

    @staticmethod
    def _key(call: ToolCall) -> str:
        """What "Always" covers: one tool, or one MCP server's command (not every server a spec names)."""
        if call.tool == "mcp-server":
            return f"mcp-server {call.arguments.get('command')}"
        return call.tool

    def approve(self, tool: Tool, call: ToolCall) -> bool:
        if self._key(call) in self.always:
            return True
        answered = threading.Event()
        box: dict[str, Answer] = {}

        def done(answer: Answer | None) -> None:
            box["answer"] = answer or "deny"
            answered.set()

        self.app.call_from_thread(self.app.push_screen, ToolApproval(tool, call), done)
        while not answered.wait(0.1):
            if self.stop.is_set():
                return False
        if box["answer"] == "always":
            self.always.add(self._key(call))
        return box["answer"] in ("approve", "always")

    def event(self, kind: str, step: Step) -> None:
        self.app.call_from_thread(self.on_step, kind, step)

    def settings(self) -> ToolSettings:
        return ToolSettings(approver=self.approve, on_event=self.event)


def show_step(box: Vertical, kind: str, step: Step) -> None:
    """Add a card when a call starts; fill it in when it ends (one card per step)."""
    for card in box.query(ToolCard):
        if card.step is step:
            card.finish(step)
            return
    box.mount(ToolCard(step, running=kind == "call"))


def tool_uses(entries: Sequence[str]) -> list[ToolUse]:
    """``-T`` entries (``NAME:KEY=VALUE,...`` or ``mcp:COMMAND``) as the loop takes them."""
    from promptdsl.cli.tools import parse_tool_flag  # the -T syntax: one parser for run and chat

    return [parse_tool_flag(entry) for entry in entries]


def check_tools(entries: Sequence[str], cwd: Path | None = None) -> None:
    """Hold ``-T`` entries to ``promptdsl run``'s syntax and open each tool once (bad names and options fail here).

    MCP servers are not started (that is the first reply's work), but their program must exist.
    """
    for entry, use in zip(entries, tool_uses(entries), strict=True):
        if use.name.startswith(MCP_PREFIX):
            try:
                argv = shlex.split(use.name[len(MCP_PREFIX):])
            except ValueError as exc:
                raise InputError(f"-T {entry}: {exc}") from None
            if not argv:
                raise InputError(f"-T {entry}: an MCP server needs a command after 'mcp:'")
            if shutil.which(argv[0]) is None and not (cwd or Path.cwd()).joinpath(argv[0]).is_file():
                raise InputError(f"-T {entry}: program '{argv[0]}' not found")
            continue
        open_tool(use, base_dir=cwd or Path.cwd(), trusted=True).close()
