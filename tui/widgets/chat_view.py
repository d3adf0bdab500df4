"""The chat: message log + input. Owns the conversation, its history rows and the reply worker.

Generation runs in a thread worker (the UI never waits on the model). The worker
posts :class:`ChatView.ReplyChunk` / :class:`ChatView.ReplyEnded` to this widget
(``post_message`` is thread-safe); the handlers run on the UI thread and stream
the text into the reply's Markdown. Esc cancels at once: the text shown so far
is kept, and the worker closes the backend's iterator at its next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from promptdsl.errors import PromptDSLError

from ..conversation import Conversation, Turn, make_title
from ..generation import Generation, run_generation
from ..history import HistoryStore
from ..session import Session
from .chat_input import ChatInput
from .message import MessageView

EMPTY_HINT = "Type a message and press Enter. Ctrl+S runs a spec, Ctrl+O opens a saved chat, F1 lists the keys."


class ChatView(Vertical):
    """Chat log and input for one conversation at a time."""

    # ---- messages for the app (bubble)

    @dataclass
    class StateChanged(Message):
        state: str  # "ready" | "generating"

    @dataclass
    class StatsChanged(Message):
        tokens: int | None = None
        tokens_per_second: float | None = None
        context_used: int | None = None
        context_total: int | None = None

    @dataclass
    class TitleChanged(Message):
        title: str

    @dataclass
    class Notice(Message):
        text: str
        severity: str = "information"  # "information" | "warning" | "error"

    # ---- messages from the worker thread to this widget (no bubble)

    @dataclass
    class ReplyChunk(Message, bubble=False):
        gen: Generation
        chunk: str

    @dataclass
    class ReplyEnded(Message, bubble=False):
        gen: Generation

    def __init__(self, session: Session, store: HistoryStore | None, *, system: str, id: str | None = None):
        super().__init__(id=id)
        self.session = session
        self.store = store
        self.default_system = system
        self.conversation = Conversation(system=system)
        self._gen: Generation | None = None
        self._attempt = 0

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="log"):
            yield Static(id="system-line")
            yield Static(EMPTY_HINT, id="empty-hint")
        yield ChatInput(id="input")

    def on_mount(self) -> None:
        self._show_system()
        self.query_one("#log", VerticalScroll).anchor()

    def on_unmount(self) -> None:
        """Quitting mid-reply: stop the worker at its next chunk (it saves the text as stopped)."""
        if self._gen is not None:
            self._gen.cancel()

    # ------------------------------------------------------------------ state

    @property
    def generating(self) -> bool:
        return self._gen is not None

    @property
    def log_view(self) -> VerticalScroll:
        return self.query_one("#log", VerticalScroll)

    def views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    def _view_for(self, turn: Turn) -> MessageView | None:
        return next((v for v in self.views() if v.turn is turn), None)

    def _show_system(self) -> None:
        system = self.conversation.system.strip()
        line = self.query_one("#system-line", Static)
        line.update(f"System: {system}" if system else "No system prompt")
        self.query_one("#empty-hint").display = not self.conversation.turns

    def _notice(self, text: str, severity: str = "information") -> None:
        self.post_message(self.Notice(text, severity))

    # ------------------------------------------------------------------ persistence

    def _persist(self, turn: Turn) -> None:
        conv = self.conversation
        if self.store is None:
            return
        try:
            if conv.id is None:
                conv.title = conv.title or make_title(turn.content)
                self._stamp_backend()
                self.store.create(conv)
                self.post_message(self.TitleChanged(conv.title))
            else:
                self.store.add_turn(conv.id, turn)
        except Exception as exc:  # a full disk must not lose the chat on screen
            self._notice(f"history not saved: {exc}", "error")

    def _stamp_backend(self) -> None:
        conv = self.conversation
        backend = self.session.peek()
        conv.backend = self.session.choice.name
        conv.model = backend.model_id if backend is not None else (self.session.choice.model or "")

    # ------------------------------------------------------------------ sending

    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        if self.generating:
            self._notice("A reply is still streaming: press Esc to stop it first.", "warning")
            return
        event.input.clear()
        await self.send(event.text)

    async def send(self, text: str) -> None:
        """Add a user message and stream the reply."""
        turn = Turn("user", text.rstrip())
        self.conversation.turns.append(turn)
        self._persist(turn)
        await self._mount_turn(turn)
        await self._reply()

    async def _mount_turn(self, turn: Turn) -> MessageView:
        view = MessageView(turn)
        self.query_one("#empty-hint").display = False
        await self.log_view.mount(view)
        self.log_view.anchor()
        return view

    async def _reply(self) -> None:
        conv = self.conversation
        messages = conv.messages()
        turn = Turn("assistant", "", "streaming")
        conv.turns.append(turn)
        self._persist(turn)
        if conv.id is not None and self.store is not None:
            self._stamp_backend()
            self.store.save_meta(conv)
        view = await self._mount_turn(turn)
        view.start_stream()
        gen = Generation(turn, messages, self.session.options_for(self._attempt))
        self._gen = gen
        self.post_message(self.StateChanged("generating"))
        self.post_message(self.StatsChanged())
        self._generate(gen)

    @work(thread=True, group="reply", exit_on_error=False)
    def _generate(self, gen: Generation) -> None:
        run_generation(gen, self.session.backend, self.store, lambda c: self.post_message(self.ReplyChunk(gen, c)))
        self.post_message(self.ReplyEnded(gen))

    async def on_chat_view_reply_chunk(self, event: ChatView.ReplyChunk) -> None:
        gen = event.gen
        if gen is not self._gen or gen.cancelled:
            return
        view = self._view_for(gen.turn)
        if view is not None:
            await view.write(event.chunk)
        fitted = gen.fitted
        used = fitted.used + gen.tokens if fitted is not None and fitted.used is not None else None
        self.post_message(
            self.StatsChanged(gen.tokens, gen.tokens_per_second(), used, fitted.total if fitted else None)
        )

    async def on_chat_view_reply_ended(self, event: ChatView.ReplyEnded) -> None:
        gen = event.gen
        view = self._view_for(gen.turn)
        if view is not None and view.streaming:
            await view.finish(gen.text, gen.status)
        if gen.error:
            if view is not None:
                view.set_note(gen.error)
            self._notice(gen.error, "error")
        fitted = gen.fitted
        if fitted is not None and fitted.dropped:
            self._notice(f"The oldest {fitted.dropped} message(s) were left out to fit the context window.")
        if gen is self._gen:
            self._gen = None
            self.post_message(self.StateChanged("ready"))
        if gen.turn not in self.conversation.turns:
            return  # another conversation is on screen now
        self.post_message(
            self.StatsChanged(
                gen.tokens if gen.tokens else None,
                gen.tokens_per_second(),
                gen.context_used if gen.context_used is not None else (fitted.used if fitted else None),
                fitted.total if fitted else None,
            )
        )

    async def cancel(self) -> bool:
        """Stop the streaming reply now, keeping its text. False when nothing streams."""
        gen = self._gen
        if gen is None:
            return False
        text = gen.cancel()
        self._gen = None
        view = self._view_for(gen.turn)
        if view is not None:
            await view.finish(text, "cancelled")
        self.post_message(self.StateChanged("ready"))
        return True

    async def regenerate(self) -> None:
        """Replace the last reply with a new one (or answer a last message that has none)."""
        await self.cancel()
        turns = self.conversation.turns
        if turns and turns[-1].role == "assistant":
            await self._drop_turn(turns[-1])
        if not turns or turns[-1].role != "user":
            self._notice("Nothing to regenerate yet: send a message first.", "warning")
            return
        self._attempt += 1
        await self._reply()

    async def _drop_turn(self, turn: Turn) -> None:
        self.conversation.turns.remove(turn)
        view = self._view_for(turn)
        if view is not None:
            await view.remove()
        if self.store is not None and turn.id is not None:
            self.store.delete_turn(turn.id)

    # ------------------------------------------------------------------ conversations

    async def show(self, conv: Conversation) -> None:
        """Replace what is shown with ``conv`` (a new or a resumed conversation)."""
        await self.cancel()
        await self.log_view.remove_children(MessageView)
        self.conversation = conv
        self._attempt = 0
        self._show_system()
        await self.log_view.mount_all([MessageView(t) for t in conv.turns])
        self.log_view.anchor()
        self.log_view.scroll_end(animate=False)
        self.post_message(self.TitleChanged(conv.title or "New conversation"))
        self.post_message(self.StatsChanged())
        if conv.turns:
            self._measure(conv)

    async def new(self) -> None:
        await self.show(Conversation(system=self.default_system))

    async def resume(self, conv_id: int) -> None:
        if self.store is None:
            return
        try:
            conv = self.store.load(conv_id)
        except PromptDSLError as exc:
            self._notice(str(exc), "error")
            return
        await self.show(conv)

    @work(thread=True, group="measure", exclusive=True, exit_on_error=False)
    def _measure(self, conv: Conversation) -> None:
        """Context use of a resumed conversation (tokenizing can wait for the model: a thread)."""
        try:
            backend = self.session.backend()
            used = backend.count_tokens(conv.prompt())
            total = backend.context_length()
        except Exception:  # the status just stays unknown; sending reports real errors
            return
        self.post_message(self.StatsChanged(None, None, used, total))

    def set_system(self, text: str) -> None:
        """Change the system prompt of this conversation and of new ones."""
        self.conversation.system = text
        self.default_system = text
        self._show_system()
        if self.store is not None and self.conversation.id is not None:
            self.store.save_meta(self.conversation)
