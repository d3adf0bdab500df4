"""The terminal UI driven through Textual's Pilot, on the real embedded model.

The scripted backend appears only where a test needs exact timing (cancel, a server
failing mid-stream, a kill mid-reply).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui.app import PromptDSLApp
from promptdsl_tui.conversation import Conversation, Turn
from promptdsl_tui.history import HistoryStore
from promptdsl_tui.screens.help import HelpScreen
from promptdsl_tui.screens.history import HistoryScreen
from promptdsl_tui.screens.spec_run import SpecScreen
from promptdsl_tui.widgets.chat_input import ChatInput
from promptdsl_tui.widgets.message import MessageView
from promptdsl_tui.widgets.result_view import ResultView
from promptdsl_tui.widgets.spec_form import SpecForm
from test_tui_support import FAST, ROOT, SIZE, RecordingApp, ScriptedBackend, wait_for
from textual import events
from textual.widgets import Markdown, Select, Static, TextArea

pytestmark = [pytest.mark.model, pytest.mark.anyio]


def make_app(store: HistoryStore, **kwargs: Any) -> RecordingApp:
    kwargs.setdefault("options", FAST)
    return RecordingApp(history=store, cwd=ROOT, **kwargs)


async def ready(pilot: Any, app: PromptDSLApp) -> None:
    await wait_for(pilot, lambda: app.session.peek() is not None and app.status.state == "ready", what="backend")


async def send(pilot: Any, app: PromptDSLApp, text: str) -> None:
    """Paste ``text`` into the message box (as a terminal's bracketed paste does) and press Enter."""
    turns = app.chat.conversation.turns
    before = len(turns)
    app.post_message(events.Paste(text))  # what the terminal driver posts; the app forwards it to the input
    await wait_for(pilot, lambda: app.chat.query_one(ChatInput).text == text, 10, "paste")
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(app.chat.conversation.turns) == before + 2 and not app.chat.generating
                   and app.chat.conversation.turns[-1].status != "streaming", what="the reply")


# --------------------------------------------------------------------------- chat


async def test_send_streams_markdown_reply_and_saves_it(
    tui_model: Any, store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[str] = []
    original = MessageView.show_text

    async def spy(self: MessageView, text: str) -> None:
        shown.append(text)
        await original(self, text)

    monkeypatch.setattr(MessageView, "show_text", spy)
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"Hello")
        await pilot.press("ctrl+j")  # a new line, not a send
        assert not app.chat.generating
        await pilot.press(*"there")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.generating and len(app.chat.conversation.turns) == 2)
        await wait_for(pilot, lambda: not app.chat.generating)

        user, reply = app.chat.conversation.turns
        assert user.content == "Hello\nthere"
        assert reply.status == "length" and reply.content.strip()  # FAST's max_tokens=6 cuts it, and it says so
        # What streamed was the reply as it came. On a loaded machine the six tokens can all land before
        # the screen's next frame, so none may show before the end (test_tui_keys checks frames with a fake).
        assert all(reply.content.startswith(t) for t in shown)
        views = app.chat.query(MessageView)
        assert [v.turn for v in views] == [user, reply]
        assert views[-1].query_one(Markdown).source == reply.content  # the Markdown widget holds exactly the reply
        assert "smollm2 (llamacpp)" in str(views[-1].border_title)  # which model wrote it
        assert app.chat.query_one(ChatInput).text == ""
        # status bar: backend, model, speed and context use
        assert (app.status.backend, app.status.model) == ("llamacpp", "smollm2")
        assert (app.status.tokens or 0) > 1 and app.status.tokens_per_second
        assert app.status.context_total == 2048 and 0 < (app.status.context_used or 0) < 200
        # saved as it streamed
        saved = store.load(app.chat.conversation.id or -1)
        assert [(t.role, t.content, t.status) for t in saved.turns] == [
            ("user", "Hello\nthere", "done"), ("assistant", reply.content, "length")]
        assert saved.backend == "llamacpp" and saved.model == "smollm2" and saved.title == "Hello"


