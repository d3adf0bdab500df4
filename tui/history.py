"""Conversations saved in SQLite under the user's data directory.

Every streamed chunk updates its message row (WAL mode, ~50 µs a write), so a
reply survives the app being killed mid-stream: on the next start the row still
says ``streaming`` and is shown as interrupted with the text that came.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from promptdsl.cache import journal_wal
from promptdsl.errors import PromptDSLError
from promptdsl.paths import data_dir

from .conversation import Conversation, Role, Status, Turn

DB_NAME = "history.sqlite3"
#: Seconds a connection waits for another one (a second TUI, or one migrating the file) to release
#: the database before failing with "database is locked"; writes here take microseconds.
BUSY_TIMEOUT = 10.0
T = TypeVar("T")

#: Schema migrations, keyed on ``PRAGMA user_version`` (as oterm does): migration ``i`` takes a
#: database at version ``i`` to ``i + 1``. Append new steps; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: conversations and their messages
    """
    CREATE TABLE IF NOT EXISTS conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL DEFAULT '',
        system TEXT NOT NULL DEFAULT '',
        backend TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stopped worker's last write hits only its row
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'done',
        created REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
    """,
    # 1 -> 2: per-conversation options, which model wrote each reply and why it ended,
    # app settings (the default system prompt), spec runs
    """
    ALTER TABLE conversations ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE messages ADD COLUMN backend TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN model TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN note TEXT NOT NULL DEFAULT '';
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE spec_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        spec TEXT NOT NULL,           -- the spec's name
        path TEXT NOT NULL DEFAULT '',
        inputs TEXT NOT NULL,         -- JSON object as validated
        value TEXT,                   -- JSON of the result value; NULL when it failed
        error TEXT NOT NULL DEFAULT '',
        backend TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL
    );
    CREATE INDEX spec_runs_by_spec ON spec_runs(path, spec, id);
    """,
    # 2 -> 3: the tools a conversation may call (JSON list of -T entries), each reply's tool steps
    """
    ALTER TABLE conversations ADD COLUMN tools TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE conversations ADD COLUMN tool_choice TEXT NOT NULL DEFAULT 'auto';
    ALTER TABLE messages ADD COLUMN steps TEXT NOT NULL DEFAULT '[]';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring ``db`` to :data:`SCHEMA_VERSION`, one step per transaction; returns the version found.

    Safe when several processes open the same file at once (two TUIs started together on a fresh
    history): each step takes the write lock first (``BEGIN IMMEDIATE``, waiting up to the
    connection's busy timeout) and reads ``user_version`` again under it, so a step another
    connection has applied meanwhile is not run twice (``ALTER TABLE ADD COLUMN`` is not idempotent).
    The version returned is the one seen under the lock the first time, i.e. what this connection
    started from; a database already up to date takes no write lock at all.
    """
    version = _user_version(db, path)  # the usual case, an up-to-date file: no write lock needed
    if version == SCHEMA_VERSION:
        return version
    found: int | None = None
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _user_version(db, path)
            if found is None:
                found = version
            if version >= SCHEMA_VERSION:
                db.execute("COMMIT")
                return found
            for statement in _statements(MIGRATIONS[version]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={version + 1}")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _user_version(db: sqlite3.Connection, path: Path) -> int:
    """``PRAGMA user_version``; refuses a file written by a newer promptdsl (before any write to it)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise PromptDSLError(
            f"the chat history {path} was written by a newer promptdsl (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade promptdsl or set PROMPTDSL_HOME to another folder"
        )
    return version


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own, outside our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]


@dataclass(frozen=True)
class ConversationSummary:
    """One row of the history list; ``models`` are the ones that wrote its replies."""

    id: int
    title: str
    backend: str
    model: str
    updated: float
    messages: int
    models: str = ""
    snippet: str = ""


@dataclass(frozen=True)
class SpecRun:
    """One saved run of a spec: the inputs given and the value (or error) it gave."""

    id: int
    spec: str
    path: str
    inputs: dict[str, Any]
    value: Any
    error: str
    backend: str
    model: str
    created: float


