"""The TUI's plain-Python parts: history store, export, prompt fitting, spec discovery, CLI errors."""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui import history as history_module
from promptdsl_tui.conversation import Conversation, Turn, make_title
from promptdsl_tui.export import ExportExists, export_markdown, hard_breaks, to_markdown
from promptdsl_tui.history import SCHEMA_VERSION, HistoryStore
from promptdsl_tui.screens.backend import format_options, parse_options
from promptdsl_tui.session import BackendChoice, ContextFull, Session, check_options, fit_prompt
from promptdsl_tui.specs import discover
from promptdsl_tui.widgets.result_view import ResultView, choice_probabilities
from promptdsl_tui.widgets.spec_form import field_kind, limits, schema_errors
from test_tui_support import ROOT

from promptdsl.backend import Backend, split_options
from promptdsl.cli import main
from promptdsl.errors import InputError, PromptDSLError
from promptdsl.prompt import Message

# --------------------------------------------------------------------------- history


def test_history_roundtrip_search_delete(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    conv = Conversation(title="Cats", system="sys", backend="llamacpp", model="smollm2",
                        turns=[Turn("user", "tell me about cats")])
    conv_id = store.create(conv)
    reply = Turn("assistant", "", "streaming")
    store.add_turn(conv_id, reply)
    assert reply.id is not None
    store.update_turn(reply.id, "Cats purr", "streaming")  # as after a chunk; then the process dies
    other = Conversation(title="Dogs", turns=[Turn("user", "woof")])
    store.create(other)

    loaded = store.load(conv_id)
    assert (loaded.title, loaded.system, loaded.backend, loaded.model) == ("Cats", "sys", "llamacpp", "smollm2")
    assert [(t.role, t.content, t.status) for t in loaded.turns] == [
        ("user", "tell me about cats", "done"), ("assistant", "Cats purr", "interrupted")]
    assert [s.title for s in store.summaries()] == ["Dogs", "Cats"]
    assert [s.title for s in store.summaries("purr")] == ["Cats"]  # searches message text too
    assert store.summaries("Cats")[0].messages == 2
    assert store.models() == [("llamacpp", "smollm2")]
    store.delete_turn(reply.id)
    assert len(store.load(conv_id).turns) == 1
    store.delete(conv_id)
    assert [s.title for s in store.summaries()] == ["Dogs"]
    with pytest.raises(PromptDSLError, match="no conversation with id"):
        store.load(conv_id)
    # a second connection (another process) sees the committed rows
    assert sqlite3.connect(tmp_path / "h.sqlite3").execute("SELECT COUNT(*) FROM messages").fetchone() == (1,)


def test_history_default_location_follows_promptdsl_home(home: Path) -> None:
    store = HistoryStore.default()
    assert store.path == home / "history.sqlite3" and store.path.is_file()
    assert store.latest_id() is None


def test_history_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PromptDSLError, match="cannot open the chat history"):
        HistoryStore(blocker / "h.sqlite3")


# --------------------------------------------------------------------------- export


