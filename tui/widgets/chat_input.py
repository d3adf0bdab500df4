"""The message box: a multi-line editor where Enter sends and Shift+Enter / Ctrl+J break the line."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

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
            placeholder="Message  (Enter send · Shift+Enter or Ctrl+J new line · F1 help)",
            compact=True,
        )

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
        await super()._on_key(event)
