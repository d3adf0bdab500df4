"""The terminal UI's behaviour, driven through Pilot with the real keys, on the scripted backend.

Only UI behaviour is under test here (what is shown, kept, asked, restored), so the
backend is :class:`ScriptedBackend`: exact, fast and steady. Runs in the fast tier; what
needs the real model is in test_tui.py (marked ``model``).
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui import session as session_module
from promptdsl_tui.app import PromptDSLApp
from promptdsl_tui.conversation import Conversation, Turn
from promptdsl_tui.history import HistoryStore
from promptdsl_tui.screens.ask import Confirm
from promptdsl_tui.screens.backend import BackendScreen
from promptdsl_tui.screens.history import HistoryScreen
from promptdsl_tui.screens.spec_picker import SpecPicker
from promptdsl_tui.screens.spec_run import SpecScreen
from promptdsl_tui.widgets.chat_view import CONTINUE_PROMPT
from promptdsl_tui.widgets.message import MessageView
from promptdsl_tui.widgets.result_view import ResultView
from promptdsl_tui.widgets.spec_form import SpecForm
from test_tui_support import SIZE, ScriptedBackend, wait_for
from test_tui_support import RecordingApp as App
from textual import events
from textual.widgets import Input, Label, Markdown, Select, Static, TextArea

pytestmark = pytest.mark.anyio


def make(store: HistoryStore, backend: ScriptedBackend, **kwargs: Any) -> App:
    return App(backend_instance=backend, history=store, cwd=store.path.parent, **kwargs)


def note(view: MessageView) -> str:
    """The note under a failed reply ('' when none is shown)."""
    found = view.query(".note")
    if not found or not found.first().display:
        return ""
    return str(found.first(Static).render())


def body(view: MessageView) -> str:
    """The text a message shows on screen."""
    static = view.query(Static).filter(".body")
    if static:
        return str(static.first().render())
    return view.query_one(Markdown).source


async def ready(pilot: Any, app: PromptDSLApp) -> None:
    await wait_for(pilot, lambda: app.session.peek() is not None and app.status.state == "ready", 10, "backend")


async def type_and_send(pilot: Any, app: PromptDSLApp, text: str, *, paste: bool = False) -> None:
    before = len(app.chat.conversation.turns)
    if paste:
        app.post_message(events.Paste(text))
        await wait_for(pilot, lambda: app.chat.input.text == text, 10, "paste")
    else:
        await pilot.press(*text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(app.chat.conversation.turns) > before and not app.chat.generating, 10, "reply")
    await pilot.pause()


# --------------------------------------------------------------------------- 2: what the user typed


TYPED = "What does the <div> tag do, and is a<b or b>c valid? Also 2*3*4 and snake_case_name."


async def test_user_messages_show_exactly_what_was_typed_also_after_reload(store: HistoryStore) -> None:
    app = make(store, ScriptedBackend(["Fine."], released=9))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, TYPED)
        await type_and_send(pilot, app, "    indented\n# not a heading\n- not a list", paste=True)
        views = app.chat.views()
        assert body(views[0]) == TYPED and body(views[2]) == "    indented\n# not a heading\n- not a list"
        conv_id = app.chat.conversation.id
    again = make(store, ScriptedBackend([]), resume=conv_id)
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert body(again.chat.views()[0]) == TYPED


# --------------------------------------------------------------------------- features: recall, $EDITOR


async def test_up_recalls_earlier_messages_and_down_comes_back(store: HistoryStore) -> None:
    app = make(store, ScriptedBackend(["ok"] * 1, released=9))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "first")
        await type_and_send(pilot, app, "second")
        box = app.chat.input
        await pilot.press("up")
        assert box.text == "second"
        await pilot.press("up")
        assert box.text == "first"
        await pilot.press("up")  # nothing older: stays
        assert box.text == "first"
        await pilot.press("down")
        assert box.text == "second"
        await pilot.press("down")
        assert box.text == ""
        await pilot.press(*"draft")
        await pilot.press("up")  # a draft is never replaced by Up
        assert box.text == "draft"
    # recall survives a restart (it reads the history)
    again = make(store, ScriptedBackend([]))
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("up")
        assert again.chat.input.text == "second"


async def test_ctrl_e_composes_in_the_editor(store: HistoryStore, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    editor = tmp_path / "fake-editor"
    editor.write_text('#!/bin/sh\nprintf \'written in the editor\\nsecond line\\n\' >> "$1"\n', encoding="utf-8")
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(editor))
    backend = ScriptedBackend(["ok"], released=9)
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"Draft: ")
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: "second line" in app.chat.input.text, 10, "editor")
        assert app.chat.input.text == "Draft: written in the editor\nsecond line"
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.chat.conversation.turns) == 2 and not app.chat.generating, 10)
        assert backend.prompts[-1].messages[-1].content == "Draft: written in the editor\nsecond line"
        # an editor that fails leaves the message as it was
        monkeypatch.setenv("EDITOR", f"{sys.executable} -c 'raise SystemExit(3)'")
        await pilot.press(*"keep")
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert app.chat.input.text == "keep" and any("exited with 3" in t for t, _ in app.notices)


# --------------------------------------------------------------------------- 5: history list


def _text_background(view: MessageView) -> Any:
    """The background the first block's text is painted on."""
    md = view.markdown
    assert md is not None
    return next(seg.style.bgcolor for seg in md.children[0].render_line(0) if seg.text.strip() and seg.style)