async def test_escape_cancels_at_once_and_keeps_the_text(store: HistoryStore) -> None:
    backend = ScriptedBackend(["The ", "answer ", "is ", "forty-two", "."], released=3)
    app = make_app(store, backend_instance=backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press(*"question")
        await pilot.press("enter")
        gen = app.chat._gen
        assert gen is not None
        await wait_for(pilot, lambda: gen.tokens == 3, 10)
        await pilot.pause(0.1)
        # the worker is now blocked inside the backend; typing still works (the UI is not frozen)
        await pilot.press(*"next")
        assert app.chat.query_one(ChatInput).text == "next"
        await pilot.press("escape")
        assert not app.chat.generating  # immediately, without waiting for the backend
        reply = app.chat.conversation.turns[-1]
        assert (reply.content, reply.status) == ("The answer is ", "cancelled")
        view = app.chat.query(MessageView).last()
        assert view.source == "The answer is " and "stopped" in str(view.border_title)
        backend.release(2)  # the backend wakes up: its stream must be closed, the text not grow
        await wait_for(pilot, backend.closed.is_set, 10)
        await pilot.pause(0.1)
        assert view.source == "The answer is "
        saved = store.load(app.chat.conversation.id or -1).turns[-1]
        assert (saved.content, saved.status) == ("The answer is ", "cancelled")
        assert any("stopped" in text for text, _ in app.notices)


async def test_regenerate_replaces_the_last_reply(tui_model: Any, store: HistoryStore) -> None:
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "Name a color.")
        first = app.chat.conversation.turns[-1]
        await pilot.press("ctrl+r")
        turns = app.chat.conversation.turns
        await wait_for(pilot, lambda: turns[-1] is not first and turns[-1].role == "assistant"
                       and turns[-1].status in ("done", "length"), what="the new reply")
        assert [t.role for t in turns] == ["user", "assistant"] and turns[-1].content
        assert [v.turn for v in app.chat.query(MessageView)] == turns
        saved = store.load(app.chat.conversation.id or -1)
        assert [(t.role, t.content) for t in saved.turns] == [(t.role, t.content) for t in turns]


async def test_backend_error_mid_stream_is_a_notification_and_the_app_goes_on(store: HistoryStore) -> None:
    backend = ScriptedBackend(["Partial ", "text ", "never"], fail_at=2, released=3)
    app = make_app(store, backend_instance=backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "hi")
        reply = app.chat.conversation.turns[-1]
        assert (reply.content, reply.status) == ("Partial text ", "error")
        assert any("connection refused" in t and sev == "error" for t, sev in app.notices)
        assert app.status.state == "ready"
        # still usable: the next message gets a full reply
        backend.fail_at = None
        backend.release(3)
        await send(pilot, app, "again")
        assert app.chat.conversation.turns[-1].content == "Partial text never"
        # the failed partial reply stays in the conversation the model sees
        assert [m.content for m in backend.prompts[-1].messages][-3:] == ["hi", "Partial text ", "again"]


async def test_switching_to_a_missing_model_or_a_dead_server_keeps_the_old_backend(
    tui_model: Any, store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        # a model file that does not exist
        await pilot.press("ctrl+b")
        app.screen.query_one("#model").value = "/no/such/model.gguf"  # type: ignore[attr-defined]
        app.screen.query_one("#model").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(sev == "error" for _, sev in app.notices), 30, "model error")
        assert "model file not found: /no/such/model.gguf" in app.notices[-1][0]
        assert app.session.choice.model is None and app.status.state == "ready"
        app.notices.clear()
        # a server that is down
        await pilot.press("ctrl+b")
        screen = app.screen
        screen.query_one("#backend", Select).value = "openai"
        await pilot.pause()  # choosing another backend empties model and options; then they are typed
        assert screen.query_one("#model").value == ""  # type: ignore[attr-defined]
        screen.query_one("#model").value = "gpt-test"  # type: ignore[attr-defined]
        screen.query_one("#options").value = "base_url=http://127.0.0.1:9/v1"  # type: ignore[attr-defined]
        screen.query_one("#options").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(sev == "error" for _, sev in app.notices) or app.session.choice.name == "openai")
        if app.session.choice.name == "openai":  # a lazy client fails on the first request instead
            await send(pilot, app, "hi")
        errors = [t for t, sev in app.notices if sev == "error"]
        assert errors and "127.0.0.1:9" in errors[0] and "sk-test-secret" not in " ".join(errors)
        if app.session.choice.name == "llamacpp":
            assert app.status.backend == "llamacpp"
            await send(pilot, app, "Say hi.")
            assert app.chat.conversation.turns[-1].status in ("done", "length")


