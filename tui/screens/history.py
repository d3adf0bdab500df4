"""Ctrl+O: saved conversations, newest first. Typing filters (titles and message text), Up/Down move,
Enter resumes, F2 renames, Delete asks once more, then deletes."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label

from ..history import ConversationSummary, HistoryStore, unsaved
from ..plain import plain
from .ask import TextPrompt

PAGE = 200  # rows fetched at a time; moving to the last row fetches the next page


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


class HistoryScreen(ModalScreen[int | None]):
    """Returns the id of the conversation to resume, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Close"),
        Binding("delete", "delete", "Delete", priority=True),  # also while typing a search (Backspace edits)
        Binding("f2", "rename", "Rename"),
    ]

    def __init__(self, store: HistoryStore, current: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.current = current
        self.rows: list[ConversationSummary] = []
        self.total = 0
        self._query = ""
        self._confirm: int | None = None  # the id Delete was pressed on once

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="history-box"):
            yield Label("Conversations  (type to search · ↑↓ Enter opens · F2 renames · Delete removes · Esc)",
                        classes="dialog-title")
            yield Input(placeholder="search titles and message text", id="filter")
            yield DataTable(id="conversations", cursor_type="row", zebra_stripes=True)
            yield Label("", id="history-count", classes="hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("title", "msgs", "replies by", "updated")
        self._fill("")
        self.query_one("#filter", Input).focus()

    @property
    def table(self) -> DataTable[str | Text]:
        return self.query_one(DataTable)

    def _fill(self, query: str, keep: int | None = None, at: int | None = None) -> None:
        self._query = query
        self._confirm = None
        self.table.clear()
        self.rows = []
        self.total = self.store.count(query)
        self._more()
        index = next((i for i, r in enumerate(self.rows) if r.id == keep), None) if keep is not None else None
        if index is None and at is not None:
            index = min(at, len(self.rows) - 1)
        if index is not None and index >= 0:
            self.table.move_cursor(row=index)

    def _more(self) -> None:
        """Fetch the next page of rows (the list shows how many there are in all)."""
        page = self.store.summaries(self._query, PAGE, offset=len(self.rows))
        for row in page:
            mark = "▸ " if row.id == self.current else ""
            title = Text(mark + (row.title or "(untitled)"))
            if row.snippet:
                title.append(f"\n  {row.snippet}", style="dim")
            models = row.models or (f"{row.model} ({row.backend})" if row.backend else "")
            self.table.add_row(title, str(row.messages), Text(models), _when(row.updated), key=str(row.id),
                               height=2 if row.snippet else 1)
        self.rows += page
        self._count_label()

    def _count_label(self, extra: str = "") -> None:
        if not self.total:
            text = "Nothing matches." if self._query.strip() else "No saved conversations yet."
        elif len(self.rows) < self.total:
            text = f"Showing {len(self.rows)} of {self.total}: the last row (Ctrl+End) loads more; or search."
        else:
            text = f"{self.total} conversation{'s' if self.total != 1 else ''}"
        self.query_one("#history-count", Label).update(plain(extra or text))  # a title may hold "[/]"

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#filter")
    def _open_highlighted(self) -> None:
        if self.rows and self.table.cursor_row >= 0:
            self.dismiss(self.rows[self.table.cursor_row].id)

    def on_key(self, event: events.Key) -> None:
        """Up / Down / Page keys move the list while the search box keeps the focus."""
        keys = {"up": "cursor_up", "down": "cursor_down", "pageup": "page_up", "pagedown": "page_down",
                "ctrl+home": "scroll_top", "ctrl+end": "scroll_bottom"}
        if event.key in keys and self.focused is self.query_one("#filter"):
            event.stop()
            event.prevent_default()
            getattr(self.table, f"action_{keys[event.key]}")()
        if self._confirm is not None:  # any key but Delete keeps the conversation
            self._confirm = None
            self._count_label()

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row == len(self.rows) - 1 and len(self.rows) < self.total:
            self._more()

    @on(DataTable.RowSelected)
    def _open(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.dismiss(int(event.row_key.value))

    def _selected(self) -> ConversationSummary | None:
        row = self.table.cursor_row
        return self.rows[row] if self.rows and 0 <= row < len(self.rows) else None

    def action_delete(self) -> None:
        row = self._selected()
        if row is None:
            return
        if row.id == self.current:
            self.notify("That conversation is open; start a new one (Ctrl+N) to delete it.", severity="warning")
            return
        if self._confirm != row.id:
            self._confirm = row.id
            self._count_label(f"Delete “{row.title}” ({row.messages} messages)? Delete again deletes it; "
                              "any other key keeps it.")
            return
        at = self.table.cursor_row
        error = unsaved(lambda: self.store.delete(row.id))
        if error is not None:  # e.g. another promptdsl holds the database: the conversation stays
            self._confirm = None
            self._count_label()
            self.notify(error, severity="error", timeout=10)
            return
        self.notify(f"Deleted “{row.title}”.")
        self._fill(self._query, at=at)

    def action_rename(self) -> None:
        row = self._selected()
        if row is None:
            return

        def done(title: str | None) -> None:
            if title is None:
                return
            error = unsaved(lambda: self.store.rename(row.id, title))
            if error is not None:
                self.notify(error, severity="error", timeout=10)
                return
            self._fill(self._query, keep=row.id)

        self.app.push_screen(TextPrompt("Rename the conversation:", row.title), done)

    def action_cancel(self) -> None:
        self.dismiss(None)
