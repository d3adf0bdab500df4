"""A persistent result cache (SQLite): a re-run of the same data costs no model calls.

The key is a SHA-256 of everything that decides the answer: backend, model (and the local
model file's size and mtime, so a replaced file is not mistaken for the old one), backend
options, the compiled prompt (:meth:`Prompt.cache_key`), the output spec, the method and the
generation options. Only deterministic runs are cached (method ``score``, or temperature 0),
and only successful results: an error is always retried. Option values are hashed, never
stored, so API keys cannot leak into the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import quote
from .inputs import has_surrogate
from .outputs import empty_answer
from .paths import cache_dir
from .prompt import Prompt
from .result import Response, Result
from .spec import Method, OutputSpec, OutputType

if TYPE_CHECKING:
    from .runner import Runner

#: Bump when the key recipe or the stored value format changes (old rows are then just misses).
KEY_VERSION = 2  # 2: values keep 'truncated'; answers are held to the empty-text and 'format' rules
FILENAME = "results.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_path() -> Path:
    """``<cache dir>/results.sqlite3`` (``$PROMPTDSL_HOME/cache`` when that is set)."""
    return cache_dir() / FILENAME


def cacheable(runner: Runner) -> bool:
    """True when the runner's answers are deterministic: scoring, or greedy decoding."""
    if runner.tool_loop is not None:  # tools may answer differently each time (time, files, servers)
        return False
    return bool(runner.method is Method.SCORE or runner.generation.temperature == 0)


def _digest(obj: Any) -> str:
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def runner_key(runner: Runner) -> str:
    """The part of the key that is the same for every input of one runner (computed once)."""
    from .runner import _call  # the plugin's own methods: their failures name the plugin

    backend = runner.backend
    out = runner.spec.output
    output = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return _digest([
        KEY_VERSION,
        backend.name,
        runner.model_id,
        _call(backend, backend.fingerprint),
        _digest(sorted((str(k), repr(v)) for k, v in backend.options.items())),  # hashed: may hold keys
        runner.method.value,
        output,
        dataclasses.asdict(runner.generation),
    ])


def prompt_key(base: str, prompt: Prompt) -> str:
    """The full key of one prompt under a runner's base key."""
    return hashlib.sha256((base + "\0" + prompt.cache_key()).encode("utf-8")).hexdigest()


def journal_wal(db: sqlite3.Connection, seconds: float = 30.0) -> None:
    """Switch ``db`` to WAL, waiting out other processes that create the same file: there
    sqlite answers "database is locked" at once instead of honouring the busy timeout."""
    deadline = time.monotonic() + seconds
    delay = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.1)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """"database is locked": another connection holds the lock (a garbage file is another error)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(exc)


class ResultCache:
    """Key -> stored result, in one SQLite file shared by every run (WAL, safe across processes).

    The cache is disposable: it never stops a run. A home that cannot be written, a damaged or
    foreign file, a full disk: the cache turns itself off, and the first problem is handed to
    ``on_problem`` once (front ends print it as a warning, naming the file and ``--no-cache``).
    A stored value that is not a well-formed answer for the spec is a miss, never a result.
    """

    def __init__(self, path: Path | None = None, *, on_problem: Callable[[str], None] | None = None) -> None:
        self.hits = 0
        self.misses = 0
        self.problem: str | None = None  # why the cache is off (None while it works)
        self.on_problem = on_problem
        self._warned = False
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path = path or cache_dir(create=False) / FILENAME  # named in a warning if the folder fails
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            journal_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(results)")]
            if columns != ["key", "value", "created"]:
                raise sqlite3.DatabaseError(f"its table has the columns {columns}, not key, value, created")
            self._db.execute("SELECT key, value FROM results LIMIT 1").fetchall()
            self._db.commit()
        except (OSError, sqlite3.Error, ValueError) as exc:
            self._disable(f"cannot open it: {_reason(exc)}", exc)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _disable(self, why: str, exc: BaseException | None = None) -> None:
        """Turn the cache off for the rest of this run and report why, once."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        busy = isinstance(exc, sqlite3.OperationalError) and is_busy(exc)
        self.note(why, off="busy" if busy else "broken")

    def note(self, why: str, *, off: str | None = None) -> None:
        """Record a problem with the cache; the first one goes to ``on_problem``.
        ``off``: the cache is off because it is "busy" (another program holds it) or "broken"."""
        if self.problem is None:
            self.problem = f"result cache {self.path}: {why}"
            if off == "busy":  # the file is fine: deleting it would lose every entry for nothing
                self.problem += "; another program holds it locked, so this run goes on without it"
            elif off is not None:
                self.problem += "; running without it (delete the file to start a new cache, or pass --no-cache)"
        if not self._warned and self.on_problem is not None:
            self._warned = True
            self.on_problem(self.problem)

    def get(self, key: str) -> dict[str, Any] | None:
        if self._db is None:
            return None
        try:
            with self._lock:
                row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._disable(f"cannot read it: {_reason(exc)}", exc)
            return None
        value: Any = None
        if row is not None:
            try:
                value = json.loads(row[0]) if isinstance(row[0], str | bytes) else None
            except (ValueError, RecursionError):
                value = None
            if not isinstance(value, dict):
                self.note("it holds a damaged entry (ignored; it will be replaced)")
                value = None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        found: dict[str, Any] = value
        return found

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self._db is None:
            return
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO results (key, value, created) VALUES (?, ?, ?)", (key, text, time.time())
                )
                self._db.commit()
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._disable(f"cannot write it: {_reason(exc)}", exc)

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def clear(self) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("DELETE FROM results")
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return quote(text, 120)[1:-1]


