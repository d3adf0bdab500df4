"""Bad input never ends the terminal UI: markup-like text, a locked history, quitting mid-prompt, search wildcards.

Scripted backends only (fast tier). Each test drives the real app through Pilot and looks
at what is on screen and in the history database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui import history as history_module
from promptdsl_tui.conversation import Conversation, Turn
from promptdsl_tui.history import HistoryStore
from promptdsl_tui.screens.backend import BackendScreen
from promptdsl_tui.screens.history import HistoryScreen
from promptdsl_tui.screens.spec_run import SpecScreen
from promptdsl_tui.screens.tools import ToolsScreen
from promptdsl_tui.session import ModelThread
from promptdsl_tui.widgets.tool_card import ToolCard
from test_tui_support import ROOT, SIZE, ScriptedBackend, wait_for
from test_tui_support import RecordingApp as App
from textual import events
from textual.widgets import Input, Select, SelectionList, TextArea
from tools_support import ScriptedTools

from promptdsl.backend import Constraint, GenerationOptions
from promptdsl.errors import BackendError
from promptdsl.prompt import Prompt

pytestmark = pytest.mark.anyio

#: Text that Textual would read as markup: closing tags with nothing to close end the app with
#: MarkupError; an action tag would become a live, clickable ``app.quit``. One text holds both
#: (``[/INST]`` alone ended the app before the fix), so the fast tier drives each screen once.
MARKUP = ["[/INST][@click=app.quit]x[/]"]
TALL = (110, 40)


def make(store: HistoryStore, backend: Any, **kwargs: Any) -> App:
    return App(backend_instance=backend, history=store, cwd=store.path.parent, **kwargs)


def shown(app: App) -> str:
    """Every line on the screen as plain text (what the user sees: borders, titles and toasts included).

    Toasts show only in apps run with ``run_test(notifications=True)``.
    """
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def ready(pilot: Any, app: App) -> None:
    await wait_for(pilot, lambda: app.session.peek() is not None and app.status.state == "ready", 10, "backend")


async def send(pilot: Any, app: App, text: str) -> None:
    """Paste ``text`` (brackets and all) into the box and send it; wait for the reply to end."""
    before = len(app.chat.conversation.turns)
    app.post_message(events.Paste(text))
    await wait_for(pilot, lambda: app.chat.input.text == text, 10, "paste")
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(app.chat.conversation.turns) > before and not app.chat.generating, 10, "reply")
    await pilot.pause()


def assert_alive(app: App) -> None:
    assert app.is_running and app.return_code is None and app._exception is None


class FailingBackend(ScriptedBackend):
    """A backend whose error message quotes the text (as a server echoing the prompt would)."""

    def __init__(self, message: str) -> None:
        super().__init__([], released=9)
        self.message = message

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        raise BackendError(self.message, backend=self.name)


# --------------------------------------------------------------------------- 1: markup in text shown


@pytest.mark.parametrize("bad", MARKUP)
async def test_markup_in_messages_system_prompt_and_titles_is_shown_literally(store: HistoryStore, bad: str) -> None:
    app = make(store, ScriptedBackend([f"reply {bad} ", "[b]bold[/b]"], released=9))
    async with app.run_test(size=TALL, notifications=True) as pilot:
        await ready(pilot, app)
        await send(pilot, app, f"question {bad}")
        # Ctrl+T: the system prompt line of the chat
        await pilot.press("ctrl+t")
        await pilot.pause()
        app.screen.query_one(TextArea).text = f"Be kind {bad}"
        await pilot.press("ctrl+s")
        await pilot.pause()
        # F2: the new title is quoted in a notification
        await pilot.press("f2")
        await pilot.pause()
        app.screen.query_one("#answer", Input).value = f"title {bad}"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert_alive(app)
        screen = shown(app)
        assert f"question {bad}" in screen
        assert f"reply {bad} [b]bold[/b]" in screen  # balanced tags do not vanish either
        assert f"System: Be kind {bad}" in screen
        assert f"Renamed to “title {bad}”." in screen
        assert all(not n.markup for n in app._notifications)
        conv_id = app.chat.conversation.id
    assert app._exception is None
    # the saved conversation opens again (it used to crash on every reopen)
    again = make(store, ScriptedBackend([]), resume=conv_id)
    async with again.run_test(size=TALL) as pilot:
        await wait_for(pilot, lambda: len(again.chat.conversation.turns) == 2, 10, "resume")
        assert_alive(again)
        screen = shown(again)
        assert f"question {bad}" in screen and f"reply {bad}" in screen and f"System: Be kind {bad}" in screen
        assert f"title {bad}" in screen  # the header


@pytest.mark.parametrize("bad", MARKUP)
async def test_markup_in_a_backend_error_shows_in_the_reply_title(store: HistoryStore, bad: str) -> None:
    app = make(store, FailingBackend(f"server said {bad}"))
    async with app.run_test(size=TALL, notifications=True) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "hello")
        await pilot.pause(0.2)
        assert_alive(app)
        turn = app.chat.conversation.turns[-1]
        assert turn.status == "error" and bad in turn.note
        screen = shown(app)
        assert f"server said {bad}" in screen  # in the reply's border title and in the notification
        conv_id = app.chat.conversation.id
    again = make(store, ScriptedBackend([]), resume=conv_id)
    async with again.run_test(size=TALL) as pilot:
        await wait_for(pilot, lambda: len(again.chat.conversation.turns) == 2, 10, "resume")
        assert_alive(again)
        assert f"server said {bad}" in shown(again)


@pytest.mark.parametrize("bad", MARKUP)
async def test_markup_in_tool_arguments_and_results_shows_on_the_cards(
    store: HistoryStore, tmp_path: Path, bad: str
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "p.txt").write_text(f"line {bad}\n", encoding="utf-8")
    backend = ScriptedTools([("calculator", {"expression": bad}), ("read_file", {"path": "p.txt"})], answer="done")
    app = make(store, backend, tools=["calculator", f"read_file:root={notes}"], tool_choice="required")
    async with app.run_test(size=TALL) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "go")
        await wait_for(pilot, lambda: len(app.chat.query(ToolCard)) == 2, 10, "cards")
        await pilot.pause(0.2)
        assert_alive(app)
        titles = [str(card.title) for card in app.chat.query(ToolCard)]
        assert f'"expression": "{bad}"' in titles[0] and "✗" in titles[0]
        assert f"✓ line {bad}" in titles[1]
        screen = shown(app)
        assert f'"expression": "{bad}"' in screen and f"✓ line {bad}" in screen
        assert app.chat.conversation.turns[-1].content == "done"
        conv_id = app.chat.conversation.id
    again = make(store, ScriptedBackend([]), resume=conv_id)
    async with again.run_test(size=TALL) as pilot:
        await wait_for(pilot, lambda: len(again.chat.query(ToolCard)) == 2, 10, "resume")
        await pilot.pause()
        assert_alive(again)
        assert f"✓ line {bad}" in shown(again)


@pytest.mark.parametrize("bad", MARKUP)
async def test_markup_in_the_history_list_and_its_delete_question(store: HistoryStore, bad: str) -> None:
    store.create(Conversation(title=f"chat {bad}", turns=[Turn("user", "hi"), Turn("assistant", "ok")]))
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=TALL, notifications=True) as pilot:
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), 10, "history")
        await pilot.press("delete")
        await pilot.pause()
        assert f"Delete “chat {bad}” (2 messages)?" in shown(app)
        await pilot.press("delete")
        await pilot.pause(0.2)
        assert_alive(app)
        assert f"Deleted “chat {bad}”." in shown(app)
        assert store.count() == 0


@pytest.mark.parametrize("bad", MARKUP)
async def test_markup_in_dialog_error_lines_and_tool_entries(store: HistoryStore, bad: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(store.path.parent)  # a tool's root is found from the working folder, as with -T
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=TALL) as pilot:
        await ready(pilot, app)
        # Ctrl+B: an option value is quoted in the error line
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, BackendScreen), 10, "backend dialog")
        app.screen.query_one("#backend", Select).value = "llamacpp"
        await pilot.pause()
        options = app.screen.query_one("#options", Input)
        options.value = f"seed={bad}"
        options.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert_alive(app)
        assert f"'{bad}' is not of type 'integer'" in shown(app)
        await pilot.press("escape")
        await pilot.pause()
        # F3: an entry that fails is quoted; one that passes is listed as typed
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen), 10, "tools dialog")
        box = app.screen.query_one("#tools-add", Input)
        box.focus()
        box.value = f"calculater{bad}"
        await pilot.press("enter")
        await pilot.pause()
        assert_alive(app)
        assert f"calculater{bad}" in shown(app)  # the error line quotes it
        Path(f"{bad}y").mkdir(parents=True)  # a root must be an existing folder
        box.value = f"read_file:root={bad}y"  # passes the check
        await pilot.press("enter")
        await pilot.pause()
        assert_alive(app)
        listing: SelectionList[str] = app.screen.query_one(SelectionList)
        assert f"read_file:root={bad}y" in listing.selected
        assert f"read_file:root={bad}y" in shown(app)  # listed as typed


@pytest.mark.parametrize("bad", MARKUP)
async def test_markup_in_spec_form_errors_and_spec_texts(store: HistoryStore, tmp_path: Path, bad: str) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent("""\
        version: 1
        name: shapes
        inputs:
          n: {type: integer, description: "a count [/] of things"}
          word: {type: string, pattern: "^[a-z]+$", maxLength: 20}
          kind: {enum: ["[/INST]", "plain"]}
        template: "{{ n }} {{ word }} {{ kind }}"
        output: {type: text}
        """), encoding="utf-8")
    app = make(store, ScriptedBackend(["x"], released=9), specs=[spec])
    async with app.run_test(size=TALL) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SpecScreen), 10, "spec screen")
        screen = app.screen
        assert isinstance(screen, SpecScreen)
        screen.form.set_value("n", bad)
        screen.form.set_value("word", bad)
        await pilot.press("ctrl+r")
        await pilot.pause(0.2)
        assert_alive(app)
        errors = screen.form.errors()
        assert f"'{bad}' is not an integer" in errors["n"] and bad in errors["word"]
        text = shown(app)
        assert f"'{bad}' is not an integer" in text
        assert "a count [/] of things" in text and "matching ^[a-z]+$" in text and "[/INST]" in text


# --------------------------------------------------------------------------- 2: a locked history database


@pytest.fixture
def quick_store(tui_home: Path, monkeypatch: pytest.MonkeyPatch) -> HistoryStore:
    """A store that gives up on a locked database after 0.2 s (not 10 s)."""
    monkeypatch.setattr(history_module, "BUSY_TIMEOUT", 0.2)
    return HistoryStore(tui_home / "history.sqlite3")


class Lock:
    """Another process's connection holding the write lock (``BEGIN EXCLUSIVE``) until released."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=0)
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


