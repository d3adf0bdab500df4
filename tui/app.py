"""The promptdsl terminal UI: chat with a model, run specs, keep history.

Built on the library API only: a chat turn is a chat-mode :class:`~promptdsl.prompt.Prompt`
streamed through ``Backend.stream``; a spec run is a :class:`~promptdsl.runner.Runner`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult, SuspendNotSupported, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.widgets import Header

from promptdsl.backend import Backend, split_options
from promptdsl.errors import PromptDSLError

from .clipboard import copy_and_tell
from .conversation import DEFAULT_SYSTEM, Conversation
from .export import ExportExists, export_markdown
from .history import HistoryStore, unsaved
from .screens.ask import Confirm, TextPrompt
from .screens.backend import BackendScreen
from .screens.help import HelpScreen, key_label
from .screens.history import HistoryScreen
from .screens.path_prompt import PathPrompt
from .screens.spec_picker import SpecPicker
from .screens.spec_run import SpecScreen
from .screens.system_prompt import SystemPromptScreen
from .screens.tools import ToolsScreen
from .session import BackendChoice, Session
from .specs import SpecEntry, discover
from .widgets.chat_view import ChatView
from .widgets.footer import KeyFooter
from .widgets.message import MessageView
from .widgets.status import StatusBar

#: Keys handled inside widgets (not app bindings), for the help screen.
WIDGET_KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Shift+Enter / Ctrl+J", "new line in the message"),
    ("Up / Down", "earlier messages you sent (from an empty box; Down goes back)"),
    ("Esc", "stop the streaming reply (the text so far is kept)"),
    ("Tab / Shift+Tab", "move focus; messages can be focused"),
    ("c", "copy the focused message"),
    ("Ctrl+P", "command palette: every action by name"),
    ("Ctrl+Q", "quit"),
)


class PromptDSLApp(App[None]):
    """Chat and instruction following on any installed promptdsl backend."""

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "promptdsl"
    SUB_TITLE = "New conversation"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+s", "specs", "Specs"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+n", "new_chat", "New"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+b", "backend", "Backend"),
        Binding("ctrl+t", "system_prompt", "System"),
        Binding("ctrl+f", "export", "Export"),
        Binding("f3", "tools", "Tools"),
        Binding("ctrl+e", "editor", "$EDITOR", show=False, priority=True),  # over the box's Ctrl+E (End stays)
        Binding("ctrl+l", "continue_reply", "Continue", show=False),
        Binding("f2", "rename", "Rename", show=False),
        Binding("ctrl+g", "copy_last", "Copy reply", show=False),
        Binding("escape", "cancel", "Stop", show=False),
    ]

    def __init__(
        self,
        *,
        specs: Sequence[Path] = (),
        backend: str | None = None,
        model: str | None = None,
        options: Mapping[str, Any] | None = None,
        backend_instance: Backend | None = None,
        system: str | None = None,
        history: HistoryStore | None = None,
        resume: int | None = None,
        cwd: Path | None = None,
        tools: Sequence[str] = (),
        tool_choice: str = "auto",
    ) -> None:
        super().__init__()
        self.session = Session.from_cli(backend, model, options or {})
        if backend_instance is not None:
            self.session = Session(
                BackendChoice(backend_instance.name, backend_instance.model, {}),
                self.session.user_generation,
                backend=backend_instance,
            )
        self.session.tools = list(tools)
        self.session.tool_choice = tool_choice
        self._launch_tools = bool(tools)  # `chat -c -T …`: the flag's tools win over the resumed ones
        self.spec_options = dict(options or {})
        self.spec_paths = list(specs)
        self.cwd = cwd or Path.cwd()
        self.store = history
        self.resume_id = resume
        #: flags given at launch win over a resumed conversation's own settings
        self._launch_explicit = backend is not None or model is not None or bool(options)
        #: the form values of each spec opened, by file (reopening a spec shows them again)
        self.spec_values: dict[str, dict[str, Any]] = {}
        saved = history.get_setting("system") if history is not None and system is None else None
        self.system = system if system is not None else saved if saved is not None else DEFAULT_SYSTEM

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notification is plain text, whoever asks (screens and widgets pass ``markup=True``).

        They quote titles, paths, values typed, model and tool errors: as markup, ``[/]`` in one
        would end the app and ``[@click=app.quit]`` would be a live action.
        """
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def _unsaved(self, write: Callable[[], object]) -> bool:
        """Run a history write; when it fails (database locked, disk full) say so. True when saved."""
        error = unsaved(write)
        if error is not None:
            self.notify(error, title="Error", severity="error", timeout=10)
        return error is None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield self.chat
        yield self.status
        yield KeyFooter()

    @cached_property
    def chat(self) -> ChatView:
        """The chat (kept, not queried: a message that arrives while the app shuts down still finds it)."""
        return ChatView(self.session, self.store, system=self.system, id="chat")

    @cached_property
    def status(self) -> StatusBar:
        return StatusBar(id="status")

    def on_resize(self, event: events.Resize) -> None:
        self._fit_input(event.size.height)

    def _fit_input(self, height: int) -> None:
        """The message box grows with a draft to 10 rows, but on a small terminal to 40% of it at most:
        a long draft left the chat one row."""
        self.chat.input.styles.max_height = max(3, min(10, height * 2 // 5))

    async def on_mount(self) -> None:
        self._fit_input(self.size.height)
        self.status.backend = self.session.choice.name
        self.status.model = self.session.choice.model or "default"
        self.status.tools = tuple(self.session.tools)
        self.chat.query_one("#input").focus()
        if self.resume_id is not None:
            await self.chat.resume(self.resume_id)
        self._load_backend()
        if len(self.spec_paths) == 1 and self.spec_paths[0].is_file():
            entry = discover(self.spec_paths, self.cwd)[0]
            if entry.spec is not None:
                self._open_spec(entry)
                return
        if self.spec_paths:
            self.action_specs()

    def on_unmount(self) -> None:
        self.session.model_thread.close()  # a reply still running finishes and saves on its own

    @work(thread=True, group="backend", exclusive=True, exit_on_error=False)
    def _load_backend(self, choice: BackendChoice | None = None, restore: bool = False) -> None:
        """Load (or switch to) a backend off the UI thread; on error the app keeps the old one.

        ``restore``: a resumed conversation's settings, switched to only when the loaded
        backend cannot serve them (see :meth:`_restored`).
        """
        self.call_from_thread(self._set_state, "loading")
        session = self.session
        try:
            if choice is None:
                backend, switched = session.model_thread.call(session.backend), False
            elif restore:
                backend, switched = session.model_thread.call(self._restored, choice, self.chat.conversation)
            else:
                backend, switched = session.model_thread.call(session.switch, choice), True
            total = backend.context_length()
        except Exception as exc:
            text = str(exc) if isinstance(exc, PromptDSLError) else f"{type(exc).__name__}: {exc}"
            self.call_from_thread(self._backend_failed, text)
            return
        self.call_from_thread(self._backend_ready, backend, total, switched)

    def _restored(self, choice: BackendChoice, conv: Conversation) -> tuple[Backend, bool]:
        """The backend for resumed conversation ``conv`` (model thread): the current one when it is the
        same model with the same settings, else a switch. Returns it and whether it switched.

        Another conversation opened meanwhile (Ctrl+N during the load) keeps the current backend:
        switching then would hand it the resumed one's settings unseen.
        """
        session = self.session
        if session.other_settings(choice.name, choice.options) and self.chat.conversation is conv:
            # another backend or settings: no need to load the default to know
            return session.switch(choice), True
        try:
            current = session.backend()
        except Exception:  # the default cannot load (no key…): the conversation's own may
            if self.chat.conversation is not conv:
                raise
            return session.switch(choice), True
        if self.chat.conversation is conv and session.differs(choice.name, choice.model or "", choice.options):
            return session.switch(choice), True
        return current, False

    def _set_state(self, state: str) -> None:
        if not self.chat.generating:
            self.status.state = state

    def _backend_ready(self, backend: Backend, total: int | None, switched: bool) -> None:
        self.status.backend = backend.name
        self.status.model = backend.model_id
        self.status.context_total = total
        self.status.state = "generating" if self.chat.generating else "ready"
        self.chat.remeasure()  # the context figures are this backend's (or unknown)
        if switched:
            self.chat.stamp_settings()  # the open conversation continues on it (kept for resume)
            self.notify(f"Now using {backend.name} · {backend.model_id}", title="Backend")

    def _backend_failed(self, error: str) -> None:
        self.status.state = "ready" if self.session.peek() is not None else "error"
        self.notify(error, title="Backend error", severity="error", timeout=10)

    # ------------------------------------------------------------------ messages from the chat

    def on_chat_view_state_changed(self, event: ChatView.StateChanged) -> None:
        self.status.state = event.state

    def on_chat_view_stats_changed(self, event: ChatView.StatsChanged) -> None:
        status = self.status
        status.tokens = event.tokens
        status.tokens_per_second = event.tokens_per_second
        status.context_used = event.context_used
        status.context_total = event.context_total

    def on_chat_view_conversation_shown(self, event: ChatView.ConversationShown) -> None:
        """A resumed conversation gets back its backend, model, options and tools."""
        conv = event.conversation
        if conv.id is not None:
            if self._launch_tools and conv.id == self.resume_id:
                conv.tools, conv.tool_choice = list(self.session.tools), self.session.tool_choice
                store = self.store
                if store is not None:
                    self._unsaved(lambda: store.save_meta(conv))
            else:
                self.session.tools, self.session.tool_choice = list(conv.tools), conv.tool_choice
            self.status.tools = tuple(self.session.tools)
        if not conv.backend:
            return
        if self._launch_explicit and conv.id == self.resume_id:
            self.chat.stamp_settings()  # `chat -c --backend …`: the flags win from now on
            return
        choice = BackendChoice(conv.backend, conv.model or None, conv.options)
        if self.session.peek() is None:
            # Not loaded yet (`chat -c`): "smollm2" and the default may be one model, which only
            # loading tells. The worker loads the default first and switches only if it differs,
            # where comparing names here loaded the same model twice. The generation settings come
            # back now: a message sent during the load uses them.
            self._restore_generation(choice)
            self._load_backend(choice, restore=True)
        elif self.session.differs(conv.backend, conv.model, conv.options):
            self._load_backend(choice)
        else:
            self._restore_generation(choice)

    def _restore_generation(self, choice: BackendChoice) -> None:
        """The same backend instance serves ``choice``: only its generation settings come back."""
        gen, _ = split_options(choice.options)
        if gen != self.session.user_generation:
            self.session.set_generation(gen)

    def on_chat_view_title_changed(self, event: ChatView.TitleChanged) -> None:
        self.sub_title = event.title

    def on_chat_view_notice(self, event: ChatView.Notice) -> None:
        title = "Error" if event.severity == "error" else ""
        timeout = 10 if event.severity == "error" else 5
        self.notify(event.text, title=title, severity=event.severity, timeout=timeout)  # type: ignore[arg-type]

    @on(MessageView.CopyRequested)
    def _copy(self, event: MessageView.CopyRequested) -> None:
        self._copy_text(event.text)

    def _copy_text(self, text: str) -> None:
        copy_and_tell(self, text)

    # ------------------------------------------------------------------ actions

    async def action_cancel(self) -> None:
        """Esc: stop the reply; on other screens Esc closes them (their own binding)."""
        if await self.chat.cancel():
            self.notify("Reply stopped; the text so far is kept.", timeout=3)

    #: Keys that act on the open conversation: only while it is seen (not from a spec screen over it).
    CHAT_ONLY: ClassVar[frozenset[str]] = frozenset({"editor", "continue_reply", "export", "rename"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Ctrl+E is the editor only on the chat screen (elsewhere the key stays the widget's), and
        Ctrl+L, Ctrl+F and F2 would continue, export or rename a conversation the user cannot see."""
        if action in self.CHAT_ONLY:
            return self.screen is self.screen_stack[0]
        return True

    def _busy_with_dialog(self) -> bool:
        """A dialog is open: keys that open screens wait until it is closed."""
        return isinstance(self.screen, ModalScreen)

    def _back_to_chat(self) -> None:
        """Leave spec screens (stopping their runs) so what comes next is seen, not stacked behind."""
        while isinstance(self.screen, SpecScreen):
            self.pop_screen()

    async def action_new_chat(self) -> None:
        if self._busy_with_dialog():
            return
        self._back_to_chat()
        await self.chat.new()
        self.chat.input.focus()

    async def action_regenerate(self) -> None:
        await self.chat.regenerate()

    async def action_continue_reply(self) -> None:
        if not self._busy_with_dialog():
            await self.chat.continue_reply()

    def action_rename(self) -> None:
        conv = self.chat.conversation
        if self._busy_with_dialog():
            return
        if conv.id is None or self.store is None:
            self.notify("Send a message first: a new conversation is saved with its first message.",
                        severity="warning")
            return

        def done(title: str | None) -> None:
            store, conv_id = self.store, conv.id
            if title is not None and store is not None and conv_id is not None:
                conv.title = title  # kept on screen (and saved with the next change) even if this write fails
                self.sub_title = title
                if self._unsaved(lambda: store.rename(conv_id, title)):
                    self.notify(f"Renamed to “{title}”.")

        self.push_screen(TextPrompt("Rename the conversation:", conv.title), done)

    def action_editor(self) -> None:
        """Ctrl+E: write the message in $VISUAL / $EDITOR; saving and quitting puts the text in the box."""
        if self.screen is not self.screen_stack[0]:
            return
        box = self.chat.input
        command = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
        fd, name = tempfile.mkstemp(prefix="promptdsl-message-", suffix=".md")
        path = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(box.text)
            try:
                with self.suspend():
                    code = subprocess.call([*command, str(path)])
            except SuspendNotSupported:  # no terminal to hand over (tests, a pipe): run it as it is
                code = subprocess.call([*command, str(path)], stdin=subprocess.DEVNULL)
            if code != 0:
                self.notify(f"{command[0]} exited with {code}; the message is unchanged.", severity="warning")
                return
            text = path.read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            self.notify(f"cannot run the editor {command[0]!r}: {exc.strerror or exc}", severity="error")
            return
        finally:
            path.unlink(missing_ok=True)
        box.text = text
        box.move_cursor(box.document.end)
        box.focus()

    def action_copy_last(self) -> None:
        turn = self.chat.conversation.last("assistant")
        if turn is None or not turn.content:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self._copy_text(turn.content)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_help()))

    def key_help(self) -> list[tuple[str, str]]:
        """Every key: the app's bindings plus the keys widgets handle themselves."""
        rows = [(k, d) for k, d in WIDGET_KEYS]
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.action != "cancel":
                desc = _ACTION_HELP.get(binding.action, binding.description)
                keys = " / ".join(key_label(k) for k in binding.key.split(","))
                rows.append((keys, desc))
        return rows

    def action_system_prompt(self) -> None:
        if self._busy_with_dialog():
            return

        def done(text: str | None) -> None:
            if text is not None:
                store = self.store
                saved = self.chat.set_system(text)
                if saved and store is not None:  # new chats after a restart get it too
                    saved = self._unsaved(lambda: store.set_setting("system", text))
                if saved:
                    self.notify("System prompt updated.")

        self.push_screen(SystemPromptScreen(self.chat.conversation.system), done)

    def action_backend(self) -> None:
        if self._busy_with_dialog():
            return

        def done(choice: BackendChoice | None) -> None:
            if choice is not None:
                self._load_backend(choice)

        models = self.store.models() if self.store is not None else []
        current = self.session.choice  # shown with the generation settings too: the field is all of them
        self.push_screen(BackendScreen(BackendChoice(current.name, current.model, self.session.settings()), models),
                         done)

    def action_tools(self) -> None:
        if self._busy_with_dialog():
            return

        def done(picked: tuple[list[str], str] | None) -> None:
            if picked is None or picked == (self.session.tools, self.session.tool_choice):
                return
            self.session.tools, self.session.tool_choice = picked
            self.status.tools = tuple(picked[0])
            self.chat.tools_changed()
            first = " (a call first in every reply)" if picked[1] == "required" and picked[0] else ""
            self.notify(f"Tools: {', '.join(picked[0])}{first}" if picked[0] else "No tools: replies answer directly.")

        from promptdsl.tools.registry import list_tools

        self.push_screen(ToolsScreen(self.session.tools, list_tools(), self.session.tool_choice), done)

    async def action_history(self) -> None:
        if self._busy_with_dialog():
            return
        if self.store is None:
            self.notify("History is off in this session.", severity="warning")
            return
        self._back_to_chat()

        async def done(conv_id: int | None) -> None:
            if conv_id is not None:
                await self.chat.resume(conv_id)
            else:  # the list may have renamed the open conversation: its next save must not undo that
                self._reload_title(store)
            self.sub_title = self.chat.conversation.title or "New conversation"
            self.chat.input.focus()

        store = self.store
        self.push_screen(HistoryScreen(store, self.chat.conversation.id), done)

    def _reload_title(self, store: HistoryStore) -> None:
        conv = self.chat.conversation
        if conv.id is not None:
            try:
                title = store.title(conv.id)
            except Exception:  # a locked or closed database: the title on screen stays
                return
            if title:
                conv.title = title

    def action_export(self, path: Path | None = None, overwrite: bool = False) -> None:
        conv = self.chat.conversation
        try:
            written = export_markdown(conv, path, overwrite=overwrite)
        except ExportExists as exc:
            def answer(yes: bool | None) -> None:
                if yes:
                    self.action_export(path, overwrite=True)

            self.push_screen(Confirm(f"{exc.path} exists. Replace it?", "Replace"), answer)
            return
        except PromptDSLError as exc:
            self.notify(str(exc), title="Export", severity="warning")
            return
        self.notify(str(written), title="Exported to Markdown", timeout=10)

    def action_export_to(self) -> None:
        def done(path: Path | None) -> None:
            if path is not None:
                self.action_export(path)

        self.push_screen(PathPrompt("Export the conversation to (a .md file or a folder):", ""), done)

    def action_specs(self) -> None:
        if self._busy_with_dialog():
            return
        self._back_to_chat()
        entries = discover(self.spec_paths, self.cwd)

        def done(entry: SpecEntry | None) -> None:
            if entry is not None:
                self._open_spec(entry)

        self.push_screen(SpecPicker(entries), done)

    def _open_spec(self, entry: SpecEntry) -> None:
        assert entry.spec is not None
        self.push_screen(SpecScreen(entry.spec, self.session, self.spec_options, store=self.store,
                                    remembered=self.spec_values))

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every action by name. Those on the open conversation only over the chat itself: from a spec
        screen they would regenerate, export or rename a conversation the user cannot see (as CHAT_ONLY)."""
        yield from super().get_system_commands(screen)
        on_chat = screen is self.screen_stack[0]
        yield SystemCommand("New conversation", "Start an empty chat (Ctrl+N)", self.action_new_chat)
        yield SystemCommand("Open conversation", "Resume a saved chat from history (Ctrl+O)", self.action_history)
        yield SystemCommand("Run a spec", "Pick a task spec, fill its inputs and run it (Ctrl+S)", self.action_specs)
        if on_chat:
            yield SystemCommand("Regenerate reply", "Replace the last reply with a new one (Ctrl+R)",
                                self.action_regenerate)
            yield SystemCommand("Stop reply", "Stop the streaming reply, keep its text (Esc)", self.action_cancel)
        yield SystemCommand("Edit system prompt", "Change the system prompt (Ctrl+T)", self.action_system_prompt)
        yield SystemCommand("Switch backend or model", "Pick an installed backend and a model (Ctrl+B)",
                            self.action_backend)
        if on_chat:
            yield SystemCommand("Continue reply", "Continue a reply cut at max_tokens or stopped (Ctrl+L)",
                                self.action_continue_reply)
        yield SystemCommand("Tools", "Choose the tools the chat may call (F3)", self.action_tools)
        if on_chat:
            yield SystemCommand("Rename conversation", "Give the open conversation another title (F2)",
                                self.action_rename)
            yield SystemCommand("Compose in $EDITOR", "Write the message in your editor (Ctrl+E)", self.action_editor)
            yield SystemCommand("Copy last reply", "Copy the last reply to the clipboard (Ctrl+G)",
                                self.action_copy_last)
            yield SystemCommand("Export to Markdown", "Save the chat as Markdown under the data dir (Ctrl+F)",
                                self.action_export)
            yield SystemCommand("Export to Markdown as…", "Save the chat as Markdown to a path you choose",
                                self.action_export_to)
        yield SystemCommand("Help", "List every key (F1)", self.action_help)


_ACTION_HELP = {
    "help": "this help",
    "specs": "pick a spec and run it (form, compiled prompt, result)",
    "history": "open a saved conversation",
    "new_chat": "start a new conversation",
    "regenerate": "regenerate the last reply",
    "backend": "switch backend and model",
    "system_prompt": "edit the system prompt",
    "copy_last": "copy the last reply",
    "editor": "write the message in $VISUAL / $EDITOR",
    "continue_reply": "continue the last reply (cut at max_tokens, stopped or interrupted)",
    "rename": "rename the conversation",
    "tools": "the tools the chat may call (tick installed ones, add NAME:KEY=VALUE or mcp:COMMAND)",
    "export": "export the conversation to Markdown (under the data dir; the palette also has Export as…)",
}