def stored(result: Result) -> dict[str, Any]:
    """What the cache keeps of a result (the answer, not its timing)."""
    kept = {"value": result.value, "raw": result.raw, "method": result.method.value, "scores": result.scores}
    return {**kept, "truncated": result.truncated} if result.truncated else kept


def cached_problem(value: dict[str, Any], out: OutputSpec) -> str | None:
    """Why a stored value is not an answer this spec could have given (None when it is)."""
    from .loader import output_problem

    if not isinstance(value.get("raw"), str) or value.get("method") not in {m.value for m in Method}:
        return "malformed entry"
    scores = value.get("scores")
    if scores is not None and not (
        isinstance(scores, dict)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values())
    ):
        return "malformed scores"
    if "value" not in value:
        return "no value"
    try:  # an answer stored before answers were held to standard JSON, or edited: NaN, a lone surrogate
        json.dumps([value["value"], value.get("raw")], allow_nan=False)  # (a score of -inf is a real one)
    except (ValueError, RecursionError):
        return "not standard JSON"
    if has_surrogate(value):
        return "a lone surrogate"
    if out.type is OutputType.TEXT and isinstance(value["value"], str) and empty_answer(value["value"]):
        return "an empty answer"
    return output_problem(out, value["value"])


def restored(value: dict[str, Any], backend: str, model: str) -> Result:
    """A cached answer as a Result (``cached=True``, zero seconds)."""
    return Result(
        value=value["value"],
        method=Method(value["method"]),
        raw=value["raw"],
        backend=backend,
        model=model,
        scores=value.get("scores"),
        seconds=0.0,
        cached=True,
        truncated=value["truncated"] if value.get("truncated") in ("max_tokens", "context") else None,
    )


class CachedRunner:
    """Wraps a Runner: answers from the cache when it can, stores new deterministic answers.

    Use :meth:`lookup` / :meth:`store` to split the work (the dataset runner looks up in its
    own thread and runs misses in a pool), or :meth:`stream` / :meth:`run` as a drop-in.
    """

    def __init__(self, runner: Runner, cache: ResultCache) -> None:
        self.runner = runner
        self.cache = cache
        self.enabled = cacheable(runner)
        self._base = runner_key(runner) if self.enabled else ""

    def key(self, prompt: Prompt) -> str:
        return prompt_key(self._base, prompt)

    def lookup(self, prompt: Prompt) -> Result | None:
        if not self.enabled:
            return None
        hit = self.cache.get(self.key(prompt))
        if hit is None:
            return None
        if cached_problem(hit, self.runner.spec.output) is not None:
            self.cache.hits -= 1
            self.cache.misses += 1
            self.cache.note("it holds an entry that does not fit the spec's output (ignored; it will be replaced)")
            return None
        return restored(hit, self.runner.backend.name, self.runner.model_id)

    def store(self, prompt: Prompt, result: Result) -> None:
        if self.enabled and not result.cached:
            self.cache.put(self.key(prompt), stored(result))

    def response(self, inputs: dict[str, Any]) -> Response:
        values, prompt = self.runner.prepare(inputs)
        hit = self.lookup(prompt)
        if hit is not None:
            cached = hit
            return Response(iter([hit.raw]), lambda raw: cached)
        inner: Response = self.runner.respond(values, prompt)

        def finish(raw: str) -> Result:
            result = inner.result()
            self.store(prompt, result)
            return result

        return Response(iter(inner), finish)

    def run(self, inputs: dict[str, Any]) -> Result:
        return self.response(inputs).result()