def row(store: HistoryStore, turn: Turn) -> tuple[str, str] | None:
    found = store._one("SELECT content, status FROM messages WHERE id=?", (turn.id,))
    return None if found is None else (found[0], found[1])


def locked_notices(app: App) -> list[str]:
    return [text for text, severity in app.notices if severity == "error" and "history not saved" in text]


async def test_a_locked_history_at_the_end_of_a_reply_still_ends_it_and_saves_it_later(
    quick_store: HistoryStore,
) -> None:
    backend = ScriptedBackend(["one ", "two ", "three"], released=2)
    app = make(quick_store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"count")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat._gen is not None and app.chat._gen.visible == "one two ", 10, "ticks")
        lock = Lock(quick_store.path)
        try:
            backend.release()
            await wait_for(pilot, lambda: not app.chat.generating, 10, "the reply to end")
            await pilot.pause(0.1)
            assert_alive(app)
            assert app.status.state == "ready"
            reply = app.chat.conversation.turns[-1]
            assert reply.content == "one two three" and reply.status in ("done", "error")
            assert "history not saved: database is locked" in locked_notices(app)
        finally:
            lock.release()
        # the next write (the next message) saves the reply's final text too: nothing is lost
        backend.chunks = ["ok"]
        backend.release()
        await pilot.press(*"next")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.chat.conversation.turns) == 4 and not app.chat.generating, 10)
        assert row(quick_store, reply) == ("one two three", reply.status)