def _bottom_margins(view: MessageView) -> list[int]:
    md = view.markdown
    assert md is not None
    return [block.styles.margin.bottom for block in md.children]


async def test_a_reply_ends_without_a_blank_line_streamed_or_reopened_and_focus_shows(store: HistoryStore) -> None:
    """The last block has no bottom margin (a class MessageView sets, not :last-child, which restyled every
    block at each mount: a long reply took seconds more); focusing a message still shows it."""
    reply = ["One paragraph.\n\n", "- a list\n- of two\n\n", "Last words."]
    app = make(store, ScriptedBackend(reply, released=3))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "hi")
        view = app.chat.views()[-1]
        await wait_for(pilot, lambda: len(view.markdown.children) == 3, 10, "blocks")  # type: ignore[union-attr]
        assert _bottom_margins(view) == [1, 1, 0]
        blurred = _text_background(view)
        view.focus()
        await pilot.pause()
        assert view.styles.border.top[0] == "double"  # .message:focus
        assert _text_background(view) != blurred  # its background shows behind the text too, not only the border
        await pilot.press("shift+tab")
        await pilot.pause()
        assert view.styles.border.top[0] == "round" and _text_background(view) == blurred
        conv_id = app.chat.conversation.id
    again = make(store, ScriptedBackend([]), resume=conv_id)
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(again.chat.views()) == 2, 10, "resumed")
        view = again.chat.views()[-1]
        await wait_for(pilot, lambda: len(view.markdown.children) == 3, 10, "blocks")  # type: ignore[union-attr]
        await pilot.pause()
        assert _bottom_margins(view) == [1, 1, 0]


async def test_the_last_block_of_a_list_item_or_a_quote_has_no_blank_line_either(store: HistoryStore) -> None:
    from textual.widgets.markdown import MarkdownBlock

    reply = "Intro\n\n- item one\n\n  ```\n  code\n  ```\n\n- item two\n\n> quote\n>\n> - a\n> - b\n\nEnd"
    conv = Conversation(title="t", turns=[Turn("user", "hi"), Turn("assistant", reply)])
    store.create(conv)
    app = make(store, ScriptedBackend([]), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.chat.views()) == 2, 10, "resumed")
        md = app.chat.views()[-1].markdown
        assert md is not None
        await wait_for(pilot, lambda: len(md.children) == 4, 10, "blocks")
        await pilot.pause()
        lasts = [b for b in md.walk_children(MarkdownBlock) if b.parent is not None and b.parent.children[-1] is b]
        assert {type(b).__name__ for b in lasts} >= {"MarkdownFence", "MarkdownBulletList", "MarkdownParagraph"}
        assert [b.styles.margin.bottom for b in lasts] == [0] * len(lasts)


def _seed(store: HistoryStore, n: int) -> list[Conversation]:
    out = []
    for i in range(n):
        conv = Conversation(title=f"chat {i}", backend="scripted", model="scripted-model", turns=[
            Turn("user", "the fjord near Oslo" if i == 1 else f"question {i}"),
            Turn("assistant", f"answer {i}", backend="scripted", model="scripted-model")])
        store.create(conv)
        out.append(conv)
    return out


async def test_history_filters_as_you_type_renames_and_asks_before_deleting(store: HistoryStore) -> None:
    convs = _seed(store, 3)
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+o")
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await pilot.press(*"oslo")  # no Tab first: the search box has the focus
        assert [r.title for r in screen.rows] == ["chat 1"] and "fjord near Oslo" in screen.rows[0].snippet
        for _ in "oslo":
            await pilot.press("backspace")
        assert len(screen.rows) == 3
        await pilot.press("down")  # moves the list while typing
        assert screen.table.cursor_row == 1 and screen.rows[1].title == "chat 1"
        # rename with F2
        await pilot.press("f2")
        await pilot.pause()
        answer = app.screen.query_one("#answer", Input)
        answer.value = ""
        await pilot.press(*"Norway trip", "enter")
        await pilot.pause()
        assert store.load(convs[1].id or -1).title == "Norway trip" and screen.rows[1].title == "Norway trip"
        # Delete asks; another key keeps it; Delete twice deletes
        await pilot.press("delete")
        assert store.count() == 3 and "Delete again deletes it" in str(screen.query_one("#history-count", Label).content)
        await pilot.press("down")
        await pilot.press("up")
        await pilot.press("delete")
        assert store.count() == 3
        await pilot.press("delete")
        assert store.count() == 2 and [r.title for r in screen.rows] == ["chat 2", "chat 0"]
        await pilot.press("enter")
        await pilot.pause()
        assert app.chat.conversation.id == convs[0].id and app.sub_title == "chat 0"


async def test_renaming_the_open_conversation_in_the_list_lasts(store: HistoryStore) -> None:
    """The header kept the old title, and the next save of the chat's settings wrote it back."""
    convs = _seed(store, 2)
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await app.chat.resume(convs[0].id or -1)
        await pilot.press("ctrl+o")
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        screen.table.move_cursor(row=[r.id for r in screen.rows].index(convs[0].id))
        await pilot.press("f2")
        await pilot.pause()
        app.screen.query_one("#answer", Input).value = "Renamed in the list"
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("escape")  # back to the chat, the same conversation
        await pilot.pause()
        assert app.chat.conversation.title == "Renamed in the list" and app.sub_title == "Renamed in the list"
        store.save_meta(app.chat.conversation)  # what the next settings change writes
        assert store.load(convs[0].id or -1).title == "Renamed in the list"


