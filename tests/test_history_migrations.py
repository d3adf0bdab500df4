"""The chat history's schema migrations when several connections open the same file at once.

Two TUIs started together on a fresh history (or a TUI and a second one started a moment later)
must both open it: each migration step runs under the write lock and re-reads ``user_version``
there, so no step runs twice (``ALTER TABLE ADD COLUMN`` twice is "duplicate column name").
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from promptdsl_tui import history as history_module
from promptdsl_tui.conversation import Conversation, Turn
from promptdsl_tui.history import MIGRATIONS, SCHEMA_VERSION, HistoryStore

from promptdsl.errors import PromptDSLError

#: Columns and tables only the latest schema has (added by the last two migrations).
LATEST = {"conversations": {"options", "tools", "tool_choice"}, "messages": {"note", "steps"}}


def _version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def _assert_latest_schema(path: Path) -> None:
    assert _version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        for table, columns in LATEST.items():
            assert columns <= {r[1] for r in db.execute(f"PRAGMA table_info({table})")}, table
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "messages", "settings", "spec_runs"} <= tables


def _roundtrip(store: HistoryStore, title: str) -> None:
    """The store really works on the latest schema: a conversation with tools and steps comes back."""
    conv = Conversation(title=title, tools=["calculator"], turns=[Turn("user", "2+2?")])
    conv_id = store.create(conv)
    reply = Turn("assistant", "4", steps=[{"tool": "calculator", "result": "4"}])
    store.add_turn(conv_id, reply)
    back = store.load(conv_id)
    assert (back.title, back.tools) == (title, ["calculator"])
    assert [(t.content, t.steps) for t in back.turns] == [("2+2?", []), ("4", [{"tool": "calculator", "result": "4"}])]


Hook = Callable[[int, str], None]


def _trace_connections(monkeypatch: pytest.MonkeyPatch, hook: Hook) -> list[list[str]]:
    """Every connection opened from now on reports each statement it starts to ``hook(index, sql)``
    (index 0 is the first connection opened); returns the statements run, per connection."""
    real_connect = sqlite3.connect
    statements: list[list[str]] = []

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = real_connect(*args, **kwargs)
        index = len(statements)
        statements.append([])

        def trace(sql: str) -> None:
            statements[index].append(sql)
            hook(index, sql)

        db.set_trace_callback(trace)
        return db

    monkeypatch.setattr(sqlite3, "connect", connect)
    return statements


def _open(path: Path, into: list[HistoryStore | BaseException]) -> None:
    try:
        into.append(HistoryStore(path))
    except BaseException as exc:  # the trace callback would swallow it: keep it for the assertions
        into.append(exc)


# --------------------------------------------------------------------------- deterministic interleavings


def _open_interleaved(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[HistoryStore, HistoryStore, list[list[str]]]:
    """(A, B, each one's statements): A opens ``path``; just as A begins its first transaction, B
    opens the same file and finishes first."""
    second: list[HistoryStore | BaseException] = []

    def hook(index: int, sql: str) -> None:
        if index == 0 and sql.startswith("BEGIN") and not second:
            _open(path, second)

    statements = _trace_connections(monkeypatch, hook)
    first = HistoryStore(path)
    assert len(second) == 1 and isinstance(second[0], HistoryStore), second
    return first, second[0], statements


def test_two_connections_interleaved_on_a_fresh_file_both_end_at_the_latest_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reads user_version 0 on a fresh file; before A starts migrating, B opens the same file and
    migrates it all. A must notice under its lock that there is nothing left to do (the race gave
    "duplicate column name: options")."""
    path = tmp_path / "h.sqlite3"
    first, other, statements = _open_interleaved(path, monkeypatch)
    assert other.found_version == 0  # B created the schema...
    assert first.found_version == SCHEMA_VERSION  # ...and A, once it had the lock, found it done
    assert not [s for s in statements[0] if "ALTER TABLE" in s or "CREATE TABLE" in s]
    assert sum("ALTER TABLE conversations ADD COLUMN options" in s for s in statements[1]) == 1
    _assert_latest_schema(path)
    _roundtrip(first, "from A")
    _roundtrip(other, "from B")
    assert {s.title for s in first.summaries()} == {"from A", "from B"}
    first.close()
    other.close()


def test_a_second_open_waits_for_a_migration_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B opens the file while A is in the middle of a migration step (A holds the write lock): B waits
    for it (busy timeout) instead of failing with "database is locked", then both work."""
    path = tmp_path / "h.sqlite3"
    second: list[HistoryStore | BaseException] = []
    waited: list[bool] = []

    def hook(index: int, sql: str) -> None:
        if index == 0 and sql.startswith("PRAGMA user_version=1") and not waited:
            thread = threading.Thread(target=_open, args=(path, second))
            thread.start()
            thread.join(0.3)
            waited.append(thread.is_alive())  # still waiting for A's lock, not failed
            # A goes on and commits; B then gets the lock

    _trace_connections(monkeypatch, hook)
    first = HistoryStore(path)
    deadline = time.monotonic() + 10
    while not second and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waited == [True]
    assert len(second) == 1 and isinstance(second[0], HistoryStore), second
    other = second[0]
    assert first.found_version == 0 and other.found_version >= 1  # B never saw the file before A's step 0->1
    _assert_latest_schema(path)
    _roundtrip(first, "from A")
    _roundtrip(other, "from B")
    first.close()
    other.close()


def test_an_up_to_date_history_opens_while_another_connection_is_writing(tmp_path: Path) -> None:
    """A TUI in the middle of a write (it holds the write lock) does not hold up a second one starting:
    a file already at the latest schema is opened without taking the write lock."""
    path = tmp_path / "h.sqlite3"
    HistoryStore(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO settings(key, value) VALUES ('k', 'v')")
    try:
        start = time.monotonic()
        store = HistoryStore(path)
        assert time.monotonic() - start < 1.0
        assert store.found_version == SCHEMA_VERSION and store.get_setting("k") is None  # not committed yet
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert store.get_setting("k") == "v"
    store.close()


def test_switching_a_new_file_to_wal_waits_out_a_lock_instead_of_failing_at_once(tmp_path: Path) -> None:
    """While another connection holds the write lock on a file still in rollback-journal mode (as a
    second TUI does for a moment on a brand-new history), ``PRAGMA journal_mode=WAL`` fails with
    "database is locked" at once, ignoring the busy timeout: opening must retry it."""
    path = tmp_path / "h.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE unrelated (x)")
    release = threading.Timer(0.3, holder.execute, args=("COMMIT",))
    release.start()
    try:
        start = time.monotonic()
        store = HistoryStore(path)
        assert time.monotonic() - start >= 0.25  # it did have to wait for the holder
    finally:
        release.join()
        holder.close()
    assert store.found_version == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    _assert_latest_schema(path)
    _roundtrip(store, "after the wait")
    store.close()


def test_a_lock_held_longer_than_the_busy_timeout_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        for statement in history_module._statements(MIGRATIONS[0]):
            db.execute(statement)
        db.execute("PRAGMA user_version=1")
    monkeypatch.setattr(history_module, "BUSY_TIMEOUT", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(PromptDSLError, match=r"cannot open the chat history .*: database is locked"):
            HistoryStore(path)
        assert 0.15 < time.monotonic() - start < 3.0  # it waited the busy timeout, then gave up
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _version(path) == 1
    store = HistoryStore(path)  # once the lock is gone it migrates as usual
    assert store.found_version == 1
    _assert_latest_schema(path)
    store.close()


# --------------------------------------------------------------------------- many processes at once

PROCESSES = 4
FRESH_FILES = 5


def _open_each_at_once(paths: list[str], barrier: Any, results: Any) -> None:
    """In a child process: for each path, wait until every process is ready, then open and write."""
    for path in paths:
        try:
            barrier.wait(timeout=30)
            store = HistoryStore(Path(path))
            try:
                conv = Conversation(title=f"pid {os.getpid()}", tools=["calculator"], turns=[Turn("user", "hi")])
                conv_id = store.create(conv)
                assert store.load(conv_id).tools == ["calculator"]
            finally:
                store.close()
            results.put((path, "ok", store.found_version))
        except BaseException as exc:
            results.put((path, f"{type(exc).__name__}: {exc}", -1))


def test_several_processes_opening_the_same_fresh_history_at_once_all_succeed(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"h{i}.sqlite3") for i in range(FRESH_FILES)]
    # fork: a child starts in milliseconds (spawn re-imports pytest in each, seconds on a small machine);
    # it only opens SQLite files and uses the queue, nothing a lock held by another thread could block
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=_open_each_at_once, args=(paths, barrier, results)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    try:
        got = [results.get(timeout=60) for _ in range(PROCESSES * FRESH_FILES)]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    failures = [(Path(p).name, outcome) for p, outcome, _ in got if outcome != "ok"]
    assert failures == []
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    for path in paths:
        _assert_latest_schema(Path(path))
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM conversations").fetchone() == (PROCESSES,)
        found = sorted(v for p, _, v in got if p == path)
        assert len(found) == PROCESSES and found[0] == 0  # someone created it; nobody failed or skipped


# --------------------------------------------------------------------------- an old schema


def _version_2_file(path: Path) -> None:
    """A history as the release before chat tools left it (user_version 2), with a conversation."""
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:2]:
            for statement in history_module._statements(script):
                db.execute(statement)
        db.execute("INSERT INTO conversations(id, title, created, updated) VALUES (1, 'Old chat', 1.0, 2.0)")
        db.execute("INSERT INTO messages(conversation_id, role, content, created) VALUES (1, 'user', 'hello', 1.0)")
        db.execute("PRAGMA user_version=2")


def test_an_old_schema_migrates_once_even_when_two_open_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.sqlite3"
    _version_2_file(path)
    first, other, statements = _open_interleaved(path, monkeypatch)
    every = [s for per_connection in statements for s in per_connection]
    assert sum("ADD COLUMN tools " in s for s in every) == 1  # step 2 -> 3 ran exactly once
    assert not [s for s in every if "ADD COLUMN options" in s]  # earlier steps did not run again
    assert (other.found_version, first.found_version) == (2, SCHEMA_VERSION)
    _assert_latest_schema(path)
    for store in (first, other):
        old = store.load(1)
        assert (old.title, old.tools, old.tool_choice) == ("Old chat", [], "auto")
        assert [(t.content, t.steps) for t in old.turns] == [("hello", [])]
    first.close()
    other.close()

    # opened again: nothing to migrate, and not even the write lock is taken
    before = len(statements)
    again = HistoryStore(path)
    mine = [s for per_connection in statements[before:] for s in per_connection]
    assert again.found_version == SCHEMA_VERSION
    assert not [s for s in mine if s.startswith(("BEGIN", "ALTER", "CREATE"))]
    again.close()


# --------------------------------------------------------------------------- a file that is not a database


def test_a_garbage_file_is_still_a_clear_error_at_once_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    start = time.monotonic()
    with pytest.raises(PromptDSLError, match=r"cannot open the chat history .*h\.sqlite3: file is not a database"):
        HistoryStore(path)
    assert time.monotonic() - start < 2.0  # not retried as if it were a lock
    assert path.read_bytes() == garbage
