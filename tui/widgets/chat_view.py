"""The chat: message log + input. Owns the conversation, its history rows and the reply worker.

Generation runs in a thread worker (the UI never waits on the model). The worker
only appends to a :class:`~promptdsl_tui.generation.Generation`; while a reply
streams, a timer on the UI thread saves the text that came every :data:`FRAME_SECONDS`
and, when its CPU budget allows a frame, writes whatever came since in one go. So the
UI's work is bounded per second, not per token, and the model keeps its own speed.
Esc cancels at once: the text so far is kept, and the worker closes the backend's
iterator at its next chunk.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Static

from promptdsl.backend import Backend
from promptdsl.errors import PromptDSLError
from promptdsl.prompt import Message as ChatMessage
from promptdsl.tools import Step, Tool, ToolCall
from promptdsl.tools.chat import ChatSteps, ChatToolLoop
from promptdsl.tools.loop import ToolSettings

from ..conversation import Conversation, Turn, make_title
from ..generation import (
    CPU_BOUND,
    FRAME_SECONDS,
    MAX_FRAME_GAP,
    UI_SHARE,
    Generation,
    ToolsStopped,
    run_generation,
)
from ..history import HistoryStore, unsaved
from ..plain import plain
from ..session import ContextFull, Session, fit_prompt
from ..tools import ChatTools, show_step, tool_uses
from .chat_input import ChatInput
from .message import MessageView, restyle_self_only
from .tool_card import ToolCard

EMPTY_HINT = "Type a message and press Enter. Ctrl+S runs a spec, Ctrl+O opens a saved chat, F1 lists the keys."
#: What a continued reply asks for; the new text is appended to the same reply.
CONTINUE_PROMPT = "Continue exactly where your last message stopped. Do not repeat anything."
#: Prompt processing shorter than this is not worth a "reading the prompt" title.
PHASE_AFTER = 0.3


class ChatLog(VerticalScroll):
    """The scrolling list of messages (focusable, to scroll it from the keyboard)."""

    def watch_has_focus(self, _has_focus: bool) -> None:
        restyle_self_only(self)


class ChatView(Vertical):
    """Chat log and input for one conversation at a time."""

    # ---- messages for the app (bubble)

    @dataclass
    class StateChanged(Message):
        state: str  # "ready" | "generating" | "reading prompt"

    @dataclass
    class StatsChanged(Message):
        """The status figures; None means unknown (shown as "–"), never "keep the old one"."""

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

    @dataclass
    class ConversationShown(Message):
        """Another conversation is on screen (the app restores its settings)."""

        conversation: Conversation

    # ---- messages from the worker thread to this widget (no bubble)

    @dataclass
    class ReplyEnded(Message, bubble=False):
        gen: Generation

    @dataclass
    class Measured(Message, bubble=False):
        conversation: Conversation
        used: int | None
        total: int | None
        dropped: int

    def __init__(self, session: Session, store: HistoryStore | None, *, system: str, id: str | None = None):
        super().__init__(id=id)
        self.session = session
        self.store = store
        self.default_system = system
        self.conversation = Conversation(system=system)
        self._gen: Generation | None = None
        self._gen_turns: list[Turn] = []  # the turns in the streaming reply's prompt, oldest first
        self._attempt = 0
        self._frame: Timer | None = None
        self._gen_view: MessageView | None = None  # the streaming reply's view (no DOM query per tick)
        # the frame budget's clock: this thread's CPU, the wall time and the generating thread's CPU
        # when it started; restarted once the first text shows, so the one-off cost of sending
        # (mounting the turns, saving them) does not use up the streaming frames' budget
        self._ui_cpu0 = self._worker0 = 0.0
        self._wall0 = self._shown_at = 0.0
        self._blink = True
        #: the tool loop of this chat (model thread only), kept while the backend and the tools stay the same
        self._tool_loop: ChatToolLoop | None = None
        self._tool_key: tuple[int, tuple[str, ...], str] | None = None
        self._tool_gen: Generation | None = None  # the reply whose tools run now
        self._chat_tools: ChatTools | None = None
        #: replies whose final save failed (the database was locked): written again with the next save
        self._unsaved_replies: list[Turn] = []
        self._last_notice: tuple[str, float] = ("", 0.0)

    @property
    def chat_tools(self) -> ChatTools:
        """Approvals of this conversation ("Always" lasts until another conversation is shown)."""
        if self._chat_tools is None:
            self._chat_tools = ChatTools(self.app, lambda kind, step: None)
        return self._chat_tools

    def compose(self) -> ComposeResult:
        with ChatLog(id="log"):
            yield Static(id="system-line")
            yield Static(EMPTY_HINT, id="empty-hint")
        yield ChatInput(id="input")

    def on_mount(self) -> None:
        self._show_system()
        self.query_one("#log", VerticalScroll).anchor()
        self._frame = self.set_interval(FRAME_SECONDS, self._pull, pause=True)
        if self.store is not None:
            try:
                self.input.set_recall(self.store.prompts())
            except Exception as exc:  # an unreadable history: the chat still works
                self._notice(f"cannot read the history: {exc}", "error")

    def on_unmount(self) -> None:
        """Quitting mid-reply: the reply is saved as stopped now; the worker stops at its next chunk.

        Saved here, not left to the worker: the model may still be reading a long prompt, and
        the process does not wait for it (the model thread is a daemon, see ModelThread).
        """
        if self._gen is not None:
            self._gen.stop_and_save(self.store)
        self._save_replies()
        if self._chat_tools is not None:
            self._chat_tools.stop.set()
        loop, self._tool_loop = self._tool_loop, None
        if loop is not None:
            loop.close()  # MCP servers end with the app

    # ------------------------------------------------------------------ state

    @property
    def generating(self) -> bool:
        return self._gen is not None

    @property
    def log_view(self) -> VerticalScroll:
        return self.query_one("#log", VerticalScroll)

    @property
    def input(self) -> ChatInput:
        return self.query_one("#input", ChatInput)

    def views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    def _view_for(self, turn: Turn) -> MessageView | None:
        return next((v for v in self.views() if v.turn is turn), None)

    def _show_system(self) -> None:
        system = self.conversation.system.strip()
        line = self.query_one("#system-line", Static)
        line.update(plain(f"System: {system}" if system else "No system prompt"))
        self.query_one("#empty-hint").display = not self.conversation.turns

    def _notice(self, text: str, severity: str = "information") -> None:
        now = time.monotonic()
        if text.startswith("history not saved") and text == self._last_notice[0] and now - self._last_notice[1] < 3:
            return  # one action's writes all failing on a locked database: said once
        self._last_notice = (text, now)
        self.post_message(self.Notice(text, severity))

    def _save(self, write: Callable[[], object]) -> bool:
        """One history write from the UI: when it fails (locked, disk full) say so and go on. True when saved."""
        error = unsaved(write)
        if error is not None:
            self._notice(error, "error")
        return error is None

    # ------------------------------------------------------------------ persistence

    def _save_replies(self) -> None:
        """Write again the replies whose final save failed (quietly: the next write reports a failure)."""
        store = self.store
        for turn in list(self._unsaved_replies):
            if store is not None and turn.id is not None:
                again = functools.partial(store.finish_turn, turn.id, turn.content, turn.status, turn.note, turn.steps)
                if unsaved(again) is not None:
                    return
            self._unsaved_replies.remove(turn)

    def _persist(self, turn: Turn) -> None:
        conv = self.conversation
        if self.store is None:
            return
        self._save_replies()
        store = self.store
        if conv.id is None:
            conv.title = conv.title or make_title(turn.content)
            self.stamp_settings(save=False)
            if self._save(lambda: store.create(conv)):  # a full disk must not lose the chat on screen
                self.post_message(self.TitleChanged(conv.title))
        else:
            conv_id = conv.id
            if _deleted_elsewhere(store, conv_id):  # every later write would fail on the missing row
                conv.id = None
                for each in conv.turns:
                    each.id = None
                if self._save(lambda: store.create(conv)):
                    self._notice("This conversation was deleted in another window; it is saved again as a new one.",
                                 "warning")
                return
            self._save(lambda: store.add_turn(conv_id, turn))

    def stamp_settings(self, *, save: bool = True) -> None:
        """The conversation continues with the session's backend, model and options from now on."""
        conv = self.conversation
        conv.backend = self.session.choice.name
        conv.model = self.session.model_label()
        conv.options = self.session.settings()
        conv.tools = list(self.session.tools)
        conv.tool_choice = self.session.tool_choice
        store = self.store
        if save and store is not None and conv.id is not None:
            self._save(lambda: store.save_meta(conv))

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
        self.input.remember(turn.content)
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
        self._gen_turns = conv.prompt_turns()
        turn = Turn("assistant", "", "streaming", backend=self.session.choice.name, model=self.session.model_label())
        conv.turns.append(turn)
        self._persist(turn)
        view = await self._mount_turn(turn)
        view.start_stream()
        gen = Generation(turn, conv.messages(-1), self.session.options_for(self._attempt))
        if self.session.tools:
            gen.use_tools = self._tool_steps
        self._start(gen)

    def _start(self, gen: Generation) -> None:
        self._gen = gen
        self._gen_view = self._view_for(gen.turn)
        self._restart_budget(gen)
        self._blink = self.input.cursor_blink
        self.input.cursor_blink = False  # a blinking cursor redraws twice a second: ~10 ms CPU/s
        self.post_message(self.StateChanged("generating"))
        self._post_stats(gen)
        if self._frame is not None:
            self._frame.resume()
        self._generate(gen)

    @work(thread=True, group="reply", exit_on_error=False)
    def _generate(self, gen: Generation) -> None:
        store = self.store

        def get_backend() -> Backend:
            backend = self.session.backend()
            gen.turn.backend, gen.turn.model = backend.name, backend.model_id
            turn_id = gen.turn.id
            if store is not None and turn_id is not None:
                error = unsaved(lambda: store.set_author(turn_id, backend.name, backend.model_id))
                if error is not None:  # as a failed tick save: stop rather than show what is not kept
                    raise PromptDSLError(error)
            return backend

        try:
            self.session.model_thread.call(run_generation, gen, get_backend, store)
        finally:  # whatever happened (the app closing, a bug), the reply ends: never "generating" forever
            self.post_message(self.ReplyEnded(gen))

    # ------------------------------------------------------------------ tools (the model thread runs these)

    def _tool_steps(self, backend: Backend, gen: Generation) -> ChatSteps:
        """The core tool loop on the fitted prompt; its steps show as cards as they come."""
        key = (id(backend), tuple(self.session.tools), self.session.tool_choice)
        if self._tool_loop is None or self._tool_key != key:
            if self._tool_loop is not None:
                self._tool_loop.close()
                self._tool_loop = None
            settings = ToolSettings(approver=self._approve, on_event=self._tool_event)
            self._tool_loop = ChatToolLoop(backend, tool_uses(self.session.tools), settings, gen.options,
                                           tool_choice=self.session.tool_choice)
            self._tool_key = key
        assert gen.fitted is not None
        self._tool_gen = gen
        try:
            return self._tool_loop.steps(gen.fitted.prompt.messages, gen.options)
        finally:
            self._tool_gen = None

    def _approve(self, tool: Tool, call: ToolCall) -> bool:
        gen = self._tool_gen
        if gen is None or gen.cancelled:
            raise ToolsStopped("stopped")
        approved = self.chat_tools.approve(tool, call)
        if gen.cancelled:
            raise ToolsStopped("stopped")
        return approved

    def _tool_event(self, kind: str, step: Step) -> None:
        gen = self._tool_gen
        if gen is None:
            return
        if kind == "call" and gen.cancelled:
            raise ToolsStopped("stopped")  # the call will not run: no card for it
        if kind == "result":
            gen.steps.append(step)
        with suppress(RuntimeError):  # the app is closing
            self.app.call_from_thread(partial(self._show_step, gen.turn, kind, step))  # type: ignore[arg-type]
        if gen.cancelled:
            raise ToolsStopped("stopped")

    async def _show_step(self, turn: Turn, kind: str, step: Step) -> None:
        """A card for the step, in the reply's tool box (made, above the reply, with its first card)."""
        box = self._steps_box(turn)
        if box is None:
            view = self._view_for(turn)
            if view is None:
                return
            await self.log_view.mount(Vertical(ToolCard(step, running=kind == "call"), classes="tool-steps"),
                                      before=view)
            return
        show_step(box, kind, step)

    def _steps_box(self, turn: Turn) -> Vertical | None:
        view = self._view_for(turn)
        if view is None:
            return None
        children = list(self.log_view.children)
        at = children.index(view)
        before = children[at - 1] if at else None
        return before if isinstance(before, Vertical) and before.has_class("tool-steps") else None

    def tools_changed(self) -> None:
        """The user picked other tools: this conversation keeps them (and resumes with them)."""
        if self.conversation.id is not None:
            self.stamp_settings()
        else:
            self.conversation.tools = list(self.session.tools)
            self.conversation.tool_choice = self.session.tool_choice

    async def _pull(self) -> None:
        """One tick of the streaming reply: save what came; when a frame is due, show it with the figures."""
        gen = self._gen
        if gen is None:
            if self._frame is not None:
                self._frame.pause()
            return
        gen.save(self.store)  # one row update for every token since the last tick, before anything shows
        view = self._gen_view
        if view is None or not view.is_attached or not self._frame_due(gen, view):
            return
        self._shown_at = time.monotonic()
        if gen.first_at is None and gen.tools_running:
            view.set_phase(f"using tools ({len(gen.steps)} step(s) so far)")
        elif gen.first_at is None:
            waited = gen.waiting_seconds()
            if waited >= PHASE_AFTER:
                size = f" ({gen.fitted.used} tokens)" if gen.fitted and gen.fitted.used else ""
                view.set_phase(f"reading the prompt{size} {waited:.0f} s")
        else:
            view.set_phase("")
        first = not view.source and bool(gen.visible)
        self._mark_left_out(gen)
        await view.show_text(gen.visible)
        self._post_stats(gen)
        if first:
            self._restart_budget(gen)

    def _restart_budget(self, gen: Generation) -> None:
        self._ui_cpu0 = time.thread_time()
        self._wall0 = self._shown_at = time.monotonic()
        self._worker0 = gen.worker_cpu

    def _frame_due(self, gen: Generation, view: MessageView) -> bool:
        """Whether to draw a frame now: within the UI's CPU budget (see UI_SHARE), or overdue.

        The budget is measured, not assumed: this (UI) thread's CPU since the reply started
        against the generating thread's, so the model keeps its speed on a crowded machine
        and the screen moves as often as that allows (many frames a second on a free one).
        """
        now = time.monotonic()
        if now - self._shown_at >= MAX_FRAME_GAP:
            return True
        if not view.source and gen.visible:
            return True  # the first text shows at once
        wall = now - self._wall0
        worker = gen.worker_cpu - self._worker0
        budget = UI_SHARE * (worker if worker > CPU_BOUND * wall else wall)
        return time.thread_time() - self._ui_cpu0 <= budget

    def _post_stats(self, gen: Generation) -> None:
        fitted = gen.fitted
        used = fitted.used + gen.tokens if fitted is not None and fitted.used is not None else None
        total = fitted.total if fitted is not None else self.session_total()
        self.post_message(self.StatsChanged(gen.tokens or None, gen.tokens_per_second(), used, total))

    def session_total(self) -> int | None:
        backend = self.session.peek()
        try:
            return backend.context_length() if backend is not None else None
        except Exception:
            return None

    def _mark_left_out(self, gen: Generation) -> None:
        fitted = gen.fitted
        dropped = set(self._gen_turns[: fitted.dropped]) if fitted is not None else set()
        for view in self.views():
            view.set_left_out(view.turn in dropped)

    async def on_chat_view_reply_ended(self, event: ChatView.ReplyEnded) -> None:
        gen = event.gen
        view = self._view_for(gen.turn)
        if gen.not_sent:
            self._ended(gen)
            await self._not_sent(gen)
            return
        if gen.error and view is not None:
            view.set_note(gen.error)  # before finish, which shows the note under the reply
        if view is not None and view.streaming:
            await view.finish(gen.text, gen.status)
        self._ended(gen)  # after the view shows the end: "not generating" means the reply is final
        if view is not None:
            view.refresh_title()
        if gen.error:
            self._notice(gen.error, "error")
        if gen.final_error is not None:  # the text is on screen; it is saved again with the next write
            self._unsaved_replies.append(gen.turn)
            self._notice(gen.final_error, "error")
        fitted = gen.fitted
        if gen.turn not in self.conversation.turns:
            return  # another conversation is on screen now
        self._mark_left_out(gen)
        if fitted is not None and fitted.dropped:
            self._notice(f"The oldest {fitted.dropped} message(s) were left out to fit the context window; "
                         "they are marked in the transcript.")
        self.post_message(
            self.StatsChanged(
                gen.tokens if gen.tokens else None,
                gen.tokens_per_second(),
                gen.context_used if gen.context_used is not None else (fitted.used if fitted else None),
                fitted.total if fitted else self.session_total(),
            )
        )

    def _ended(self, gen: Generation) -> None:
        if gen is self._gen:
            self._gen = None
            self.input.cursor_blink = self._blink
            self.post_message(self.StateChanged("ready"))

    async def _not_sent(self, gen: Generation) -> None:
        """The last message does not fit the context: keep it, marked "not sent", and drop the empty reply."""
        await self._drop_turn(gen.turn)
        user = self.conversation.last("user")
        if user is not None:
            user.status, user.note = "error", gen.error or ""
            store, user_id, note = self.store, user.id, user.note
            if store is not None and user_id is not None:
                self._save(lambda: store.update_turn(user_id, user.content, "error", note))
            view = self._view_for(user)
            if view is not None:
                view.refresh_title()
        self._notice(gen.error or "", "error")
        self._measure(self.conversation)

    async def cancel(self) -> bool:
        """Stop the streaming reply now, keeping its text. False when nothing streams."""
        gen = self._gen
        if gen is None:
            return False
        text = gen.cancel()
        self._gen = None
        self.input.cursor_blink = self._blink
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
        if turns[-1].status == "error":
            turns[-1].status, turns[-1].note = "done", ""  # try the unsent message again
            store, last = self.store, turns[-1]
            last_id = last.id
            if store is not None and last_id is not None:
                self._save(lambda: store.update_turn(last_id, last.content, "done", ""))
            view = self._view_for(turns[-1])
            if view is not None:
                view.refresh_title()
        self._attempt += 1
        await self._reply()

    async def continue_reply(self) -> None:
        """Continue the last reply where it stopped (cut at max_tokens, stopped or interrupted)."""
        if self.generating:
            self._notice("A reply is still streaming.", "warning")
            return
        turn = self.conversation.turns[-1] if self.conversation.turns else None
        if turn is None or turn.role != "assistant" or not turn.content.strip():
            self._notice("Nothing to continue: the last message is not a reply with text.", "warning")
            return
        view = self._view_for(turn)
        if view is None:
            return
        conv = self.conversation
        self._gen_turns = conv.prompt_turns()
        messages = (*conv.messages(), ChatMessage("user", CONTINUE_PROMPT))
        view.start_stream()
        self._start(Generation(turn, messages, self.session.options_for(self._attempt), prefix=turn.content))

    async def _drop_turn(self, turn: Turn) -> None:
        box = self._steps_box(turn)
        if box is not None:
            await box.remove()
        self.conversation.turns.remove(turn)
        view = self._view_for(turn)
        if view is not None:
            await view.stop_stream()
            await view.remove()
        store, turn_id = self.store, turn.id
        if turn in self._unsaved_replies:
            self._unsaved_replies.remove(turn)
        if store is not None and turn_id is not None:
            self._save(lambda: store.delete_turn(turn_id))  # failed: the old reply comes back on reopening

    # ------------------------------------------------------------------ conversations

    async def show(self, conv: Conversation) -> None:
        """Replace what is shown with ``conv`` (a new or a resumed conversation)."""
        await self.cancel()
        self._save_replies()
        await self.log_view.remove_children(".tool-steps")
        await self.log_view.remove_children(MessageView)
        self.conversation = conv
        self._attempt = 0
        if self._chat_tools is not None:
            self._chat_tools.stop.set()
            self._chat_tools = None  # "Always" was for the other conversation
        self._show_system()
        shown: list[Vertical | MessageView] = []
        for t in conv.turns:
            if t.steps:
                shown.append(Vertical(*(ToolCard(Step.from_dict(d)) for d in t.steps), classes="tool-steps"))
            shown.append(MessageView(t))
        await self.log_view.mount_all(shown)
        self.log_view.anchor()
        self.log_view.scroll_end(animate=False)
        self.post_message(self.TitleChanged(conv.title or "New conversation"))
        self.post_message(self.StatsChanged(None, None, None, self.session_total()))
        self.post_message(self.ConversationShown(conv))
        self._measure(conv)

    async def new(self) -> None:
        await self.show(Conversation(system=self.default_system))

    async def resume(self, conv_id: int) -> None:
        if self.store is None:
            return
        if self._gen is not None:  # a reply streaming now is stopped and saved first: reopened, it reads as stopped
            self._gen.stop_and_save(self.store)
            await self.cancel()
        try:
            conv = self.store.load(conv_id)
        except PromptDSLError as exc:
            self._notice(str(exc), "error")
            return
        except Exception as exc:  # sqlite3.DatabaseError (a damaged file): a notice, not a crash
            self._notice(f"cannot read the history: {exc}", "error")
            return
        await self.show(conv)

    def remeasure(self) -> None:
        """The backend changed: the context figures are the new one's (or unknown)."""
        self.post_message(self.StatsChanged(None, None, None, self.session_total()))
        self._measure(self.conversation)

    @work(thread=True, group="measure", exclusive=True, exit_on_error=False)
    def _measure(self, conv: Conversation) -> None:
        """What the next turn will take of the context: the prompt as it would be fitted (a thread)."""
        self.session.model_thread.call(self._measure_now, conv)

    def _measure_now(self, conv: Conversation) -> None:
        try:
            backend = self.session.backend()
            total = backend.context_length()
            messages = conv.messages()
            if not any(m.role != "system" for m in messages):
                used = backend.count_tokens(conv.prompt()) if messages else 0
                self.post_message(self.Measured(conv, used, total, 0))
                return
            fitted = fit_prompt(messages, backend, self.session.generation.max_tokens)
        except ContextFull:
            return
        except Exception:  # the status just stays unknown; sending reports real errors
            return
        self.post_message(self.Measured(conv, fitted.used, fitted.total, fitted.dropped))

    def on_chat_view_measured(self, event: ChatView.Measured) -> None:
        if event.conversation is not self.conversation or self.generating:
            return
        dropped = set(self.conversation.prompt_turns()[: event.dropped])
        for view in self.views():
            view.set_left_out(view.turn in dropped)
        self.post_message(self.StatsChanged(None, None, event.used, event.total))

    def set_system(self, text: str) -> bool:
        """Change the system prompt of this conversation and of new ones; False when saving it failed."""
        conv = self.conversation
        conv.system = text
        self.default_system = text
        self._show_system()
        store = self.store
        if store is not None and conv.id is not None:
            return self._save(lambda: store.save_meta(conv))
        return True


def _deleted_elsewhere(store: HistoryStore, conv_id: int) -> bool:
    """Whether another window deleted the conversation (a locked database says nothing: the write will)."""
    try:
        return store.title(conv_id) is None
    except Exception:
        return False
