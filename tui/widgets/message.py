"""One chat message: a role header and a Markdown body that can stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownStream

from ..conversation import Status, Turn

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_LABELS: dict[Status, str] = {
    "done": "",
    "streaming": "…",
    "cancelled": "stopped",
    "error": "error",
    "interrupted": "interrupted",
}


def _hard_breaks(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def chat_parser() -> MarkdownIt:
    """GitHub-flavoured Markdown where a single newline is a line break, as typed (chat convention)."""
    md = MarkdownIt("gfm-like")
    md.core.ruler.push("hard_breaks", _hard_breaks)
    return md


class MessageView(Markdown):
    """A turn rendered as Markdown. Focus it (Tab / click) and press ``c`` to copy it."""

    can_focus = True
    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy message")]

    @dataclass
    class CopyRequested(Message):
        view: MessageView
        text: str

    def __init__(self, turn: Turn) -> None:
        super().__init__(turn.content, classes=f"message {turn.role}", parser_factory=chat_parser)
        self.turn = turn
        self._stream: MarkdownStream | None = None
        self._shown = turn.content  # what has been written to the widget so far
        self._note = ""

    def on_mount(self) -> None:
        self._update_title()

    def _update_title(self) -> None:
        status = STATUS_LABELS.get(self.turn.status, "")
        parts = [ROLE_LABELS[self.turn.role]]
        if status:
            parts.append(status)
        if self._note:
            parts.append(self._note)
        self.border_title = " · ".join(parts)
        self.set_class(self.turn.status in ("cancelled", "error", "interrupted"), "-incomplete")
        self.set_class(self.turn.status == "streaming", "-streaming")

    def set_note(self, note: str) -> None:
        """Extra text in the header, e.g. a backend error."""
        self._note = note
        self._update_title()

    # -------------------------------------------------------------- streaming

    def start_stream(self) -> None:
        self.turn.status = "streaming"
        self._stream = Markdown.get_stream(self)
        self._update_title()

    async def write(self, chunk: str) -> None:
        if self._stream is not None:
            self._shown += chunk
            await self._stream.write(chunk)

    async def finish(self, text: str, status: Status) -> None:
        """End streaming with exactly ``text`` shown (chunks still queued are dropped)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.stop()
        if text != self._shown:
            self._shown = text
            await self.update(text)
        self.turn.content = text
        self.turn.status = status
        self._update_title()

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def action_copy(self) -> None:
        self.post_message(self.CopyRequested(self, self.turn.content))