async def test_reopening_the_conversation_while_it_streams_shows_the_reply_stopped(store: HistoryStore) -> None:
    """It was loaded before the stop was saved, so it read "interrupted" (a killed app) though history said stopped."""
    backend = ScriptedBackend(["alpha ", "beta ", "gamma ", "delta"], released=2)
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"go", "enter")
        await wait_for(pilot, lambda: app.chat._gen is not None and app.chat._gen.tokens == 2, 10, "two pieces")
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")  # the open conversation, marked in the list
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.conversation.turns[-1].status != "streaming",
                       10, "reopened")
        backend.release(5)  # (the worker, still waiting for a piece, ends)
        reply = app.chat.conversation.turns[-1]
        assert (reply.status, reply.content) == ("cancelled", "alpha beta ")
        assert "stopped" in str(list(app.query(MessageView))[-1].border_title)
        saved = store.load(app.chat.conversation.id or -1).turns[-1]
        assert (saved.status, saved.content) == ("cancelled", "alpha beta ")


async def test_a_conversation_deleted_in_another_window_is_saved_again(store: HistoryStore) -> None:
    """Every later write failed ("FOREIGN KEY constraint failed") and the chat was never saved again."""
    backend = ScriptedBackend(["one", "two"], released=10)
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"first", "enter")
        await wait_for(pilot, lambda: not app.chat.generating and app.chat.conversation.id is not None, 10, "saved")
        HistoryStore(store.path).delete(app.chat.conversation.id or -1)  # the other window
        await pilot.press(*"second", "enter")
        await wait_for(pilot, lambda: not app.chat.generating and store.count() == 1
                       and len(store.load(app.chat.conversation.id or -1).turns) == 4, 10, "second reply saved")
        conv = app.chat.conversation
        assert conv.id is not None and store.count() == 1
        saved = store.load(conv.id)
        assert [(t.role, t.content) for t in saved.turns] == [(t.role, t.content) for t in conv.turns]
        assert [t.content for t in saved.turns if t.role == "user"] == ["first", "second"]
        assert any("deleted in another window" in text for text, _ in app.notices)
        assert not any("FOREIGN KEY" in text for text, _ in app.notices)


async def test_a_long_draft_leaves_the_chat_room_on_a_small_terminal(store: HistoryStore) -> None:
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=(50, 12)) as pilot:
        await ready(pilot, app)
        app.chat.input.insert("\n".join(f"line {i}" for i in range(60)))
        await pilot.pause()
        assert app.chat.input.outer_size.height <= 4  # 40% of 12 rows, not 10 of them
    async with make(store, ScriptedBackend([])).run_test(size=(100, 40)) as pilot:
        app = pilot.app
        await ready(pilot, app)
        app.chat.input.insert("\n".join(f"line {i}" for i in range(60)))
        await pilot.pause()
        assert app.chat.input.outer_size.height == 10  # a roomy terminal: as before


async def test_history_says_how_many_and_loads_more(store: HistoryStore) -> None:
    _seed(store, 205)
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+o")
        screen = app.screen
        assert isinstance(screen, HistoryScreen) and len(screen.rows) == 200
        assert "Showing 200 of 205" in str(screen.query_one("#history-count", Label).content)
        await pilot.press("ctrl+end")  # from the search box
        await pilot.pause()
        assert len(screen.rows) == 205 and str(screen.query_one("#history-count", Label).content) == "205 conversations"


# --------------------------------------------------------------------------- 5: settings kept and restored, authors


class OtherBackend(ScriptedBackend):
    name = "other"

    @property
    def model_id(self) -> str:
        return "other-model"

    def context_length(self) -> int:  # type: ignore[override]
        return None  # type: ignore[return-value]

    def count_tokens(self, prompt: Any) -> int:  # type: ignore[override]
        return None  # type: ignore[return-value]


@pytest.fixture
def two_backends(monkeypatch: pytest.MonkeyPatch) -> dict[str, ScriptedBackend]:
    """The registry, as the app sees it, with two installed backends."""
    backends: dict[str, ScriptedBackend] = {
        "scripted": ScriptedBackend(["From scripted."] * 1, released=50),
        "other": OtherBackend(["never"], fail_at=0, released=50),
    }
    monkeypatch.setattr(session_module, "get_backend", lambda name, model, options: backends[name])
    monkeypatch.setattr("promptdsl_tui.screens.backend.list_backends", lambda: [])
    return backends