def test_markdown_export(home: Path, tmp_path: Path) -> None:
    conv = Conversation(id=7, title="Fruit list", system="Be brief.", backend="llamacpp", model="smollm2",
                        turns=[Turn("user", "three fruits,\none per line"),
                               Turn("assistant", "Apple\nPear\n\n```\na\nb\n```", "cancelled")])
    text = to_markdown(conv)
    assert text.startswith("# Fruit list\n\n*started ")
    assert "backend `llamacpp` · model `smollm2`" in text
    assert "## System\n\nBe brief.\n" in text
    assert "## You\n\nthree fruits,  \none per line\n" in text  # line breaks kept
    assert "Apple  \nPear\n\n```\na\nb\n```\n\n*(stopped by the user)*" in text  # not inside code
    authored = Conversation(turns=[Turn("user", "q"), Turn("assistant", "", "error", backend="openai", model="gpt-x",
                                                           note="connection refused")])
    assert "## Assistant · gpt-x (openai)\n\n*(no text)*\n\n*(the backend failed during this reply: connection refused)*" \
        in to_markdown(authored)
    path = export_markdown(conv)
    assert path.parent == home / "exports" and path.name.endswith("-fruit-list-7.md")
    assert path.read_text(encoding="utf-8") == text
    # a chosen path: its folder must exist (a typo creates no folders)
    with pytest.raises(PromptDSLError, match=r"cannot write .*b\.md: the folder .*a does not exist"):
        export_markdown(conv, tmp_path / "a" / "b.md")
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    chosen = export_markdown(conv, tmp_path / "a" / "b.md")
    assert chosen == (tmp_path / "a" / "b.md").resolve() and chosen.read_text(encoding="utf-8") == text
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o666 & ~umask  # a new file gets the usual mode, not 0600
    # an existing file is replaced only when asked, and keeps its mode
    chosen.write_text("mine", encoding="utf-8")
    chosen.chmod(0o640)
    with pytest.raises(ExportExists, match="already exists"):
        export_markdown(conv, chosen)
    assert chosen.read_text(encoding="utf-8") == "mine"
    assert export_markdown(conv, chosen, overwrite=True) == chosen
    assert chosen.read_text(encoding="utf-8") == text and stat.S_IMODE(chosen.stat().st_mode) == 0o640
    into_dir = export_markdown(conv, tmp_path)
    assert into_dir.parent == tmp_path.resolve()
    assert not list(tmp_path.glob(".export-*")) and not list((tmp_path / "a").glob(".export-*"))  # no temp files
    with pytest.raises(PromptDSLError, match="nothing to export"):
        export_markdown(Conversation())
    with pytest.raises(PromptDSLError, match="cannot write"):
        export_markdown(conv, tmp_path / "a" / "b.md" / "c.md")


def test_hard_breaks_and_titles() -> None:
    assert hard_breaks("a\nb") == "a  \nb"
    assert hard_breaks("a\n\nb") == "a\n\nb"
    assert make_title("\n  first line  \nsecond") == "first line"
    assert len(make_title("x" * 200)) == 60


# --------------------------------------------------------------------------- prompt building


def test_conversation_messages_skip_empty_failed_replies() -> None:
    conv = Conversation(system="S", turns=[Turn("user", "a"), Turn("assistant", "", "error"),
                                           Turn("user", "b"), Turn("assistant", "partial", "cancelled")])
    assert [(m.role, m.content) for m in conv.messages()] == [
        ("system", "S"), ("user", "a"), ("user", "b"), ("assistant", "partial")]
    assert conv.prompt(upto=1).messages == (Message("system", "S"), Message("user", "a"))
    assert conv.prompt().mode == "chat"


@pytest.mark.model
def test_fit_prompt_drops_oldest_turns_on_the_real_model(tui_model: Any) -> None:
    backend = tui_model
    total = backend.context_length()
    long = "word " * 450  # ~450 tokens per turn (the tests' context is 2048)
    messages = (Message("system", "S"), *(Message("user" if i % 2 == 0 else "assistant", f"{i} {long}")
                                          for i in range(6)), Message("user", "last question"))
    fitted = fit_prompt(messages, backend, 256)
    assert fitted.total == total and fitted.dropped > 0
    assert fitted.used is not None and fitted.used + 256 <= total
    kept = fitted.prompt.messages
    assert kept[0] == Message("system", "S") and kept[-1] == Message("user", "last question")
    small = fit_prompt(messages[:1] + messages[-1:], backend, 256)
    assert small.dropped == 0 and small.used == backend.count_tokens(small.prompt)


def test_session_options() -> None:
    gen, back = split_options({"temperature": 0.2, "max_tokens": 9, "base_url": "http://x", "n_ctx": 512})
    assert gen == {"temperature": 0.2, "max_tokens": 9} and back == {"base_url": "http://x", "n_ctx": 512}
    s = Session.from_cli(None, None, {"seed": 5})
    assert not s.explicit and s.choice == BackendChoice("llamacpp", None, {})
    assert s.generation.temperature == 0.7 and s.generation.max_tokens == 512  # chat defaults
    assert s.options_for(0).seed == 5 and s.options_for(2).seed == 7  # regenerations move the seed
    assert Session.from_cli(None, None, {}).options_for(3).seed is None
    assert Session.from_cli("llamacpp", None, {}).explicit
    assert parse_options('base_url=http://h:1/v1 n_ctx=2048 name="a b"') == {
        "base_url": "http://h:1/v1", "n_ctx": 2048, "name": "a b"}
    assert parse_options(format_options({"n_ctx": 2048, "name": "a b"})) == {"n_ctx": 2048, "name": "a b"}
    with pytest.raises(ValueError, match=r"(?i)key=value"):
        parse_options("oops")


