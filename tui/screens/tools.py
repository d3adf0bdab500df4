"""F3: the tools this chat may call: installed ones to tick, and ``-T``-style entries to add (MCP servers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, SelectionList

from promptdsl.errors import PromptDSLError
from promptdsl.tools.registry import ToolInfo

from ..plain import plain
from ..tools import check_tools


class ToolsScreen(ModalScreen[tuple[list[str], str] | None]):
    """Returns (the ticked entries in order, the tool choice), or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    DEFAULT_CSS = """
    #tools-box { width: 90; height: auto; max-height: 90%; }
    #tools-list { height: auto; max-height: 16; }
    """

    def __init__(self, current: Sequence[str], installed: Sequence[ToolInfo], choice: str = "auto") -> None:
        super().__init__()
        self.choice = choice
        self.current = list(current)
        self.installed = [i for i in installed if i.error is None]

    def compose(self) -> ComposeResult:
        names = [i.name for i in self.installed]
        options: list[tuple[Content, str, bool]] = [  # plain: an entry may hold "root=[/]x"
            (plain(f"{i.name}  {'read-only' if i.read_only else 'asks'}  {i.description}"), i.name,
             i.name in self.current)
            for i in self.installed
        ]
        options += [(plain(entry), entry, True) for entry in self.current if entry not in names]
        with Vertical(classes="dialog", id="tools-box"):
            yield Label("Tools this chat may call  (Space ticks, Ctrl+S saves, Esc cancels)", classes="dialog-title")
            yield SelectionList[str](*options, id="tools-list")
            yield Input(placeholder="add NAME:KEY=VALUE,... or mcp:COMMAND and press Enter", id="tools-add")
            yield Label("", id="tools-error", classes="hint")
            yield Checkbox("Call a tool first in every reply (small local models seldom choose one)",
                           self.choice == "required", id="tools-required")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#tools-list", SelectionList).focus()

    @on(Input.Submitted, "#tools-add")
    def _add(self, event: Input.Submitted) -> None:
        entry = event.value.strip()
        if not entry:
            return
        error = self.query_one("#tools-error", Label)
        try:
            check_tools([entry])
        except PromptDSLError as exc:
            error.update(plain(str(exc)))  # it quotes the entry typed
            return
        error.update("")
        listing: SelectionList[str] = self.query_one("#tools-list", SelectionList)
        if entry in _values(listing):
            listing.select(entry)
        else:
            listing.add_option((plain(entry), entry, True))
        event.input.clear()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        listing: SelectionList[str] = self.query_one("#tools-list", SelectionList)
        ticked = set(listing.selected)
        required = self.query_one("#tools-required", Checkbox).value
        self.dismiss(([v for v in _values(listing) if v in ticked], "required" if required else "auto"))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def _values(listing: SelectionList[str]) -> list[str]:
    return [str(option.value) for option in listing.options]  # type: ignore[attr-defined]