@pytest.mark.parametrize("key", ["ctrl+r", "f2", "ctrl+t"])
async def test_a_locked_history_does_not_crash_regenerate_rename_or_system(
    quick_store: HistoryStore, key: str
) -> None:
    app = make(quick_store, ScriptedBackend(["ok"], released=9))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "hello")
        conv_id = app.chat.conversation.id
        lock = Lock(quick_store.path)
        try:
            await pilot.press(key)
            await pilot.pause()
            if key == "f2":
                app.screen.query_one("#answer", Input).value = "new title"
                await pilot.press("enter")
            elif key == "ctrl+t":
                app.screen.query_one(TextArea).text = "Be brief."
                await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: bool(locked_notices(app)) and not app.chat.generating, 10, "notice")
            await pilot.pause(0.1)
            assert_alive(app)
            assert locked_notices(app) == ["history not saved: database is locked"]  # once, however many writes
        finally:
            lock.release()
        # on screen the action took effect
        if key == "ctrl+r":
            assert [(t.content, t.status) for t in app.chat.conversation.turns] == [("hello", "done"), ("ok", "done")]
        elif key == "f2":
            assert app.sub_title == "new title" and not any("Renamed" in text for text, _ in app.notices)
        else:
            assert app.chat.conversation.system == "Be brief."
            assert not any("System prompt updated" in text for text, _ in app.notices)
    assert app._exception is None
    assert quick_store.load(conv_id or -1).turns[0].content == "hello"