async def test_each_reply_names_its_model_and_resume_restores_the_settings(
    store: HistoryStore, two_backends: dict[str, ScriptedBackend]
) -> None:
    app = App(backend="scripted", options={"temperature": 0.1, "max_tokens": 40}, history=store, cwd=store.path.parent)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "hello")
        made = app.chat.conversation
        assert "scripted-model (scripted)" in str(app.chat.views()[-1].border_title)
        # switch to the other backend (it fails): the list still says who wrote the replies
        app._load_backend(session_module.BackendChoice("other", None, {"temperature": 0.9}))
        await wait_for(pilot, lambda: app.status.backend == "other", 10, "switch")
        await wait_for(pilot, lambda: app.status.context_used is None and app.status.context_total is None, 10,
                       "unknown context")  # it cannot count: "–", not the old backend's figure
        assert "ctx –" in str(app.status.render())
        await type_and_send(pilot, app, "again")
        assert made.turns[-1].status == "error" and made.turns[-1].backend == "other"
        summary = store.summaries()[0]
        assert summary.models == "scripted-model"  # only replies with text count
        assert (store.load(made.id or -1).backend, store.load(made.id or -1).options["temperature"]) == ("other", 0.9)
        # a new chat on scripted; then resuming the first one brings back other + its options
        await pilot.press("ctrl+n")
        app._load_backend(session_module.BackendChoice("scripted", None, {"temperature": 0.3}))
        await wait_for(pilot, lambda: app.status.backend == "scripted", 10)
        await type_and_send(pilot, app, "new chat")
        assert store.load(made.id or -1).backend == "other"  # a switch changes only the open conversation
        await pilot.press("ctrl+o")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.status.backend == "other", 10, "restored backend")
        assert app.chat.conversation.id == made.id and app.session.generation.temperature == 0.9


@pytest.mark.parametrize(("model", "loads"), [("scripted-model", 1), ("another-model", 2)])
async def test_chat_c_loads_the_model_once_when_the_conversation_used_the_default(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch, model: str, loads: int
) -> None:
    """`chat -c` of a conversation kept as "smollm2": the default *is* that model, which only loading
    it tells; comparing names before the load loaded it twice. Another model is still switched to."""
    made: list[tuple[str, str | None]] = []
    loaded = threading.Event()  # a model load takes a while: the test says when it is done

    def get_backend(name: str, model: str | None, options: Any) -> ScriptedBackend:
        made.append((name, model))
        loaded.wait(10)
        return ScriptedBackend(["ok"], released=5)

    monkeypatch.setattr(session_module, "get_backend", get_backend)
    default = session_module.resolve_backend_name(None)
    conv = Conversation(title="kept", backend=default, model=model, options={"temperature": 0.2},
                        turns=[Turn("user", "hi"), Turn("assistant", "hello", backend=default, model=model)])
    store.create(conv)
    app = App(history=store, cwd=store.path.parent, resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.conversation.id == conv.id, 10, "resumed")
        assert app.session.peek() is None and app.session.generation.temperature == 0.2  # at once, not after the load
        loaded.set()
        await ready(pilot, app)
        await pilot.pause(0.2)
        assert len(made) == loads, made
        assert made[0] == (default, None) and (loads == 1 or made[1] == (default, model))
    # Ctrl+N while the model loads: the new chat keeps the loaded backend, not the resumed one's switch
    made.clear()
    loaded.clear()
    app = App(history=store, cwd=store.path.parent, resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.conversation.id == conv.id, 10, "resumed")
        await pilot.press("ctrl+n")
        loaded.set()
        await ready(pilot, app)
        await pilot.pause(0.4)
        assert made == [(default, None)] and app.session.choice.model is None


async def test_system_prompt_edit_is_kept_after_a_restart(store: HistoryStore) -> None:
    app = make(store, ScriptedBackend([]))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+t")
        area = app.screen.query_one("#system-text")
        area.text = "Answer like a pirate."  # type: ignore[attr-defined]
        await pilot.press("ctrl+s")
        await pilot.pause()
    again = make(store, ScriptedBackend([]))
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.chat.conversation.system == "Answer like a pirate."
    flagged = make(store, ScriptedBackend([]), system="Be terse.")  # --system still wins
    async with flagged.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert flagged.chat.conversation.system == "Be terse."


# --------------------------------------------------------------------------- 3 and 9: context figures, long messages


async def test_context_figure_is_what_the_next_turn_sends_and_ctrl_n_resets_it(store: HistoryStore) -> None:
    long = "word " * 300
    conv = Conversation(title="long", turns=[t for i in range(4) for t in (
        Turn("user", f"{i} {long}"), Turn("assistant", f"{i} {long}"))])
    store.create(conv)
    app = make(store, ScriptedBackend(["ok"], released=5), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.status.context_used is not None, 10, "measure")
        assert app.status.context_total == 1000 and app.status.context_used <= 1000  # not the whole 2,400
        views = app.chat.views()
        left_out = [v for v in views if v.left_out]
        assert left_out and left_out == views[: len(left_out)]  # the oldest, marked in the transcript
        assert "left out" in str(left_out[0].border_title)
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.status.context_used is not None and app.status.context_used < 20, 10)


async def test_a_message_longer_than_the_context_is_not_sent_and_history_stays(store: HistoryStore) -> None:
    backend = ScriptedBackend(["fine"], released=5)
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "my name is Ada")
        await type_and_send(pilot, app, "paste " * 2000, paste=True)
        turns = app.chat.conversation.turns
        assert [t.role for t in turns] == ["user", "assistant", "user"] and turns[-1].status == "error"
        error = [t for t, sev in app.notices if sev == "error"][-1]
        assert "too long for the model's context" in error and "fewshot" not in error and "n_ctx" not in error
        assert "not sent" in str(app.chat.views()[-1].border_title)
        streams = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "MarkdownStream._run"]
        assert streams == []  # the dropped reply's stream was stopped, not left running
        assert len(backend.prompts) == 1  # nothing went to the backend
        await type_and_send(pilot, app, "what is my name?")
        sent = [m.content for m in backend.prompts[-1].messages]
        assert sent[1:] == ["my name is Ada", "fine", "what is my name?"]  # the earlier turns are all there
        saved = store.load(app.chat.conversation.id or -1).turns
        assert saved[2].status == "error" and "too long" in saved[2].note  # kept, marked, with why


