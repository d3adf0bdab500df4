"""The message box: Enter sends, Shift+Enter / Ctrl+J break the line, Up / Down recall earlier messages.

Recall works as in a shell: Up on the first line (of an empty box, or of a recalled
message left as it was) shows the previous message sent; Down on the last line goes
forward again and finally back to what was being typed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea
from textual.widgets.text_area import EditResult

NEWLINE_KEYS = frozenset({"shift+enter", "ctrl+j", "alt+enter"})


class ChatInput(TextArea):
    """TextArea with chat keys; posts :class:`ChatInput.Submitted` with the text on Enter."""

    @dataclass
    class Submitted(Message):
        input: ChatInput
        text: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            placeholder="Message  (Enter send · Shift+Enter new line · ↑ earlier messages · Ctrl+E $EDITOR · F1 help)",
            compact=True,
        )
        self.recall: list[str] = []  # sent messages, newest first
        self._at = -1  # index into recall being shown; -1 = the draft
        self._draft = ""

    def set_recall(self, items: Iterable[str]) -> None:
        self.recall = list(dict.fromkeys(items))
        self._at = -1

    def remember(self, text: str) -> None:
        """A message was sent: it becomes the newest to recall."""
        self.recall = [text, *(t for t in self.recall if t != text)]
        self._at = -1

    def _recalling(self) -> bool:
        """Up/Down move through history only from an empty box or an untouched recalled message."""
        if self._at < 0:
            return self.text == ""
        return self.text == self.recall[self._at]

    def _show(self, at: int) -> None:
        if self._at < 0:
            self._draft = self.text
        self._at = at
        self.text = self._draft if at < 0 else self.recall[at]
        self.move_cursor(self.document.end)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            if self.text.strip():
                self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self.replace("\n", start, end, maintain_selection_offset=False)
            return
        row = self.cursor_location[0]
        if event.key == "up" and row == 0 and self._recalling() and self._at + 1 < len(self.recall):
            event.stop()
            event.prevent_default()
            self._show(self._at + 1)
            return
        if event.key == "down" and self._at >= 0 and row == self.document.line_count - 1 and self._recalling():
            event.stop()
            event.prevent_default()
            self._show(self._at - 1)
            return
        await super()._on_key(event)

    def clear(self) -> EditResult:
        self._at = -1
        self._draft = ""
        return super().clear()