# --------------------------------------------------------------------------- session control


async def test_copy_system_prompt_help_and_palette(tui_model: Any, store: HistoryStore) -> None:
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        # system prompt
        await pilot.press("ctrl+t")
        area = app.screen.query_one("#system-text", TextArea)
        area.text = "You answer in French."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.chat.conversation.system == "You answer in French."
        assert "You answer in French." in str(app.chat.query_one("#system-line", Static).content)
        await send(pilot, app, "Hi")
        conv = app.chat.conversation
        assert store.load(conv.id or -1).system == "You answer in French."
        assert app.chat._gen is None
        # copy: the focused message with "c", the last reply with Ctrl+G
        app.chat.query(MessageView).first().focus()
        await pilot.press("c")
        assert app.clipboard == "Hi"
        await pilot.press("ctrl+g")
        assert app.clipboard == conv.turns[-1].content
        # help lists the keys
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.keys)
        for key in ("Enter", "Shift+Enter / Ctrl+J", "Esc", "Ctrl+S", "Ctrl+O", "Ctrl+R", "Ctrl+B", "Ctrl+T",
                    "Ctrl+F", "Ctrl+G", "F1"):
            assert key in keys
        await pilot.press("escape")
        # every action has a palette entry; running one from the palette works
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"New conversation", "Open conversation", "Run a spec", "Regenerate reply", "Stop reply",
                "Edit system prompt", "Switch backend or model", "Copy last reply", "Export to Markdown",
                "Export to Markdown as…", "Help", "Tools", "Rename conversation", "Continue reply",
                "Compose in $EDITOR"} <= titles
        await pilot.press("ctrl+p")
        await pilot.press(*"New conversation")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.chat.conversation.turns, 10, "new conversation from the palette")


async def test_export_to_markdown(tui_model: Any, store: HistoryStore, tui_home: Path, tmp_path: Path) -> None:
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+f")
        assert any("nothing to export" in t for t, _ in app.notices)
        await send(pilot, app, "Say yes.")
        await pilot.press("ctrl+f")
        exported = [t for t, _ in app.notices if t.endswith(".md")]
        path = Path(exported[-1])
        assert path.parent == tui_home / "exports" and path.is_file()
        text = path.read_text(encoding="utf-8")
        reply = app.chat.conversation.turns[-1].content
        assert text.startswith("# Say yes.\n") and "## You\n\nSay yes." in text
        assert "## Assistant" in text and reply.strip().splitlines()[0].strip() in text
        # to a chosen path, through the palette's "Export as…"
        target = tmp_path / "out" / "chat.md"
        target.parent.mkdir()
        app.action_export_to()
        await pilot.pause()
        for ch in str(target):
            await pilot.press(ch)
        await pilot.press("enter")
        await wait_for(pilot, target.is_file, 10)
        assert target.read_text(encoding="utf-8") == text
        assert any(str(target) in t for t, _ in app.notices)


# --------------------------------------------------------------------------- history


