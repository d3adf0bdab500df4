"""Ctrl+O: saved conversations, newest first; Enter resumes, Delete removes, typing filters."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label

from ..history import ConversationSummary, HistoryStore


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


class HistoryScreen(ModalScreen[int | None]):
    """Returns the id of the conversation to resume, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Close"),
        Binding("delete", "delete", "Delete"),
    ]

    def __init__(self, store: HistoryStore, current: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.current = current
        self.rows: list[ConversationSummary] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="history-box"):
            yield Label("Conversations  (Enter opens · Delete removes · Esc closes)", classes="dialog-title")
            yield Input(placeholder="filter by title or text", id="filter")
            yield DataTable(id="conversations", cursor_type="row", zebra_stripes=True)
            yield Label("", id="history-empty", classes="hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("title", "msgs", "model", "updated")
        self._fill("")
        table.focus()

    def _fill(self, query: str) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.rows = self.store.summaries(query)
        for row in self.rows:
            mark = "▸ " if row.id == self.current else ""
            model = f"{row.backend} · {row.model}" if row.backend else ""
            table.add_row(mark + (row.title or "(untitled)"), str(row.messages), model, _when(row.updated),
                          key=str(row.id))
        empty = "No saved conversations yet." if not query else "Nothing matches."
        self.query_one("#history-empty", Label).update("" if self.rows else empty)

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#filter")
    def _to_table(self) -> None:
        self.query_one(DataTable).focus()

    @on(DataTable.RowSelected)
    def _open(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.dismiss(int(event.row_key.value))

    def action_delete(self) -> None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0:
            return
        row = self.rows[table.cursor_row]
        if row.id == self.current:
            self.notify("That conversation is open; start a new one (Ctrl+N) to delete it.", severity="warning")
            return
        self.store.delete(row.id)
        self.notify(f"Deleted “{row.title}”.")
        self._fill(self.query_one("#filter", Input).value)

    def action_cancel(self) -> None:
        self.dismiss(None)
