"""A persistent result cache (SQLite): a re-run of the same data costs no model calls.

The key is a SHA-256 of everything that decides the answer: backend, model (and the local
model file's size and mtime, so a replaced file is not mistaken for the old one), backend
options, the compiled prompt (:meth:`Prompt.cache_key`), the output spec, the method and the
generation options. Only deterministic runs are cached (method ``score``, or temperature 0),
and only successful results: an error is always retried. Option values are hashed, never
stored, so API keys cannot leak into the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PromptDSLError
from .paths import cache_dir
from .prompt import Prompt
from .result import Response, Result
from .spec import Method

if TYPE_CHECKING:
    from .runner import Runner

#: Bump when the key recipe or the stored value format changes (old rows are then just misses).
KEY_VERSION = 1
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
    backend = runner.backend
    out = runner.spec.output
    output = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return _digest([
        KEY_VERSION,
        backend.name,
        backend.model_id,
        backend.fingerprint(),
        _digest(sorted((str(k), repr(v)) for k, v in backend.options.items())),  # hashed: may hold keys
        runner.method.value,
        output,
        dataclasses.asdict(runner.generation),
    ])


def prompt_key(base: str, prompt: Prompt) -> str:
    """The full key of one prompt under a runner's base key."""
    return hashlib.sha256((base + "\0" + prompt.cache_key()).encode("utf-8")).hexdigest()


class ResultCache:
    """Key -> stored result, in one SQLite file shared by every run (WAL, safe across processes)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise PromptDSLError(f"cannot open the result cache {self.path}: {exc}", exit_code=2) from None

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        value: dict[str, Any] = json.loads(row[0])
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO results (key, value, created) VALUES (?, ?, ?)", (key, text, time.time())
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM results")
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored(result: Result) -> dict[str, Any]:
    """What the cache keeps of a result (the answer, not its timing)."""
    return {"value": result.value, "raw": result.raw, "method": result.method.value, "scores": result.scores}


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
        return restored(hit, self.runner.backend.name, self.runner.backend.model_id)

    def store(self, prompt: Prompt, result: Result) -> None:
        if self.enabled and not result.cached:
            self.cache.put(self.key(prompt), stored(result))

    def stream(self, inputs: dict[str, Any]) -> Response:
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
        return self.stream(inputs).result()