# --------------------------------------------------------------------------- 10: honest feedback


async def test_a_cut_reply_is_marked_and_continues(store: HistoryStore) -> None:
    backend = ScriptedBackend(["One ", "two ", "three "], released=6)
    app = make(store, backend, options={"max_tokens": 3})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "count")
        reply = app.chat.conversation.turns[-1]
        view = app.chat.views()[-1]
        assert reply.status == "length" and "cut at max_tokens" in str(view.border_title)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: not app.chat.generating and reply.status != "streaming", 10)
        await pilot.pause(0.1)
        assert reply.content == "One two three One two three " and body(view) == reply.content
        assert [m.content for m in backend.prompts[-1].messages][-2:] == ["One two three ", CONTINUE_PROMPT]
        assert store.load(app.chat.conversation.id or -1).turns[-1].content == reply.content


async def test_prompt_reading_is_shown_until_the_first_token(store: HistoryStore) -> None:
    backend = ScriptedBackend(["Hi"], released=0)
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"hello", "enter")
        view = app.chat.views()[-1]
        await wait_for(pilot, lambda: "reading the prompt" in str(view.border_title), 10, "phase")
        assert "tokens)" in str(view.border_title)
        backend.release()
        await wait_for(pilot, lambda: not app.chat.generating, 10)
        assert "reading" not in str(view.border_title)


async def test_a_failed_reply_shows_why_in_full_live_and_reopened(store: HistoryStore) -> None:
    """The title holds one line of the error, cut to the terminal; the body ends with all of it."""
    long_error = "the server closed the connection: " + " ".join(f"detail{i}" for i in range(40)) + " *end*"
    backend = ScriptedBackend(["x"], fail_at=0, released=1)
    backend.error = long_error
    partial = ScriptedBackend(["Partial ", "text", "never"], fail_at=2, released=3)
    partial.error = long_error
    ids = []
    for scripted, text in ((backend, ""), (partial, "Partial text")):
        app = make(store, scripted)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot, app)
            await type_and_send(pilot, app, "hi")
            view = app.chat.views()[-1]
            assert "detail39" not in str(view.border_title)  # too long for the title
            assert body(view) == text and view.turn.content == text  # the error is not made part of the reply
            why = "stopped" if text else "no text"
            assert note(view) == f"({why}: scripted: {long_error})"  # whole, as written
            ids.append(app.chat.conversation.id)
    for conv_id, text in zip(ids, ("", "Partial text"), strict=True):
        again = make(store, ScriptedBackend([]), resume=conv_id)
        async with again.run_test(size=SIZE) as pilot:
            await pilot.pause()
            view = again.chat.views()[-1]
            assert "the server closed" in str(view.border_title) and long_error in note(view) and body(view) == text


async def test_a_reply_failing_inside_a_code_block_shows_the_error_under_it_and_continuing_hides_it(
    store: HistoryStore,
) -> None:
    """The note is its own widget: a reply cut inside an unclosed ``` fence does not swallow it."""
    scripted = ScriptedBackend(["```python\n", "x = 1\n", "never"], fail_at=2, released=3)
    app = make(store, scripted)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "code please")
        view = app.chat.views()[-1]
        assert body(view) == "```python\nx = 1\n"  # the code block holds the code only
        assert note(view).startswith("(stopped: scripted: connection refused")
        scripted.chunks, scripted.fail_at = ["y = 2\n```"], None
        scripted.release(1)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: not app.chat.generating and view.turn.status != "error", 10, "continued")
        assert note(view) == "" and body(view).endswith("y = 2\n```")


async def test_copy_does_not_claim_what_it_cannot_know(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    app = make(store, ScriptedBackend(["reply"], released=1))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "hi")
        await pilot.press("ctrl+g")
        assert app.clipboard == "reply"
        assert "Asked the terminal to copy 5 characters (OSC 52)" in app.notices[-1][0]
        assert not any(t.startswith("Copied") for t, _ in app.notices)


async def test_streaming_updates_the_screen_per_frame_not_per_chunk(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[str] = []
    original = MessageView.show_text

    async def spy(self: MessageView, text: str) -> None:
        if text != self.source:
            writes.append(text)
        await original(self, text)

    monkeypatch.setattr(MessageView, "show_text", spy)
    backend = ScriptedBackend([f"w{i} " for i in range(300)], released=300)
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "go")
        reply = app.chat.conversation.turns[-1]
        assert reply.content == "".join(f"w{i} " for i in range(300)) and body(app.chat.views()[-1]) == reply.content
        assert len(writes) < 60  # 300 chunks, a handful of frames
        assert store.load(app.chat.conversation.id or -1).turns[-1].content == reply.content


# --------------------------------------------------------------------------- 8: export