async def test_a_locked_history_does_not_crash_the_history_list(quick_store: HistoryStore) -> None:
    quick_store.create(Conversation(title="keep me", turns=[Turn("user", "hi")]))
    app = make(quick_store, ScriptedBackend([]))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), 10, "history")
        lock = Lock(quick_store.path)
        try:
            await pilot.press("delete", "delete")
            await pilot.pause()
            await pilot.press("f2")
            await pilot.pause()
            app.screen.query_one("#answer", Input).value = "renamed"
            await pilot.press("enter")
            await pilot.pause()
            assert_alive(app)
            assert isinstance(app.screen, HistoryScreen) and [r.title for r in app.screen.rows] == ["keep me"]
            assert len(locked_notices(app)) == 2
        finally:
            lock.release()
    assert [s.title for s in quick_store.summaries()] == ["keep me"]


# --------------------------------------------------------------------------- 3: quitting while the model works


def test_model_thread_is_a_daemon_and_close_releases_its_callers() -> None:
    thread = ModelThread()
    busy = threading.Event()
    done = threading.Event()
    outcome: list[object] = []

    def work() -> str:
        busy.set()
        done.wait(30)  # a long prompt being read
        return "late"

    def caller() -> None:
        try:
            outcome.append(thread.call(work))
        except CancelledError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=caller)
    waiting.start()
    assert busy.wait(5)
    assert thread.thread is not None and thread.thread.daemon  # the interpreter does not wait for it at exit
    started = time.monotonic()
    thread.close()
    waiting.join(5)
    assert not waiting.is_alive() and time.monotonic() - started < 2
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledError)
    with pytest.raises(CancelledError):
        thread.call(lambda: None)
    done.set()


