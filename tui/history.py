"""Conversations saved in SQLite under the user's data directory.

Every streamed chunk updates its message row (WAL mode, ~50 µs a write), so a
reply survives the app being killed mid-stream: on the next start the row still
says ``streaming`` and is shown as interrupted with the text that came.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from promptdsl.errors import PromptDSLError
from promptdsl.paths import data_dir

from .conversation import Conversation, Role, Status, Turn

DB_NAME = "history.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stopped worker's last write hits only its own row
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'done',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""


@dataclass(frozen=True)
class ConversationSummary:
    """One row of the history list."""

    id: int
    title: str
    backend: str
    model: str
    updated: float
    messages: int


class HistoryStore:
    """Thread-safe access to the history database (the UI and the generation thread both write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise PromptDSLError(f"cannot open the chat history {path}: {exc}") from None

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

    # ------------------------------------------------------------------ writes

    def create(self, conv: Conversation) -> int:
        """Insert ``conv`` (and its turns); sets and returns its id."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO conversations(title, system, backend, model, created, updated) VALUES (?,?,?,?,?,?)",
                (conv.title, conv.system, conv.backend, conv.model, conv.created, now),
            )
            conv.id = int(cast(int, cur.lastrowid))
            for turn in conv.turns:
                self._insert_turn(db, conv.id, turn, now)
        return conv.id

    def save_meta(self, conv: Conversation) -> None:
        """Store title, system prompt, backend and model of a saved conversation."""
        if conv.id is None:
            return
        with self._tx() as db:
            db.execute(
                "UPDATE conversations SET title=?, system=?, backend=?, model=?, updated=? WHERE id=?",
                (conv.title, conv.system, conv.backend, conv.model, time.time(), conv.id),
            )

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
            "INSERT INTO messages(conversation_id, role, content, status, created) VALUES (?,?,?,?,?)",
            (conv_id, turn.role, turn.content, turn.status, now),
        )
        turn.id = int(cast(int, cur.lastrowid))

    def update_turn(self, turn_id: int, content: str, status: Status) -> None:
        """Rewrite one message (called for every streamed chunk; autocommit, no fsync in WAL)."""
        with self._lock:
            self._db.execute("UPDATE messages SET content=?, status=? WHERE id=?", (content, status, turn_id))

    def delete_turn(self, turn_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM messages WHERE id=?", (turn_id,))

    def delete(self, conv_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM conversations WHERE id=?", (conv_id,))

    # ------------------------------------------------------------------ reads

    def summaries(self, query: str = "", limit: int = 200) -> list[ConversationSummary]:
        """Newest first; ``query`` matches titles and message text."""
        sql = (
            "SELECT c.id, c.title, c.backend, c.model, c.updated,"
            " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id)"
            " FROM conversations c"
        )
        args: tuple[Any, ...] = ()
        if query.strip():
            like = f"%{query.strip()}%"
            sql += (
                " WHERE c.title LIKE ? OR EXISTS (SELECT 1 FROM messages m"
                " WHERE m.conversation_id = c.id AND m.content LIKE ?)"
            )
            args = (like, like)
        sql += " ORDER BY c.updated DESC, c.id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [ConversationSummary(int(r[0]), r[1], r[2], r[3], float(r[4]), int(r[5])) for r in rows]

    def latest_id(self) -> int | None:
        row = self._one("SELECT id FROM conversations ORDER BY updated DESC, id DESC LIMIT 1")
        return None if row is None else int(row[0])

    def load(self, conv_id: int) -> Conversation:
        """A saved conversation; replies that were still streaming come back as ``interrupted``."""
        row = self._one(
            "SELECT id, title, system, backend, model, created, updated FROM conversations WHERE id=?",
            (conv_id,),
        )
        if row is None:
            raise PromptDSLError(f"no conversation with id {conv_id} in {self.path}")
        with self._lock:
            msgs = self._db.execute(
                "SELECT id, role, content, status FROM messages WHERE conversation_id=? ORDER BY id",
                (conv_id,),
            ).fetchall()
        turns = [
            Turn(cast(Role, m[1]), m[2], cast(Status, "interrupted" if m[3] == "streaming" else m[3]), int(m[0]))
            for m in msgs
        ]
        return Conversation(int(row[0]), row[1], row[2], row[3], row[4], turns, float(row[5]), float(row[6]))

    def models(self) -> list[tuple[str, str]]:
        """Distinct (backend, model) pairs used before, newest first (suggestions for the picker)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT backend, model, MAX(updated) AS u FROM conversations WHERE backend != ''"
                " GROUP BY backend, model ORDER BY u DESC"
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