class HistoryStore:
    """Thread-safe access to the history database (the UI and the generation thread both write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
            journal_wal(db, BUSY_TIMEOUT)  # a garbage file fails here: "file is not a database"
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self.found_version = migrate(db, path)
        except BaseException as exc:
            if db is not None:
                db.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise PromptDSLError(f"cannot open the chat history {path}: {exc}") from None
            raise
        self._db = db

    @classmethod
    def default(cls) -> HistoryStore:
        """The store under ``$PROMPTDSL_HOME`` or the platform data directory."""
        return cls(data_dir() / DB_NAME)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # ------------------------------------------------------------------ conversations

    def create(self, conv: Conversation) -> int:
        """Insert ``conv`` (and its turns); sets and returns its id."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO conversations(title, system, backend, model, options, tools, tool_choice, created,"
                " updated) VALUES (?,?,?,?,?,?,?,?,?)",
                (conv.title, conv.system, conv.backend, conv.model, json.dumps(conv.options), json.dumps(conv.tools),
                 conv.tool_choice, conv.created, now),
            )
            conv.id = int(cast(int, cur.lastrowid))
            for turn in conv.turns:
                self._insert_turn(db, conv.id, turn, now)
        return conv.id

    def save_meta(self, conv: Conversation) -> None:
        """Store title, system prompt and settings (backend, model, options, tools) of a saved conversation."""
        if conv.id is None:
            return
        self._run(
            "UPDATE conversations SET title=?, system=?, backend=?, model=?, options=?, tools=?, tool_choice=?"
            " WHERE id=?",
            (conv.title, conv.system, conv.backend, conv.model, json.dumps(conv.options), json.dumps(conv.tools),
             conv.tool_choice, conv.id),
        )

    def title(self, conv_id: int) -> str | None:
        """The stored title (None when the conversation is gone)."""
        row = self._one("SELECT title FROM conversations WHERE id=?", (conv_id,))
        return None if row is None else str(row[0] or "")

    def rename(self, conv_id: int, title: str) -> None:
        self._run("UPDATE conversations SET title=? WHERE id=?", (title, conv_id))

    def add_turn(self, conv_id: int, turn: Turn) -> int:
        with self._tx() as db:
            now = time.time()
            self._insert_turn(db, conv_id, turn, now)
            db.execute("UPDATE conversations SET updated=? WHERE id=?", (now, conv_id))
        assert turn.id is not None
        return turn.id

    @staticmethod
    def _insert_turn(db: sqlite3.Connection, conv_id: int, turn: Turn, now: float) -> None:
        cur = db.execute(
            "INSERT INTO messages(conversation_id, role, content, status, backend, model, note, steps, created)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (conv_id, turn.role, turn.content, turn.status, turn.backend, turn.model, turn.note,
             json.dumps(turn.steps, ensure_ascii=False, default=str), now),
        )
        turn.id = int(cast(int, cur.lastrowid))

    def update_turn(self, turn_id: int, content: str, status: Status, note: str | None = None) -> None:
        """Rewrite one message (called as a reply streams; autocommit, no fsync in WAL)."""
        if note is None:
            self._run("UPDATE messages SET content=?, status=? WHERE id=?", (content, status, turn_id))
        else:
            self._run("UPDATE messages SET content=?, status=?, note=? WHERE id=?", (content, status, note, turn_id))

    def set_author(self, turn_id: int, backend: str, model: str) -> None:
        self._run("UPDATE messages SET backend=?, model=? WHERE id=?", (backend, model, turn_id))

    def finish_turn(
        self, turn_id: int, content: str, status: Status, note: str | None, steps: list[dict[str, Any]]
    ) -> None:
        """A reply's final text and status, and its tool calls when it made any: one write to
        retry whole when it fails (a locked database)."""
        self.update_turn(turn_id, content, status, note)
        if steps:
            self.set_steps(turn_id, steps)

    def set_steps(self, turn_id: int, steps: list[dict[str, Any]]) -> None:
        """The tool calls a reply made (shown again as cards when the conversation is reopened)."""
        self._run("UPDATE messages SET steps=? WHERE id=?", (json.dumps(steps, ensure_ascii=False, default=str),
                                                            turn_id))

    def delete_turn(self, turn_id: int) -> None:
        self._run("DELETE FROM messages WHERE id=?", (turn_id,))

    def delete(self, conv_id: int) -> None:
        self._run("DELETE FROM conversations WHERE id=?", (conv_id,))

    # ------------------------------------------------------------------ reads

    def count(self, query: str = "") -> int:
        where, args = _match(query)
        return int(self._one(f"SELECT COUNT(*) FROM conversations c{where}", args)[0])

    def summaries(self, query: str = "", limit: int = 200, offset: int = 0) -> list[ConversationSummary]:
        """Newest first; ``query`` matches titles and message text (a snippet of the match comes along)."""
        where, args = _match(query)
        like = args[0] if args else ""
        sql = (
            "SELECT c.id, c.title, c.backend, c.model, c.updated,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id),"
            " (SELECT group_concat(DISTINCT m.model) FROM messages m"
            "   WHERE m.conversation_id = c.id AND m.role = 'assistant' AND m.model != '' AND m.content != ''),"
            " (SELECT m.content FROM messages m WHERE m.conversation_id = c.id AND ? != ''"
            "   AND m.content LIKE ? ESCAPE '\\'"
            "   ORDER BY m.id LIMIT 1)"
            f" FROM conversations c{where} ORDER BY c.updated DESC, c.id DESC LIMIT ? OFFSET ?"
        )
        rows = self._all(sql, (like, like, *args, limit, offset))
        needle = query.strip().lower()
        return [
            ConversationSummary(int(r[0]), r[1], r[2], r[3], float(r[4]), int(r[5]), r[6] or "",
                                _snippet(r[7] or "", needle))
            for r in rows
        ]

    def latest_id(self) -> int | None:
        row = self._one("SELECT id FROM conversations ORDER BY updated DESC, id DESC LIMIT 1")
        return None if row is None else int(row[0])

    def load(self, conv_id: int) -> Conversation:
        """A saved conversation; replies that were still streaming come back as ``interrupted``."""
        row = self._one(
            "SELECT id, title, system, backend, model, options, created, updated, tools, tool_choice"
            " FROM conversations WHERE id=?",
            (conv_id,),
        )
        if row is None:
            raise PromptDSLError(f"no conversation with id {conv_id} in {self.path}")
        msgs = self._all(
            "SELECT id, role, content, status, backend, model, note, steps FROM messages"
            " WHERE conversation_id=? ORDER BY id",
            (conv_id,),
        )
        turns = [
            Turn(cast(Role, m[1]), m[2], cast(Status, "interrupted" if m[3] == "streaming" else m[3]), int(m[0]),
                 m[4], m[5], m[6], _json_list(m[7], dict))
            for m in msgs
        ]
        return Conversation(int(row[0]), row[1], row[2], row[3], row[4], _json_object(row[5]),
                            _json_list(row[8], str), str(row[9]), turns, float(row[6]), float(row[7]))

    def models(self) -> list[tuple[str, str]]:
        """Distinct (backend, model) pairs used before, newest first (suggestions for the picker)."""
        rows = self._all(
            "SELECT backend, model, MAX(updated) AS u FROM conversations WHERE backend != ''"
            " GROUP BY backend, model ORDER BY u DESC"
        )
        return [(r[0], r[1]) for r in rows]

    def prompts(self, limit: int = 500) -> list[str]:
        """Messages the user sent, newest first, each once (what Up recalls)."""
        rows = self._all(
            "SELECT content FROM messages WHERE role='user' GROUP BY content ORDER BY MAX(id) DESC LIMIT ?", (limit,)
        )
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ settings and spec runs

    def get_setting(self, key: str) -> str | None:
        row = self._one("SELECT value FROM settings WHERE key=?", (key,))
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        self._run("INSERT INTO settings(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                  (key, value))

    def add_spec_run(
        self, spec: str, path: str, inputs: dict[str, Any], value: Any = None, *, error: str = "",
        backend: str = "", model: str = "",
    ) -> int:
        encoded = None if error else json.dumps(value, ensure_ascii=False)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO spec_runs(spec, path, inputs, value, error, backend, model, created)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (spec, path, json.dumps(inputs, ensure_ascii=False), encoded, error, backend, model, time.time()),
            )
        return int(cast(int, cur.lastrowid))

    def spec_runs(self, spec: str, path: str, limit: int = 20) -> list[SpecRun]:
        """Runs of one spec file, newest first."""
        rows = self._all(
            "SELECT id, spec, path, inputs, value, error, backend, model, created FROM spec_runs"
            " WHERE spec=? AND path=? ORDER BY id DESC LIMIT ?",
            (spec, path, limit),
        )
        return [
            SpecRun(int(r[0]), r[1], r[2], _json_object(r[3]), None if r[4] is None else _json_value(r[4]), r[5],
                    r[6], r[7], float(r[8]))
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def unsaved(write: Callable[[], object]) -> str | None:
    """Run one history write for the UI: None when it worked, else the one line to show.

    A locked database (another process holds the write lock past :data:`BUSY_TIMEOUT`), a full
    disk or a closed store must not end the app or lose what is on screen: the caller keeps its
    state and shows "history not saved: …".
    """
    try:
        write()
    except Exception as exc:
        return f"history not saved: {exc}"
    return None


def _match(query: str) -> tuple[str, tuple[Any, ...]]:
    """WHERE clause matching titles and message text."""
    if not query.strip():
        return "", ()
    like = f"%{like_escape(query.strip())}%"
    return (
        " WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS"
        " (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\')",
        (like, like),
    )


def like_escape(text: str) -> str:
    """``text`` matched literally by ``LIKE … ESCAPE '\\'`` (``_`` and ``%`` are not wildcards)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _snippet(text: str, needle: str, width: int = 50) -> str:
    """A one-line excerpt of ``text`` around ``needle``."""
    if not needle or not text:
        return ""
    flat = " ".join(text.split())
    at = max(flat.lower().find(needle), 0)
    start = max(at - width // 3, 0)
    out = flat[start:start + width]
    return ("…" if start else "") + out + ("…" if start + width < len(flat) else "")


def _json_value(text: str) -> Any:
    """A stored value; a hand-edited or damaged cell reads as its text (never a crash on open)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except (ValueError, RecursionError):  # a hand-edited or damaged row
        return {}
    return value if isinstance(value, dict) else {}


def _json_list(text: str | None, kind: type[T]) -> list[T]:
    """The items of type ``kind`` in a JSON list column; anything else (a hand-edited row) reads as empty."""
    try:
        value = json.loads(text or "[]")
    except (ValueError, RecursionError):
        return []
    return [v for v in value if isinstance(v, kind)] if isinstance(value, list) else []
