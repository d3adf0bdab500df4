"""Ctrl+S: the specs found (paths given, then ./specs/); broken ones show why."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from ..specs import SpecEntry, short_path


def _prompt(entry: SpecEntry) -> Text:
    text = Text()
    text.append(entry.name, style="bold")
    if entry.spec is not None:
        spec = entry.spec
        text.append(f"  {spec.mode} · {spec.output.type}", style="dim")
        if spec.description:
            text.append(f"\n  {spec.description}")
    else:
        text.append(f"\n  {entry.error}", style="red")
    text.append(f"\n  {short_path(entry.path)}", style="dim")
    return text


class SpecPicker(ModalScreen[SpecEntry | None]):
    """Returns the chosen spec entry (only loadable ones can be chosen)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Close")]

    def __init__(self, entries: list[SpecEntry]) -> None:
        super().__init__()
        self.entries = entries

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="spec-box"):
            yield Label("Run a spec  (Enter opens · Esc closes)", classes="dialog-title")
            if not self.entries:
                yield Label("No specs found: pass paths to `promptdsl chat SPEC…` or add a specs/ folder.",
                            classes="hint")
            yield OptionList(
                *[Option(_prompt(e), id=str(i), disabled=e.spec is None) for i, e in enumerate(self.entries)],
                id="specs",
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.dismiss(self.entries[int(event.option.id)])

    def action_cancel(self) -> None:
        self.dismiss(None)
