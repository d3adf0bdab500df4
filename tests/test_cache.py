"""The SQLite result cache: storage, what the key depends on, what is (not) cached.

A scripted backend is used here because these tests count model calls exactly; the
cache on the real model is exercised by tests/test_dataset.py (re-run of a dataset).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_runner import CHOICE_SPEC as CHOICE

from promptdsl import Backend, Capability, Constraint, GenerationOptions, OutputError, Prompt, Runner, loads_spec
from promptdsl.cache import CachedRunner, ResultCache, cacheable, default_path, prompt_key, runner_key

TEXT = """\
version: 1
name: t
inputs: {text: {type: string}}
output: {type: text}
"""


class Counting(Backend):
    """Scores or echoes deterministically and counts every call."""

    name = "counting"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.SCORE}
    )

    def __init__(self, model: str | None = "m1", options: dict[str, Any] | None = None, reply: str = "hi"):
        super().__init__(model, options or {})
        self.calls = 0
        self.reply = reply

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        self.calls += 1
        yield self.reply

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        self.calls += 1
        return [-1.0, -2.0]


def test_put_get_persists_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with ResultCache(path) as cache:
        assert cache.get("k") is None
        cache.put("k", {"value": {"a": [1, "é"]}, "raw": "x", "method": "generate", "scores": None})
        assert cache.misses == 1
    with ResultCache(path) as again:
        assert again.get("k") == {"value": {"a": [1, "é"]}, "raw": "x", "method": "generate", "scores": None}
        assert again.hits == 1 and len(again) == 1
        again.clear()
        assert len(again) == 0


def test_default_location_follows_promptdsl_home(home: Path) -> None:
    assert default_path() == home / "cache" / "results.sqlite3"


def test_second_run_is_served_from_the_cache(home: Path) -> None:
    backend = Counting()
    runner = Runner(loads_spec(CHOICE), backend)
    with ResultCache() as cache:
        cached = CachedRunner(runner, cache)
        first = cached.run({"text": "good"})
        second = cached.run({"text": "good"})
        other = cached.run({"text": "bad"})
    assert backend.calls == 2  # "good" once, "bad" once
    assert (first.cached, second.cached, other.cached) == (False, True, False)
    assert second.value == first.value == "Yes"
    assert second.scores == first.scores == {"Yes": -1.0, "No": -2.0}
    assert second.method == first.method and second.backend == "counting" and second.model == "m1"


def test_key_depends_on_model_options_output_and_prompt(home: Path) -> None:
    spec = loads_spec(CHOICE)
    base = runner_key(Runner(spec, Counting()))
    assert runner_key(Runner(spec, Counting())) == base  # stable
    assert runner_key(Runner(spec, Counting(model="m2"))) != base
    assert runner_key(Runner(spec, Counting(options={"base_url": "http://x"}))) != base
    assert runner_key(Runner(spec, Counting(), options={"max_tokens": 3})) != base
    other_choices = loads_spec(CHOICE.replace("[Yes, No]", "[Yes, No, Maybe]"))
    assert runner_key(Runner(other_choices, Counting())) != base
    p1 = Prompt("completion", text="a", continuation_prefix=" ")
    p2 = Prompt("completion", text="b", continuation_prefix=" ")
    assert prompt_key(base, p1) != prompt_key(base, p2)


def test_sampling_runs_are_not_cached(home: Path) -> None:
    spec = loads_spec(TEXT)
    assert cacheable(Runner(spec, Counting()))  # default temperature 0
    hot = Runner(spec, Counting(), options={"temperature": 0.8})
    assert not cacheable(hot)
    with ResultCache() as cache:
        cached = CachedRunner(hot, cache)
        cached.run({"text": "x"})
        cached.run({"text": "x"})
        assert len(cache) == 0
    assert hot.backend.calls == 2  # type: ignore[attr-defined]
    scoring = Runner(loads_spec(CHOICE), Counting(), options={"temperature": 0.8})
    assert cacheable(scoring)  # scoring does not sample


def test_failures_are_not_cached(home: Path) -> None:
    spec = loads_spec(CHOICE.replace("choices: [Yes, No]", "choices: [Yes, No], method: generate"))
    backend = Counting(reply="neither")
    runner = Runner(spec, backend)
    with ResultCache() as cache:
        cached = CachedRunner(runner, cache)
        for _ in range(2):
            with pytest.raises(OutputError):
                cached.run({"text": "x"})
        assert len(cache) == 0
    assert backend.calls == 2


def test_option_values_are_never_stored(home: Path) -> None:
    runner = Runner(loads_spec(CHOICE), Counting(options={"api_key": "sk-very-secret-123"}))
    with ResultCache() as cache:
        CachedRunner(runner, cache).run({"text": "x"})
        path = cache.path
    blob = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
    assert b"sk-very-secret-123" not in blob



def test_wal_waits_out_a_file_other_runs_are_creating() -> None:
    """Runs started together on a new home: sqlite can refuse WAL with "database is locked" at
    once, without its busy timeout (1 of 240 fresh opens by 8 processes). That is waited out."""
    from promptdsl.cache import journal_wal

    class Racing:
        def __init__(self, refusals: int) -> None:
            self.refusals = refusals
            self.calls = 0

        def execute(self, sql: str) -> None:
            assert sql == "PRAGMA journal_mode=WAL"
            self.calls += 1
            if self.calls <= self.refusals:
                raise sqlite3.OperationalError("database is locked")

    db = Racing(3)
    journal_wal(db)  # type: ignore[arg-type]
    assert db.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        journal_wal(Racing(10**6), seconds=0.05)  # type: ignore[arg-type]  # not forever


def test_a_home_that_is_a_file_is_named_in_the_cache_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.write_text("", encoding="utf-8")
    monkeypatch.setenv("PROMPTDSL_HOME", str(home))
    problems: list[str] = []
    cache = ResultCache(on_problem=problems.append)
    assert not cache.enabled
    assert len(problems) == 1 and f"result cache {home / 'cache' / 'results.sqlite3'}: cannot open it" in problems[0]


def test_an_unknown_user_in_promptdsl_home_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptdsl.cli import main

    monkeypatch.setenv("PROMPTDSL_HOME", "~no-such-user-promptdsl/x")
    assert main(["validate", "specs/sentiment.yaml"]) == 2
    assert capsys.readouterr().err == (
        "promptdsl: error: $PROMPTDSL_HOME: cannot expand '~no-such-user-promptdsl/x': no such user's home directory\n"
    )


def test_a_cache_locked_by_another_program_is_not_called_broken(tmp_path: Path) -> None:
    """Deleting a file that is only busy would lose every entry: the advice differs."""
    problems: list[str] = []
    cache = ResultCache(tmp_path / "c.sqlite3", on_problem=problems.append)
    assert cache.enabled
    cache._disable("cannot write it: database is locked", sqlite3.OperationalError("database is locked"))
    assert not cache.enabled and len(problems) == 1
    assert problems[0].endswith("another program holds it locked, so this run goes on without it")
    assert "delete" not in problems[0]
    broken = ResultCache(tmp_path / "d.sqlite3", on_problem=problems.append)
    broken._disable("cannot read it: file is not a database", sqlite3.DatabaseError("file is not a database"))
    assert "delete the file to start a new cache" in problems[1]


def test_a_score_of_minus_infinity_is_null_in_the_results_and_the_cached_answer_is_still_served() -> None:
    """A choice that cannot follow the prompt scores -inf: results wrote it as -Infinity (no JSON reader
    takes that), and the strict-answer check then refused every such cache entry, so it was recomputed."""
    import json
    import math

    from promptdsl.cache import cached_problem, stored
    from promptdsl.result import Result
    from promptdsl.spec import Method

    spec = loads_spec(CHOICE)
    result = Result(value="Yes", method=Method.SCORE, raw="Yes", backend="b", model="m",
                    scores={"Yes": -0.1, "No": -math.inf})
    line = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(line)["scores"] == {"Yes": -0.1, "No": None} and result.scores["No"] == -math.inf
    kept = json.loads(json.dumps(stored(result)))  # as the cache keeps it
    assert kept["scores"]["No"] == -math.inf and cached_problem(kept, spec.output) is None
    assert cached_problem({**kept, "value": math.nan}, spec.output) is not None