async def test_export_as_asks_before_replacing_a_file(store: HistoryStore, tmp_path: Path) -> None:
    target = tmp_path / "chat.md"
    target.write_text("my notes", encoding="utf-8")
    target.chmod(0o644)
    app = make(store, ScriptedBackend(["reply"], released=1))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "hi")
        for path in (tmp_path / "missing" / "x.md", target):
            app.action_export_to()
            await pilot.pause()
            app.screen.query_one("#path", Input).value = str(path)  # typed (faster than a key per character)
            await pilot.press("enter")
            await pilot.pause()
        assert any("the folder" in t and "does not exist" in t for t, _ in app.notices)
        assert not (tmp_path / "missing").exists()
        assert isinstance(app.screen, Confirm)
        await pilot.press("n")
        assert target.read_text(encoding="utf-8") == "my notes"
        app.action_export_to()
        await pilot.pause()
        app.screen.query_one("#path", Input).value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert target.read_text(encoding="utf-8").startswith("# hi") and stat.S_IMODE(target.stat().st_mode) == 0o644


# --------------------------------------------------------------------------- 7: screens and keys


SPECS = {
    "color.yaml": """\
version: 1
name: color
mode: chat
instruction: Describe the color.
inputs:
  color: {type: string, enum: [red, green]}
  size: {type: integer, minimum: 5, maximum: 50}
  note: {type: string, maxLength: 20, minLength: 3}
template: "{{ color }} {{ size }} {{ note }}"
output: {type: text, max_tokens: 8}
""",
}


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "specs").mkdir(parents=True)
    for name, text in SPECS.items():
        (root / "specs" / name).write_text(text, encoding="utf-8")
    return root


def spec_app(store: HistoryStore, backend: ScriptedBackend, root: Path) -> App:
    return App(backend_instance=backend, history=store, cwd=root)


async def open_spec(pilot: Any, app: PromptDSLApp) -> SpecScreen:
    await pilot.press("ctrl+s")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, SpecScreen), 10, "spec screen")
    assert isinstance(app.screen, SpecScreen)
    return app.screen


async def test_keys_on_a_spec_screen_go_where_they_are_seen(
    store: HistoryStore, spec_dir: Path, two_backends: dict[str, ScriptedBackend]
) -> None:
    _seed(store, 1)
    app = spec_app(store, ScriptedBackend([]), spec_dir)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await open_spec(pilot, app)
        await pilot.press("ctrl+o")  # history opens over the chat, not behind the spec screen
        assert isinstance(app.screen, HistoryScreen) and len(app.screen_stack) == 2
        await pilot.press("escape")
        await open_spec(pilot, app)
        await pilot.press("ctrl+s")  # the picker replaces the spec screen: one Esc gets back
        assert isinstance(app.screen, SpecPicker) and len(app.screen_stack) == 2
        await pilot.press("escape")
        assert len(app.screen_stack) == 1
        await open_spec(pilot, app)
        notices = len(app.notices)
        await pilot.press("ctrl+l", "ctrl+f", "f2")  # keys of the chat, which is hidden: nothing happens
        await pilot.pause()
        assert isinstance(app.screen, SpecScreen) and len(app.screen_stack) == 2
        titles = {c.title for c in app.get_system_commands(app.screen)}  # nor in the command palette
        assert "Run a spec" in titles and not titles & {"Export to Markdown", "Rename conversation", "Continue reply"}
        assert "Export to Markdown" in {c.title for c in app.get_system_commands(app.screen_stack[0])}
        assert app.notices[notices:] == []  # no "Exported to …", no "nothing to continue"


