"""Tools in the terminal UI: asks through the approval dialog, reports steps as cards.

The tool loop runs in a worker thread; the dialog lives on the UI thread. The
approver pushes the dialog with ``call_from_thread`` and waits for the answer;
"Always" approves that tool for the rest of this chat (this object's life).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from textual.app import App
from textual.containers import Vertical

from promptdsl.tools import Step, Tool, ToolCall
from promptdsl.tools.loop import ToolSettings

from .screens.tool_approval import Answer, ToolApproval
from .widgets.tool_card import ToolCard


class ChatTools:
    """Per-chat approval memory plus the hooks a ToolSettings needs."""

    def __init__(self, app: App[object], on_step: Callable[[str, Step], object]) -> None:
        self.app = app
        self.on_step = on_step
        self.always: set[str] = set()
        self.stop = threading.Event()

    def approve(self, tool: Tool, call: ToolCall) -> bool:
        if call.tool in self.always:
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
            self.always.add(call.tool)
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
