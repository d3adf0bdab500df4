"""One chat message: a bordered box whose title says who wrote it and how it ended.

A user message shows exactly what was typed (plain text: ``<div>`` and ``2*3*4`` stay);
a reply is Markdown that can stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.types import NoActiveAppError
from textual.widget import Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from ..conversation import Status, Turn
from ..plain import plain

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_LABELS: dict[Status, str] = {
    "done": "",
    "streaming": "…",
    "cancelled": "stopped",
    "error": "error",
    "interrupted": "interrupted",
    "length": "cut at max_tokens · Ctrl+L continues",
}
INCOMPLETE: frozenset[Status] = frozenset({"cancelled", "error", "interrupted", "length"})


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


def restyle_self_only(widget: Widget) -> None:
    """Restyle ``widget`` for a focus change without matching CSS again for its descendants.

    Textual restyles every descendant on focus, and for a long conversation that took seconds at
    each focus change (Tab, a click). No rule styles the blocks by the focus of the message or the
    log, but their background is blended from the widget's: when that changes (a focused message),
    they are repainted (their caches cleared), which is cheaper.
    """
    styles = widget.styles
    before = (styles.background, styles.background_tint)
    try:
        widget.app.stylesheet.update_nodes([widget], animate=True)
    except NoActiveAppError:  # as Textual's own: focus can change while the app shuts down
        return
    if (styles.background, styles.background_tint) == before:
        return  # the log: nothing under it looks different
    for child in widget.walk_children(Widget):
        child.notify_style_update()
        child.refresh()


class MessageView(Vertical):
    """A turn. Focus it (Tab / click) and press ``c`` to copy it."""

    can_focus = True
    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "copy", "Copy message")]

    @dataclass
    class CopyRequested(Message):
        view: MessageView
        text: str

    def __init__(self, turn: Turn) -> None:
        super().__init__(classes=f"message {turn.role}")
        self.turn = turn
        self._stream: MarkdownStream | None = None
        self._last_blocks: set[Widget] = set()  # the blocks classed "-last" (see _mark_last)
        self._shown = turn.content if turn.role == "user" else self._body_text()  # in the body's Markdown so far
        self._note = turn.note
        self._phase = ""  # e.g. "reading the prompt (812 tokens) 4 s"
        self.left_out = False

    def compose(self) -> ComposeResult:
        if self.turn.role == "user":
            yield Static(Text(self.turn.content), classes="body")
        else:
            yield Markdown(self._body_text(), classes="body", parser_factory=chat_parser)
            yield Static(classes="note")  # why a reply failed, whole: the title holds one line of it

    def _body_text(self) -> str:
        """The reply's Markdown: its text, or a placeholder for none (an error says why in the note)."""
        turn = self.turn
        if turn.content or turn.status in ("streaming", "error"):
            return turn.content
        return "*(no text)*"

    def _show_note(self) -> None:
        """The note under a failed reply: its own widget, so a reply cut inside a code block does not
        swallow it, and no Markdown is parsed again for it."""
        found = self.query(".note")
        if not found:
            return
        note = found.first(Static)
        turn = self.turn
        text = ""
        if turn.status == "error":
            why = " ".join((self._note or "the backend failed").split())
            text = f"(stopped: {why})" if turn.content else f"(no text: {why})"
        note.update(Text(text))
        note.display = bool(text)

    @property
    def markdown(self) -> Markdown | None:
        found = self.query(Markdown)
        return found.first() if found else None

    @property
    def source(self) -> str:
        """The text shown (exactly what was typed, for a user message)."""
        return self._shown

    def on_mount(self) -> None:
        self._update_title()
        self._show_note()

    def watch_has_focus(self, _has_focus: bool) -> None:
        restyle_self_only(self)

    def on_markdown_table_of_contents_updated(self, event: Markdown.TableOfContentsUpdated) -> None:
        """Sent after the body's blocks are (re)built: mark the last one (see app.tcss)."""
        self._mark_last()

    def _mark_last(self) -> None:
        """Class "-last" on the last block of the body and of each list item and quote in it (app.tcss):
        no blank line before the border, or before the next list item. Once per rebuilt body, not
        at every block mounted as a ``:last-child`` rule would."""
        md = self.markdown
        if md is None:
            return
        holders: list[Widget] = [md, *md.query("MarkdownBlockQuote, MarkdownList Vertical")]
        last = {holder.children[-1] for holder in holders if holder.children}
        for gone in self._last_blocks - last:
            gone.remove_class("-last")
        for block in last - self._last_blocks:
            block.add_class("-last")
        self._last_blocks = last

    def _update_title(self) -> None:
        turn = self.turn
        parts = [ROLE_LABELS[turn.role]]
        if turn.role == "assistant" and turn.author:
            parts.append(turn.author)
        if self._phase and turn.status == "streaming":
            parts.append(self._phase)
        status = STATUS_LABELS.get(turn.status, "")
        if turn.role == "user" and turn.status == "error":
            status = "not sent"
        if status:
            parts.append(status)
        if self._note and turn.status == "error":
            parts.append(self._note.splitlines()[0][:120])
        if self.left_out:
            parts.append("left out of the last prompt (context full)")
        self.border_title = plain(" · ".join(parts))  # a note or model name may hold "[/]"
        self.set_class(turn.status in INCOMPLETE, "-incomplete")
        self.set_class(turn.status == "streaming", "-streaming")
        self.set_class(self.left_out, "-left-out")

    def set_note(self, note: str) -> None:
        """A backend error, kept on the turn (and in history)."""
        self._note = note
        self.turn.note = note
        self._update_title()
        self._show_note()

    def set_phase(self, phase: str) -> None:
        """What a streaming reply waits for (prompt processing), shown in its title."""
        if phase != self._phase:
            self._phase = phase
            self._update_title()

    def set_left_out(self, left_out: bool) -> None:
        if left_out != self.left_out:
            self.left_out = left_out
            self._update_title()

    def refresh_title(self) -> None:
        self._update_title()

    # -------------------------------------------------------------- streaming

    def start_stream(self) -> None:
        self.turn.status = "streaming"
        md = self.markdown
        if md is not None:
            self._stream = Markdown.get_stream(md)
        self._update_title()
        self._show_note()  # a failed reply continued: its old error goes

    async def show_text(self, text: str) -> None:
        """Bring the streaming body up to ``text`` (one write for however many chunks came)."""
        if self._stream is None or text == self._shown:
            return
        if text.startswith(self._shown):
            delta, self._shown = text[len(self._shown):], text
            await self._stream.write(delta)
        else:
            self._shown = text
            md = self.markdown
            if md is not None:
                await md.update(text)

    async def stop_stream(self) -> None:
        """Stop the body's Markdown stream (its task would outlive a view removed while streaming)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.stop()

    async def finish(self, text: str, status: Status) -> None:
        """End streaming with exactly ``text`` shown (chunks still queued are dropped)."""
        await self.stop_stream()
        self.turn.content = text
        self.turn.status = status
        self._phase = ""
        md = self.markdown
        body = self._body_text()
        if md is not None and body != self._shown:
            self._shown = body
            await md.update(body)
        self._mark_last()  # streamed blocks were appended after the last mark
        self._update_title()
        self._show_note()

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def action_copy(self) -> None:
        self.post_message(self.CopyRequested(self, self.turn.content))