async def test_backend_dialog_fits_a_small_terminal_and_forgets_the_old_model(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptdsl.backend import BackendInfo

    infos = [BackendInfo(name=n, version="1", capabilities=frozenset(), error=None) for n in ("scripted", "other")]
    monkeypatch.setattr("promptdsl_tui.screens.backend.list_backends", lambda: infos)
    app = App(backend_instance=ScriptedBackend([]), history=store, cwd=store.path.parent)
    async with app.run_test(size=(60, 15)) as pilot:
        await ready(pilot, app)
        app.session.choice = session_module.BackendChoice("scripted", "smol", {"n_ctx": 512})
        await pilot.press("ctrl+b")
        screen = app.screen
        assert isinstance(screen, BackendScreen)
        region = screen.region
        for wid in ("#switch", "#cancel"):
            assert region.contains_region(screen.query_one(wid).region), wid  # buttons always on screen
        for wid in ("#model", "#options"):
            screen.query_one(wid).focus()
            await pilot.pause()
            widget = screen.query_one(wid)
            assert widget.region.height > 0 and region.contains_region(widget.region), wid  # reachable
        assert screen.query_one("#model", Input).value == "smol"
        screen.query_one("#backend", Select).value = "other"
        await pilot.pause()
        assert screen.query_one("#model", Input).value == "" and screen.query_one("#options", Input).value == ""
        screen.query_one("#options", Input).value = "temperature=abc"
        screen.query_one("#options", Input).focus()
        await pilot.press("enter")
        assert "option 'temperature'" in str(screen.query_one("#backend-error", Label).content)


async def test_ctrl_b_to_another_backend_keeps_the_chats_generation_settings(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The field shows them; picking another backend cleared the whole field, and with it -o temperature."""
    from promptdsl.backend import BackendInfo

    infos = [BackendInfo(name=n, version="1", capabilities=frozenset(), error=None) for n in ("scripted", "other")]
    monkeypatch.setattr("promptdsl_tui.screens.backend.list_backends", lambda: infos)
    monkeypatch.setattr(session_module, "get_backend", lambda name, model, opts: ScriptedBackend([]))
    app = App(backend_instance=ScriptedBackend([]), options={"temperature": 0.1, "max_tokens": 2000},
              history=store, cwd=store.path.parent)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+b")
        screen = app.screen
        assert isinstance(screen, BackendScreen)
        assert screen.query_one("#options", Input).value == "temperature=0.1 max_tokens=2000"
        screen.query_one("#backend", Select).value = "other"
        await pilot.pause()
        assert screen.query_one("#options", Input).value == "temperature=0.1 max_tokens=2000"
        screen.query_one("#options", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.session.choice.name == "other", 10, "the switch")
        assert (app.session.generation.temperature, app.session.generation.max_tokens) == (0.1, 2000)


# --------------------------------------------------------------------------- 1 and 6: spec forms


DEFAULTS_SPEC = """\
version: 1
name: defaults
mode: chat
instruction: Greet.
inputs:
  greeting: {type: string, default: Hello}
  times: {type: integer, minimum: 1, default: 2}
  extra: {type: object, default: {a: 1}}
  who: {type: string}
template: "{{ greeting }} x{{ times }} {{ extra }} {{ who }}"
output: {type: text, max_tokens: 8}
"""


async def test_spec_form_a_cleared_text_field_is_empty_and_a_cleared_number_says_it_is_the_default(
    store: HistoryStore, tmp_path: Path
) -> None:
    """The default is in the field; emptying a text field means the empty text, not the default coming back
    unseen. A number or JSON cannot be empty: emptied, it is the default, and its placeholder says so."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "defaults.yaml").write_text(DEFAULTS_SPEC, encoding="utf-8")
    app = spec_app(store, ScriptedBackend([]), tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        screen = await open_spec(pilot, app)
        form = screen.query_one(SpecForm)
        assert form.validate(show=False) is None  # 'who' is required, and empty
        assert form.validate() is None and form.errors() == {"who": "missing input 'who' (it has no default)"}
        form.set_value("who", "Ada")
        assert form.validate(show=False) == {"greeting": "Hello", "times": 2, "extra": {"a": 1}, "who": "Ada"}
        form.set_value("greeting", "")
        form.set_value("times", "")
        screen.query_one("#in-2", TextArea).text = ""
        await pilot.pause()
        assert form.validate(show=False) == {"greeting": "", "times": 2, "extra": {"a": 1}, "who": "Ada"}
        assert screen.query_one("#in-1", Input).placeholder == "integer (empty: the default, 2)"
        assert screen.query_one("#in-2", TextArea).placeholder == 'empty: the default, {"a": 1}'


async def test_spec_form_enum_without_default_numbers_limits_and_all_errors(
    store: HistoryStore, spec_dir: Path
) -> None:
    app = spec_app(store, ScriptedBackend(["A ", "warm ", "red."], released=30), spec_dir)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        screen = await open_spec(pilot, app)
        form = screen.query_one(SpecForm)
        limits = [str(lbl.content) for lbl in screen.query(".limits").results(Label)]
        assert limits == ["one of red, green · required", "integer · at least 5 · at most 50 · required",
                          "string · at least 3 characters · at most 20 characters · required"]
        # the crash: Enter, Home, Enter (the blank entry), Ctrl+R
        await pilot.press("enter", "home", "enter")
        await pilot.press("ctrl+r")
        errors = form.errors()
        assert set(errors) == {"color", "size", "note"}  # every field's error at once
        assert errors["color"] == "missing input 'color' (it has no default)"
        # a value typed that is not an integer is an error, never 352
        screen.query_one("#in-1", Input).focus()
        await pilot.press(*"3.5x-2")
        assert screen.query_one("#in-1", Input).value == "3.5x-2"
        assert form.errors()["size"] == "input 'size': '3.5x-2' is not an integer"
        await pilot.press(*["backspace"] * 6, *"2")
        assert "minimum of 5" in form.errors()["size"]
        await pilot.press("backspace", *"12")
        # choose red; the required enum now counts as filled
        screen.query_one("#in-0", Select).focus()
        await pilot.press("enter", "down", "enter")
        await pilot.pause()
        assert set(form.errors()) == {"note"}
        screen.query_one("#in-2", Input).focus()
        await pilot.press(*"hot")
        assert form.errors() == {}
        # the prompt follows the inputs
        await pilot.press("ctrl+t")
        prompt = screen.query_one("#prompt-text", Static)
        await wait_for(pilot, lambda: "red 12 hot" in str(prompt.render()), 10, "prompt")
        await pilot.press("!")
        await wait_for(pilot, lambda: "red 12 hot!" in str(prompt.render()), 10, "prompt follows")
        await pilot.press("ctrl+r")
        view = screen.query_one(ResultView)
        await wait_for(pilot, lambda: view.result is not None, 10, "result")
        await pilot.pause(0.2)
        body_region = screen.query_one("#spec-body").region
        assert body_region.contains_region(view.region) or view.region.y < body_region.bottom  # in view
        assert view.region.y >= body_region.y and view.region.y < body_region.bottom
        # an invalid form clears the old result
        await pilot.press("backspace", "backspace", "backspace", "backspace")
        await pilot.press("ctrl+r")
        assert not view.display and view.result is None
        assert "Fix the 1 input marked in red." in str(screen.query_one("#run-state", Label).content)
        await pilot.press(*"warm")
        await pilot.press("escape")
        # reopened: the form shows what was typed, and the run is kept in history
        screen = await open_spec(pilot, app)
        assert screen.query_one(SpecForm).raw_values()[0] == {"color": "red", "size": 12, "note": "warm"}
        runs = store.spec_runs("color", screen.key)
        assert [(r.inputs, r.value) for r in runs] == [({"color": "red", "size": 12, "note": "hot!"}, "A warm red.")]
        assert "A warm red." in str(screen.query_one("#runs-text", Static).render())
    # after a restart the form starts from the last run
    again = spec_app(store, ScriptedBackend([]), spec_dir)
    async with again.run_test(size=(120, 36)) as pilot:
        await ready(pilot, again)
        screen = await open_spec(pilot, again)
        assert screen.query_one(SpecForm).raw_values()[0] == {"color": "red", "size": 12, "note": "hot!"}


async def test_a_spec_run_stopped_with_esc_is_kept_in_history(store: HistoryStore, spec_dir: Path) -> None:
    """docs/tui.md: "Every run is kept in history"; a stopped one was not."""
    backend = ScriptedBackend(["A ", "warm ", "red."], released=1)
    app = spec_app(store, backend, spec_dir)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot, app)
        screen = await open_spec(pilot, app)
        screen.query_one("#in-0", Select).focus()
        await pilot.press("enter", "down", "enter")
        screen.query_one("#in-1", Input).value = "12"  # (typing into the form is another test's)
        screen.query_one("#in-2", Input).value = "hot"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.raw == "A ", 10, "the first piece")
        await pilot.press("escape")  # stop: the run ends, the screen stays
        backend.release(5)  # (the worker sees the stop when its next piece comes)
        await wait_for(pilot, lambda: bool(store.spec_runs("color", screen.key)), 10, "the stopped run saved")
        runs = store.spec_runs("color", screen.key)
        assert [(r.inputs, r.value, r.error) for r in runs] == [({"color": "red", "size": 12, "note": "hot"}, None,
                                                                 "stopped")]


def test_os_is_posix() -> None:
    assert os.name == "posix"  # the fake editor is a shell script


async def test_backend_dialog_opens_when_the_current_backend_is_not_a_plugin(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in tmux: Select.BLANK is no value in Textual 8; a backend given as an instance crashed Ctrl+B."""
    monkeypatch.setattr("promptdsl_tui.screens.backend.list_backends", lambda: [])
    app = App(backend_instance=ScriptedBackend([]), history=store, cwd=store.path.parent)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+b")
        assert isinstance(app.screen, BackendScreen) and app.screen.query_one("#backend", Select).is_blank()
        app.screen.query_one("#model", Input).focus()
        await pilot.press("enter")
        assert str(app.screen.query_one("#backend-error", Label).content) == "Choose a backend."


# --------------------------------------------------------------------------- 11: one thread runs the model


class ThreadRecordingBackend(ScriptedBackend):
    """Records the thread of every call that would run a model (llama.cpp's OpenMP cares which)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[int] = []

    def stream(self, prompt: Any, options: Any, constraint: Any = None) -> Any:
        import threading

        self.threads.append(threading.get_ident())
        inner = super().stream(prompt, options, constraint)

        def gen() -> Any:
            for chunk in inner:
                self.threads.append(threading.get_ident())
                yield chunk

        return gen()

    def count_tokens(self, prompt: Any) -> int:
        import threading

        self.threads.append(threading.get_ident())
        return super().count_tokens(prompt)


async def test_every_model_call_runs_on_one_long_lived_thread_not_the_ui_one(store: HistoryStore) -> None:
    import threading

    backend = ThreadRecordingBackend(["one ", "two"])
    app = make(store, backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"first", "enter")
        await wait_for(pilot, lambda: len(backend.prompts) == 1, 10, "the reply to start")
        app.chat.remeasure()  # another worker wants the model while the reply streams: it must wait
        await pilot.pause(0.2)
        backend.release(2)
        await wait_for(pilot, lambda: not app.chat.generating, 10, "the first reply")
        backend.release(99)
        await type_and_send(pilot, app, "second")
        assert [t.content for t in app.chat.conversation.turns if t.role == "assistant"] == ["one two"] * 2
    assert len(backend.prompts) == 2 and len(backend.threads) >= 7  # two replies streamed, counts in between
    assert len(set(backend.threads)) == 1, "replies and counts ran on different threads"
    assert backend.threads[0] != threading.main_thread().ident


async def test_a_chat_tool_run_calls_the_model_only_on_the_model_thread(store: HistoryStore) -> None:
    """The tool loop's model calls (choosing by score, arguments under a grammar, the answer) use ModelThread too."""
    import threading

    from tools_support import ScriptedTools

    class Recording(ScriptedTools):
        def __init__(self) -> None:
            super().__init__([("calculator", {"expression": "6 * 7"})], answer="42")
            self.threads: list[int] = []

        def score(self, prompt: Any, continuations: Any) -> list[float]:
            self.threads.append(threading.get_ident())
            return super().score(prompt, continuations)

        def stream(self, *args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.get_ident())
            return super().stream(*args, **kwargs)

    backend = Recording()
    app = App(backend_instance=backend, history=store, cwd=store.path.parent, tools=["calculator"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await type_and_send(pilot, app, "6 * 7?")
        assert app.chat.conversation.turns[-1].content == "42"
        assert app.chat.conversation.turns[-1].steps[0]["result"] == "42"
    assert len(backend.threads) == 4  # score (calculator), arguments, score (answer), the answer
    assert len(set(backend.threads)) == 1 and backend.threads[0] != threading.main_thread().ident