# --------------------------------------------------------------------------- specs and forms


def test_discover_specs(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "bad.yaml").write_text("version: 1\n", encoding="utf-8")
    (tmp_path / "specs" / "notes.txt").write_text("not a spec", encoding="utf-8")
    sentiment = ROOT / "specs" / "sentiment.yaml"
    entries = discover([sentiment, sentiment], tmp_path)
    assert [e.name for e in entries] == ["sentiment", "bad"]
    assert entries[0].spec is not None and entries[1].spec is None and "name" in (entries[1].error or "")


def test_field_kinds_and_probabilities() -> None:
    assert field_kind({"enum": [1, 2]}) == "enum"
    assert field_kind({"type": "boolean"}) == "bool"
    assert field_kind({"type": "integer"}) == "integer"
    assert field_kind({"type": "number"}) == "number"
    assert field_kind({"type": "string", "maxLength": 80}) == "line"
    assert field_kind({"type": "string"}) == "text"
    assert field_kind({"type": "array"}) == "json"
    probs = choice_probabilities({"a": -0.1, "b": -2.5, "c": -3.0})
    assert abs(sum(probs.values()) - 1) < 1e-9 and max(probs, key=probs.__getitem__) == "a"


# --------------------------------------------------------------------------- promptdsl chat: errors before the UI
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty



