"""F1: every key the app knows, in one table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: Keys of the other screens, listed after the chat's.
SCREEN_KEYS: tuple[tuple[str, str, str], ...] = (
    ("Spec screen", "Ctrl+R", "run the spec on the form's values"),
    ("Spec screen", "Ctrl+T", "show / hide the compiled prompt (it follows the inputs)"),
    ("Spec screen", "Ctrl+G", "copy the result"),
    ("Spec screen", "Esc", "stop the run, or go back to the chat"),
    ("History", "type / ↑↓ / Enter", "search titles and text / move / open"),
    ("History", "F2 / Delete", "rename / delete (Delete twice)"),
    ("History", "Ctrl+End", "the last row (loads more than 200)"),
    ("Dialogs", "Esc", "close without changes"),
)


def key_label(key: str) -> str:
    """``ctrl+s`` -> ``Ctrl+S``; ``f1`` -> ``F1``; ``escape`` -> ``Esc``."""
    names = {"escape": "Esc", "enter": "Enter", "delete": "Delete", "tab": "Tab", "f2": "F2"}
    parts = [names.get(p, p.capitalize() if len(p) > 1 else p.upper()) for p in key.split("+")]
    return "+".join(parts)


def help_table(keys: Sequence[tuple[str, str]]) -> Group:
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, header_style="bold")
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("chat")
    for key, what in keys:
        table.add_row(key, what)
    other = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, header_style="bold")
    other.add_column("key", style="bold", no_wrap=True)
    other.add_column("elsewhere")
    for where, key, what in SCREEN_KEYS:
        other.add_row(key, f"{where}: {what}")
    return Group(Text("Keys", style="bold"), table, other, Text("Esc or F1 closes this help.", style="dim"))


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close"),
    ]

    def __init__(self, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = list(keys)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="dialog"):
            yield Static(help_table(self.keys), id="help-text")