def test_model_thread_passes_results_and_errors_through() -> None:
    thread = ModelThread()
    assert thread.call(lambda a, b: a + b, 2, 3) == 5
    assert thread.call(lambda: thread.call(lambda: "nested")) == "nested"  # no deadlock on itself
    with pytest.raises(TimeoutError):  # an error of the call (not a wait timing out) comes back as it is
        thread.call(lambda: (_ for _ in ()).throw(TimeoutError("socket")))
    thread.close()


async def test_quitting_mid_reply_saves_it_as_stopped_at_once(store: HistoryStore) -> None:
    backend = ScriptedBackend(["never"], released=0)  # blocks like a model reading a long prompt
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"long prompt")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.generating, 10, "generating")
        reply = app.chat.conversation.turns[-1]
        thread = app.session.model_thread.thread
        assert thread is not None and thread.daemon
    assert row(store, reply) == ("", "cancelled")  # saved by the UI as it closed: the model never got to it
    backend.release()
    await asyncio.sleep(0.1)  # the model thread's own (late) final save agrees
    assert row(store, reply) == ("", "cancelled")


CHILD = """
import asyncio, sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}, {root!r}]
from test_tui_support import ScriptedBackend, wait_for
from promptdsl_tui.app import PromptDSLApp
from promptdsl_tui.history import HistoryStore

async def main():
    backend = ScriptedBackend(["never"], released=0)  # the gate waits 60 s: a long prompt
    app = PromptDSLApp(backend_instance=backend, history=HistoryStore(Path({db!r})), cwd=Path({db!r}).parent)
    async with app.run_test() as pilot:
        await pilot.press(*"hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.chat.generating, 10)
        await asyncio.sleep(0.2)
        app.exit()
    print("APP CLOSED", time.monotonic(), flush=True)

asyncio.run(main())
"""


def test_the_process_exits_promptly_when_quit_while_the_model_works(tui_home: Path) -> None:
    db = tui_home / "history.sqlite3"
    code = CHILD.format(tests=str(ROOT / "tests"), root=str(ROOT), db=str(db))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "APP CLOSED" in done.stdout
    assert took < 30, f"the process lingered {took:.0f} s after the app closed"  # the model would take 60 s
    rows = sqlite3.connect(str(db)).execute("SELECT role, content, status FROM messages ORDER BY id").fetchall()
    assert rows == [("user", "hello", "done"), ("assistant", "", "cancelled")]


# --------------------------------------------------------------------------- 4: search is literal


def test_history_search_treats_underscore_percent_and_backslash_literally(store: HistoryStore) -> None:
    for text in ["what is snake_case?", "is 100% cotton warm?", "a path C:\\temp", "hello there", "snakeXcase"]:
        store.create(Conversation(title=text, turns=[Turn("user", text), Turn("assistant", "ok")]))
    assert [s.title for s in store.summaries("_")] == ["what is snake_case?"]
    assert [s.title for s in store.summaries("%")] == ["is 100% cotton warm?"]
    assert [s.title for s in store.summaries("e_c")] == ["what is snake_case?"]
    assert [s.title for s in store.summaries("0%")] == ["is 100% cotton warm?"]
    assert [s.title for s in store.summaries("\\")] == ["a path C:\\temp"]
    assert store.count("_") == 1 and store.count("%") == 1 and store.count("zzz") == 0
    assert store.count("HELLO") == 1  # still case-insensitive
    store.create(Conversation(title="other", turns=[Turn("user", "plain"), Turn("assistant", "x_y in a reply")]))
    found = store.summaries("x_y")
    assert [s.title for s in found] == ["other"] and "x_y" in found[0].snippet


async def test_history_screen_search_for_an_underscore(store: HistoryStore) -> None:
    for text in ["what is snake_case?", "hello there"]:
        store.create(Conversation(title=text, turns=[Turn("user", text)]))
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), 10, "history")
        await pilot.press("_")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        assert [r.title for r in screen.rows] == ["what is snake_case?"]