@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "no/such.yaml"], "no/such.yaml: spec file not found (nor a folder of specs)"),
        (["chat", "--backend", "nope"], "unknown backend 'nope'"),
        (["chat", "--model", "/no/such/model.gguf"], "model file not found: /no/such/model.gguf"),
    ],
)
def test_chat_bad_arguments_fail_before_the_ui(
    argv: list[str], message: str, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "__stdin__", _Stream(True))  # as in a terminal: the checks past the terminal's run too
    monkeypatch.setattr(sys, "__stderr__", _Stream(True))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("promptdsl: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_chat_bad_spec_is_a_located_one_line_error(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nbogus: 1\n", encoding="utf-8")
    assert main(["chat", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"promptdsl: error: {bad}:3:1: ") and "bogus" in err and "\n" not in err


@pytest.mark.model
def test_chat_continue_without_history(tui_model: Any, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--continue", "-o", "n_threads=1", "-o", "n_ctx=2048"]) == 2
    assert "there is no saved conversation yet" in capsys.readouterr().err


# --------------------------------------------------------------------------- history migrations (PRAGMA user_version)

V1_SCHEMA = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL DEFAULT '',
    system TEXT NOT NULL DEFAULT '', backend TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE, role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'done', created REAL NOT NULL);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
INSERT INTO conversations VALUES (1, 'Old chat', 'Be brief.', 'llamacpp', 'smollm2', 1.0, 2.0);
INSERT INTO messages VALUES (1, 1, 'user', 'hello', 'done', 1.0);
INSERT INTO messages VALUES (2, 1, 'assistant', 'hi there', 'done', 1.5);
INSERT INTO messages VALUES (3, 1, 'assistant', 'half', 'streaming', 1.6);
PRAGMA user_version=1;
"""


def _columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def test_history_migrates_a_version_1_database_keeping_its_chats(tmp_path: Path) -> None:
    """The schema the first release wrote (user_version 1), with rows, opened by this version."""
    path = tmp_path / "h.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    store = HistoryStore(path)
    assert store.found_version == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert {"options"} <= _columns(path, "conversations") and {"backend", "model", "note"} <= _columns(path, "messages")
    conv = store.load(1)
    assert (conv.title, conv.system, conv.backend, conv.model, conv.options) == (
        "Old chat", "Be brief.", "llamacpp", "smollm2", {})
    assert [(t.role, t.content, t.status, t.model) for t in conv.turns] == [
        ("user", "hello", "done", ""), ("assistant", "hi there", "done", ""), ("assistant", "half", "interrupted", "")]
    # the new tables work on the migrated file
    reply = Turn("assistant", "more", backend="llamacpp", model="smollm2")
    store.add_turn(1, reply)
    store.set_setting("system", "Be kind.")
    run = store.add_spec_run("tone", "/x/tone.yaml", {"sentence": "hi"}, "Hello.")
    assert store.load(1).turns[-1].author == "smollm2 (llamacpp)" and store.get_setting("system") == "Be kind."
    assert store.spec_runs("tone", "/x/tone.yaml")[0].id == run
    store.close()
    # opening again runs nothing more
    again = HistoryStore(path)
    assert again.found_version == SCHEMA_VERSION and len(again.load(1).turns) == 4


def test_history_creates_a_fresh_database_through_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    sqlite3.connect(path).close()  # an empty file: user_version 0
    store = HistoryStore(path)
    assert store.found_version == 0
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conv = Conversation(title="t", backend="b", model="m", options={"temperature": 0.2},
                        turns=[Turn("user", "q"), Turn("assistant", "", "error", note="server down")])
    store.create(conv)
    back = store.load(conv.id or -1)
    assert back.options == {"temperature": 0.2} and back.turns[1].note == "server down"


def test_history_from_a_newer_promptdsl_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(PromptDSLError, match=r"written by a newer promptdsl \(schema \d+"):
        HistoryStore(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    monkeypatch.setattr(history_module, "MIGRATIONS", (*history_module.MIGRATIONS, "ALTER TABLE nope ADD x;"))
    monkeypatch.setattr(history_module, "SCHEMA_VERSION", len(history_module.MIGRATIONS))
    with pytest.raises(PromptDSLError, match="cannot open the chat history"):
        HistoryStore(path)
    # steps that worked are committed one by one; the broken one rolled back
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert sqlite3.connect(path).execute("SELECT title FROM conversations").fetchall() == [("Old chat",)]


def test_history_counts_pages_snippets_models_and_recall(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i in range(5):
        store.create(Conversation(title=f"chat {i}", turns=[
            Turn("user", f"question {i} about the weather in Oslo" if i == 3 else f"question {i}"),
            Turn("assistant", f"answer {i}", backend="llamacpp", model="smollm2" if i % 2 else "other"),
        ]))
    assert store.count() == 5 and store.count("Oslo") == 1
    first, second = store.summaries(limit=3), store.summaries(limit=3, offset=3)
    assert [s.title for s in first + second] == [f"chat {i}" for i in (4, 3, 2, 1, 0)]
    hit = store.summaries("oslo")[0]
    assert hit.title == "chat 3" and "weather in Oslo" in hit.snippet and hit.models == "smollm2"
    assert store.prompts()[:2] == ["question 4", "question 3 about the weather in Oslo"]
    store.rename(first[0].id, "Renamed")
    assert store.summaries("Renamed")[0].id == first[0].id


# --------------------------------------------------------------------------- forms, options, context


def test_form_limits_and_every_error() -> None:
    assert limits({"type": "integer", "minimum": 5, "maximum": 50, "default": 12}) == (
        "integer · at least 5 · at most 50 · default 12")
    assert limits({"type": "string", "minLength": 1, "maxLength": 100}) == (
        "string · at least 1 character · at most 100 characters · required")
    assert limits({"enum": ["red", "blue"]}) == "one of red, blue · required"
    errors = schema_errors("tags", {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
                           ["abcd", "ok", "toolong"])
    assert len(errors) == 3 and errors[0].startswith("input 'tags':") and any("[0]" in e for e in errors)


def test_bad_option_values_are_refused_like_promptdsl_run(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="option 'temperature': 'abc' is not of type 'number'"):
        check_options({"temperature": "abc"})
    check_options({"temperature": 0.5, "n_threads": 1})
    assert main(["chat", "-o", "temperature=abc"]) == 2  # before any screen opens
    err = capsys.readouterr().err.strip()
    assert err == "promptdsl: error: option 'temperature': 'abc' is not of type 'number'"
    assert main(["run", "specs/sentiment.yaml", "-o", "temperature=abc", "--input", "text=x"]) == 2
    assert capsys.readouterr().err.strip() == err  # exactly as `promptdsl run` says it


class _Words(Backend):
    """Counts a token per word: enough for the fitting rules."""

    name = "words"

    def __init__(self) -> None:
        super().__init__("words")

    def stream(self, prompt: Any, options: Any, constraint: Any = None) -> Any:
        return iter(())

    def context_length(self) -> int:
        return 100

    def count_tokens(self, prompt: Any) -> int:
        return sum(len(m.content.split()) for m in prompt.messages)


def test_fit_prompt_refuses_a_message_longer_than_the_context() -> None:
    backend = _Words()
    history = (Message("system", "S"), Message("user", "a " * 40), Message("assistant", "b " * 40))
    fitted = fit_prompt((*history, Message("user", "short")), backend, 25)
    assert fitted.dropped == 1 and fitted.used == 42  # oldest first; system and last message kept
    assert [m.role for m in fitted.prompt.messages] == ["system", "assistant", "user"]
    with pytest.raises(ContextFull, match=r"too long for the model's context: .* takes 81 tokens, the context holds 100"):
        fit_prompt((*history, Message("user", "x " * 80)), backend, 25)
    with pytest.raises(ContextFull) as info:
        fit_prompt((Message("user", "x " * 80),), backend, 25)
    assert "fewshot" not in str(info.value) and "n_ctx" not in str(info.value)


def test_the_spec_form_checks_values_with_the_bounded_validator() -> None:
    """A spec's input pattern and a value typed into the form: the same time limit as the CLI's."""
    import time

    from promptdsl_tui.widgets.spec_form import schema_errors

    start = time.monotonic()
    found = schema_errors("w", {"type": "string", "pattern": "^(a+)+$"}, "a" * 40 + "!")
    assert found and found[0].startswith("input 'w': ") and time.monotonic() - start < 10
    assert schema_errors("w", {"type": "string", "pattern": "^a+$"}, "aaa") == []


def test_damaged_history_cells_read_without_a_crash() -> None:
    from promptdsl_tui.history import _json_list, _json_object, _json_value

    deep = "[" * 100_000 + "]" * 100_000
    assert _json_value("1" * 5000) == "1" * 5000 and _json_value(deep) == deep
    assert _json_object(deep) == {} and _json_list(deep, str) == []


@pytest.mark.parametrize(("stdin", "stderr", "which"), [(False, True, "input"), (True, False, "error")])
def test_chat_without_a_terminal_is_refused_before_the_model_loads(
    stdin: bool, stderr: bool, which: str, home: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`echo hi | promptdsl chat` used to load the model, then spin on the closed pipe forever."""
    monkeypatch.setattr(sys, "__stdin__", _Stream(stdin))
    monkeypatch.setattr(sys, "__stderr__", _Stream(stderr))
    monkeypatch.setattr(Session, "backend", lambda self: pytest.fail("the backend was loaded"))
    assert main(["chat"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"promptdsl: error: chat needs a terminal, and standard {which} is not one;")
    assert "\n" not in err


@pytest.mark.parametrize(("args", "said"), [
    (["-b", "nosuch"], "unknown backend 'nosuch'"),
    (["-m", "smolm2"], "llamacpp: unknown model 'smolm2' (did you mean 'smollm2'?)"),
    (["-o", "n_ctxx=512"], "llamacpp: unknown option 'n_ctxx' (did you mean 'n_ctx'?)"),
])
def test_chat_says_a_bad_backend_model_or_option_before_it_asks_for_a_terminal(
    args: list[str], said: str, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/tui.md: everything is checked before the screen switches; without a terminal, `-b nosuch`
    was answered with "chat needs a terminal", and with one the mistake showed only after that."""
    monkeypatch.setattr(sys, "__stdin__", _Stream(False))
    monkeypatch.setattr(Session, "backend", lambda self: pytest.fail("the backend was loaded"))
    assert main(["chat", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"promptdsl: error: {said}") and "\n" not in err, err


def test_switching_backends_releases_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each switch of options kept another copy of the model loaded (~200 MB for the embedded one)."""
    from promptdsl import Capability, registry

    closed: list[str] = []

    class Counted(Backend):
        name = "counted"
        capabilities = frozenset({Capability.CHAT})

        def stream(self, prompt: Any, options: Any, constraint: Any = None) -> Any:
            yield "x"

        def close(self) -> None:
            closed.append(str(self.options.get("n")))

    monkeypatch.setattr(registry, "backend_class", lambda name: Counted)
    monkeypatch.setattr(registry, "_instances", {})
    session = Session(BackendChoice("counted", None, {"n": 1}))
    first = session.backend()
    second = session.switch(BackendChoice("counted", None, {"n": 2}))
    assert closed == ["1"] and second is not first
    assert [inst for _, inst in registry._instances.values()] == [second]  # the old one is forgotten too
    assert session.switch(BackendChoice("counted", None, {"n": 2})) is second and closed == ["1"]  # same: kept
    # generation keys given with a switch are the chat's settings; a switch without one drops it
    session.switch(BackendChoice("counted", None, {"n": 2, "temperature": 0.2}))
    assert session.settings() == {"n": 2, "temperature": 0.2} and session.generation.temperature == 0.2
    session.switch(BackendChoice("counted", None, {"n": 2}))
    assert session.settings() == {"n": 2} and session.generation.temperature != 0.2


def test_a_reply_the_backend_marks_as_cut_ends_with_status_length() -> None:
    """CUT_OFF is the backend's own word that max_tokens stopped it: no token count needed, and not shown."""
    from promptdsl_tui.generation import Generation, run_generation

    from promptdsl.backend import CUT_OFF, GenerationOptions

    class Cut(_Words):
        def __init__(self, chunks: list[str]) -> None:
            super().__init__()
            self.chunks = chunks

        def stream(self, prompt: Any, options: Any, constraint: Any = None) -> Any:
            return iter(self.chunks)

    for chunks, status in ((["one", " two", CUT_OFF], "length"), (["one", " two"], "done")):
        gen = Generation(Turn("assistant", ""), (Message("user", "count"),), GenerationOptions(max_tokens=50))
        run_generation(gen, lambda chunks=chunks: Cut(chunks), None)
        assert (gen.status, gen.text, gen.tokens) == (status, "one two", 2)


def test_a_tool_reply_the_backend_marks_as_cut_ends_with_status_length() -> None:
    """The native path's answer comes from the tool loop, not a stream: its cut mark still counts."""
    from promptdsl_tui.generation import Generation, run_generation

    from promptdsl.backend import CUT_OFF, GenerationOptions
    from promptdsl.prompt import Prompt
    from promptdsl.tools.base import StopReason
    from promptdsl.tools.chat import ChatSteps

    for cut_off, status in ((CUT_OFF, "length"), (None, "done")):
        gen = Generation(Turn("assistant", ""), (Message("user", "count"),), GenerationOptions(max_tokens=50))
        gen.use_tools = lambda backend, g, cut_off=cut_off: ChatSteps(
            [], StopReason.ANSWER, "one two", Prompt(mode="chat", messages=()), cut_off)
        run_generation(gen, _Words, None)
        assert (gen.status, gen.text) == (status, "one two")


@pytest.mark.anyio
async def test_a_truncated_spec_result_says_it_was_cut() -> None:
    from textual.app import App, ComposeResult

    from promptdsl import loads_spec
    from promptdsl.result import Result
    from promptdsl.spec import Method

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield ResultView(id="view")

    async with One().run_test(size=(120, 20)) as pilot:
        view = pilot.app.query_one(ResultView)
        for truncated, note in (("max_tokens", "cut off at max_tokens"), ("context", "context ends"), (None, None)):
            view.show_result(spec, Result("The council met", Method.GENERATE, "The council met", "b", "m",
                                          truncated=truncated))
            await pilot.pause()
            shown = "\n".join(strip.text for strip in pilot.app.screen._compositor.render_strips())
            assert "The council met" in shown and (note in shown if note else "cut off" not in shown)
