"""Ask before a tool call runs: Approve, Deny, or Always (for this tool, for the rest of the chat)."""

from __future__ import annotations

import json
from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from promptdsl.tools import Tool, ToolCall

from ..plain import plain

Answer = Literal["approve", "deny", "always"]


class ToolApproval(ModalScreen[Answer]):
    """Dismisses with ``approve``, ``deny`` or ``always``; Esc denies."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "answer('deny')", "Deny"),
        Binding("y", "answer('approve')", "Approve"),
        Binding("n", "answer('deny')", "Deny"),
        Binding("a", "answer('always')", "Always"),
    ]

    DEFAULT_CSS = """
    ToolApproval { align: center middle; }
    #approval-box { width: 80; height: auto; padding: 1 2; border: round $warning; background: $surface; }
    #approval-args { margin: 1 0; max-height: 12; }
    #approval-buttons { height: auto; }
    #approval-buttons Button { margin-right: 1; }
    """

    def __init__(self, tool: Tool, call: ToolCall) -> None:
        super().__init__()
        self.tool = tool
        self.call = call

    def compose(self) -> ComposeResult:
        with Vertical(id="approval-box"):
            yield Label(plain(f"The model wants to run the tool '{self.call.tool}'"), classes="dialog-title")
            yield Label(plain(self.tool.description), classes="hint")
            yield Static(plain(json.dumps(self.call.arguments, ensure_ascii=False, indent=2)), id="approval-args")
            with Horizontal(id="approval-buttons"):
                yield Button("Approve  y", variant="success", id="approve")
                yield Button("Deny  n", variant="error", id="deny")
                yield Button("Always for this chat  a", id="always")

    def on_mount(self) -> None:
        self.query_one("#deny", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("approve", "deny", "always"):
            self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_answer(self, answer: Answer) -> None:
        self.dismiss(answer)