async def test_history_lists_and_resumes_a_conversation(tui_model: Any, store: HistoryStore) -> None:
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "My name is Ada.")
        first = app.chat.conversation
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.chat.conversation.id is None and not app.chat.query(MessageView)
        app.chat.conversation.turns.append(Turn("user", "Second chat."))  # saved on the first message
        app.chat._persist(app.chat.conversation.turns[-1])
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, HistoryScreen)
        assert [r.title for r in app.screen.rows] == ["Second chat.", "My name is Ada."]
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.chat.conversation.id == first.id, 10, "resume")
        assert [t.content for t in app.chat.conversation.turns] == [t.content for t in first.turns]
        assert len(app.chat.query(MessageView)) == 2 and app.sub_title == "My name is Ada."
        await wait_for(pilot, lambda: app.status.context_used is not None, 30, "context of resumed chat")
        # continuing it sends the earlier turns to the model and appends to the same row
        await send(pilot, app, "What is my name?")
        gen_messages = [m.content for m in app.chat.conversation.prompt(-1).messages]
        assert gen_messages[1:4] == ["My name is Ada.", first.turns[1].content, "What is my name?"]
        assert len(store.load(first.id or -1).turns) == 4


def test_a_reply_survives_the_app_being_killed(tui_home: Path, store: HistoryStore) -> None:
    db = tui_home / "history.sqlite3"
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "test_tui_support.py"), str(db)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PROMPTDSL_HOME": str(tui_home)},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("STREAMING"), line
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    conv_id = store.latest_id()
    assert conv_id is not None
    turns = store.load(conv_id).turns
    assert [(t.role, t.content, t.status) for t in turns] == [
        ("user", "When was Rome founded?", "done"), ("assistant", "Rome was founded ", "interrupted")]


async def test_resumed_interrupted_reply_is_marked(store: HistoryStore) -> None:
    conv = Conversation(title="Old", turns=[Turn("user", "q"), Turn("assistant", "half an ans", "streaming")])
    store.create(conv)
    app = make_app(store, backend_instance=ScriptedBackend(["x"], released=1), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        view = app.chat.query(MessageView).last()
        assert view.source == "half an ans" and "interrupted" in str(view.border_title)


# --------------------------------------------------------------------------- specs


async def test_spec_form_validates_inline_then_runs_with_scores(tui_model: Any, store: HistoryStore) -> None:
    spec = ROOT / "specs" / "sentiment.yaml"
    app = make_app(store, specs=[spec])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SpecScreen), 10, "spec screen")
        screen = app.screen
        assert isinstance(screen, SpecScreen)
        form = screen.query_one(SpecForm)
        await pilot.press("ctrl+r")  # empty text: minLength 1
        assert "text" in form.errors() and not screen.running
        await pilot.press(*"I love this city, the people are wonderful!")
        assert form.errors() == {}  # errors clear as the input becomes valid
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: not screen.query_one("#prompt-box").collapsed, 30, "prompt")  # type: ignore[attr-defined]
        prompt = str(screen.query_one("#prompt-text", Static).content)
        assert prompt.startswith("Classify the sentiment") and prompt.endswith(
            "Text: I love this city, the people are wonderful!\nSentiment:")
        await pilot.press("ctrl+r")
        view = screen.query_one(ResultView)
        await wait_for(pilot, lambda: view.result is not None, what="result")
        result = view.result
        assert result is not None and result.value == "Positive" and result.method.value == "score"
        assert set(result.scores or {}) == {"Positive", "Negative", "Neutral"}
        assert view.copy_text() == "Positive"
        await pilot.press("escape")
        assert not isinstance(app.screen, SpecScreen)


TONE_SPEC = """\
version: 1
name: tone
description: Rewrite a sentence in a tone.
mode: chat
instruction: Rewrite the sentence in the given tone.
inputs:
  sentence: {type: string, minLength: 1, maxLength: 100, description: The sentence}
  tone: {type: string, enum: [formal, casual], default: casual}
  words: {type: integer, minimum: 1, maximum: 50, default: 12}
template: "Tone: {{ tone }}. At most {{ words }} words.\\n{{ sentence }}"
output: {type: text, max_tokens: 6}
"""

