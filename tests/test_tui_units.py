"""The TUI's plain-Python parts: history store, export, prompt fitting, spec discovery, CLI errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui.conversation import Conversation, Turn, make_title
from promptdsl_tui.export import export_markdown, hard_breaks, to_markdown
from promptdsl_tui.history import HistoryStore
from promptdsl_tui.screens.backend import format_options, parse_options
from promptdsl_tui.session import BackendChoice, Session, fit_prompt
from promptdsl_tui.specs import discover
from promptdsl_tui.widgets.result_view import choice_probabilities
from promptdsl_tui.widgets.spec_form import field_kind
from test_tui_support import ROOT

from promptdsl.backend import split_options
from promptdsl.cli import main
from promptdsl.errors import PromptDSLError
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
    path = export_markdown(conv)
    assert path.parent == home / "exports" and path.name.endswith("-fruit-list-7.md")
    assert path.read_text(encoding="utf-8") == text
    chosen = export_markdown(conv, tmp_path / "a" / "b.md")
    assert chosen == (tmp_path / "a" / "b.md").resolve() and chosen.read_text(encoding="utf-8") == text
    into_dir = export_markdown(conv, tmp_path)
    assert into_dir.parent == tmp_path.resolve()
    assert not list(tmp_path.glob(".export-*"))  # no temp files left behind
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "no/such.yaml"], "no/such.yaml: no such spec file or directory"),
        (["chat", "--backend", "nope"], "unknown backend 'nope'"),
        (["chat", "--model", "/no/such/model.gguf"], "model file not found: /no/such/model.gguf"),
    ],
)
def test_chat_bad_arguments_fail_before_the_ui(
    argv: list[str], message: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