FLAG_SPEC = """\
version: 1
name: flag
mode: chat
instruction: Is the statement true? Reply with JSON.
inputs:
  statement: {type: string}
template: "{{ statement }}"
output:
  type: json
  max_tokens: 24
  schema:
    type: object
    additionalProperties: false
    required: [ok]
    properties: {ok: {type: boolean}}
"""


async def test_spec_picker_form_widgets_text_and_json_results(
    tui_model: Any, store: HistoryStore, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tone.yaml").write_text(TONE_SPEC, encoding="utf-8")
    (specs / "flag.yaml").write_text(FLAG_SPEC, encoding="utf-8")
    (specs / "broken.yaml").write_text("version: 1\nname: Bad Name\n", encoding="utf-8")
    # -o max_tokens given at launch wins over a spec's output.max_tokens; FAST's 6 would cut the JSON
    app = RecordingApp(history=store, cwd=tmp_path, options={k: v for k, v in FAST.items() if k != "max_tokens"})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await pilot.press("ctrl+s")
        entries = app.screen.entries  # type: ignore[attr-defined]
        assert [e.name for e in entries] == ["broken", "flag", "tone"]
        assert entries[0].spec is None and "broken.yaml" in (entries[0].error or "")
        await pilot.press("enter")  # the broken one is disabled: the highlight starts on flag
        await wait_for(pilot, lambda: isinstance(app.screen, SpecScreen), 10)
        flag = app.screen
        assert isinstance(flag, SpecScreen) and flag.spec.name == "flag"
        await pilot.press(*"Water is wet.")
        await pilot.press("ctrl+r")
        view = flag.query_one(ResultView)
        await wait_for(pilot, lambda: view.result is not None or not flag.running, what="json result")
        assert view.result is not None, app.notices
        assert isinstance(view.result.value, dict) and set(view.result.value) == {"ok"}
        assert view.copy_text() == json.dumps(view.result.value, indent=2)
        await pilot.press("escape")

        await pilot.press("ctrl+s")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SpecScreen) and app.screen.spec.name == "tone", 10)
        tone = app.screen
        assert isinstance(tone, SpecScreen)
        form = tone.query_one(SpecForm)
        assert [f.kind for f in form.fields] == ["line", "enum", "integer"]
        assert form.raw_values() == ({"tone": "casual", "words": 12}, {})  # defaults filled; 'sentence' is missing
        assert isinstance(tone.query_one("#in-1"), Select)
        form.set_value("words", 0)
        form.set_value("tone", "formal")
        await pilot.press("ctrl+r")
        errors = form.errors()
        assert set(errors) == {"sentence", "words"}  # every problem at once
        form.set_value("sentence", "hey what's up")
        await pilot.pause()
        assert set(form.errors()) == {"words"} and "minimum" in form.errors()["words"]
        form.set_value("words", "8")
        await pilot.pause()
        assert form.errors() == {}
        await pilot.press("ctrl+r")
        view = tone.query_one(ResultView)
        await wait_for(pilot, lambda: view.result is not None, what="text result")
        assert view.result is not None and view.result.method.value == "generate"
        assert isinstance(view.result.value, str) and view.result.value


async def test_a_reply_cut_at_max_tokens_is_marked_and_continues_on_the_real_model(
    tui_model: Any, store: HistoryStore
) -> None:
    """Whether a reply hit max_tokens depends on the backend's chunks and tokenizer: the real model decides."""
    app = make_app(store, options={**FAST, "max_tokens": 5})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        await send(pilot, app, "Write a long story about a cat.")
        reply = app.chat.conversation.turns[-1]
        first = reply.content
        assert reply.status == "length" and first.strip()
        view = app.chat.query(MessageView).last()
        assert "cut at max_tokens" in str(view.border_title) and "smollm2 (llamacpp)" in str(view.border_title)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: not app.chat.generating and reply.status != "streaming", what="continuation")
        assert reply.content.startswith(first) and len(reply.content) > len(first)
        assert view.query_one(Markdown).source == reply.content
        assert store.load(app.chat.conversation.id or -1).turns[-1].content == reply.content
