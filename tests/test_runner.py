"""The runner with a scripted backend: method choice, handlers, errors, lazy responses."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from promptdsl import (
    Backend,
    BackendError,
    Capability,
    Constraint,
    GenerationOptions,
    InputError,
    Message,
    Method,
    OutputError,
    Prompt,
    Runner,
    loads_spec,
)
from promptdsl.backend import CONTEXT_FULL, CUT_OFF, CutOff
from promptdsl.datafile import DataFile
from promptdsl.dataset import run_dataset

CHOICE_SPEC = """\
version: 1
name: c
mode: completion
inputs: {text: {type: string, minLength: 1}}
template: "Text: {{ text }}\\nLabel:"
output: {type: choice, choices: [Yes, No]}
"""

JSON_SPEC = """\
version: 1
name: j
inputs: {text: {type: string}}
output: {type: json, schema: {type: object, required: [n], properties: {n: {type: integer}}}}
"""


class Scripted(Backend):
    """Replies with fixed text; records what it was asked."""

    name = "scripted"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.STREAM}
    )

    def __init__(self, reply: str = "", caps: set[Capability] | None = None, scores: list[float] | None = None):
        super().__init__("fake-model", {})
        self.reply = reply
        self.scores = scores or []
        if caps is not None:
            self.capabilities = frozenset(caps)  # type: ignore[misc]
        self.calls: list[tuple[str, Any]] = []

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        self.calls.append(("stream", (prompt, options, constraint)))
        for word in self.reply.split(" "):
            yield word + " "

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        self.calls.append(("score", list(continuations)))
        return list(self.scores)


ALL = {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.SCORE, Capability.GRAMMAR}


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        (ALL, Method.SCORE),
        (ALL - {Capability.SCORE}, Method.CONSTRAIN),
        ({Capability.COMPLETION, Capability.JSON_SCHEMA}, Method.CONSTRAIN),
        ({Capability.COMPLETION}, Method.GENERATE),
    ],
)
def test_auto_picks_strongest_method(caps: set[Capability], expected: Method) -> None:
    runner = Runner(loads_spec(CHOICE_SPEC), Scripted("Yes", caps, [-1.0, -2.0]))
    assert runner.method is expected
    assert runner.run({"text": "hi"}).method is expected


def test_score_returns_argmax_and_scores_with_delimiter() -> None:
    backend = Scripted(caps=ALL, scores=[-3.0, -0.5])
    result = Runner(loads_spec(CHOICE_SPEC), backend).run({"text": "hi"})
    assert result.value == "No"
    assert result.scores == {"Yes": -3.0, "No": -0.5}
    assert backend.calls[0] == ("score", [" Yes", " No"])
    assert result.to_dict()["scores"] == {"Yes": -3.0, "No": -0.5}


def test_constrain_passes_choices_and_schema() -> None:
    backend = Scripted("No", ALL - {Capability.SCORE})
    Runner(loads_spec(CHOICE_SPEC), backend).run({"text": "hi"})
    constraint = backend.calls[0][1][2]
    assert constraint == Constraint(choices=(" Yes", " No"))
    backend = Scripted('{"n": 1}', ALL)
    result = Runner(loads_spec(JSON_SPEC), backend).run({"text": "x"})
    assert result.value == {"n": 1} and result.method is Method.CONSTRAIN
    assert backend.calls[0][1][2].json_schema["required"] == ["n"]


def test_explicit_method_the_backend_lacks_is_a_clear_error() -> None:
    spec = loads_spec(CHOICE_SPEC.replace("choices: [Yes, No]}", "choices: [Yes, No], method: score}"))
    with pytest.raises(BackendError, match="asks for method 'score'") as info:
        Runner(spec, Scripted("Yes", {Capability.COMPLETION}))
    assert info.value.exit_code == 2


def test_mode_the_backend_lacks_is_refused() -> None:
    with pytest.raises(BackendError, match="completion mode"):
        Runner(loads_spec(CHOICE_SPEC), Scripted("Yes", {Capability.CHAT}))


def test_unparseable_output_names_spec_input_and_raw_text() -> None:
    runner = Runner(loads_spec(JSON_SPEC, file="j.yaml"), Scripted("not json", {Capability.CHAT}))
    with pytest.raises(OutputError) as info:
        runner.run({"text": "abc"})
    msg = str(info.value)
    assert "j.yaml" in msg and 'input: {"text": "abc"}' in msg and "not json" in msg
    assert info.value.raw == "not json " and info.value.exit_code == 1


def test_inputs_are_validated_before_any_backend_call() -> None:
    backend = Scripted("Yes", ALL)
    runner = Runner(loads_spec(CHOICE_SPEC), backend)
    with pytest.raises(InputError, match=r"should be non-empty|is too short"):
        runner.run({"text": ""})
    with pytest.raises(InputError, match="unknown input 'txt'"):
        runner.run({"txt": "x"})
    with pytest.raises(InputError, match="missing input 'text'"):
        runner.run({})
    assert backend.calls == []


def test_response_streams_lazily_and_forces() -> None:
    backend = Scripted("one two three", {Capability.CHAT})
    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    response = Runner(spec, backend).response({"q": "x"})
    assert backend.calls == []  # nothing runs until iterated
    it = iter(response)
    assert next(it) == "one "
    assert response.partial == "one "
    assert response.text() == "one two three "
    assert response.result().value == "one two three"


def test_plugin_exceptions_become_backend_errors() -> None:
    class Broken(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
            yield "a"
            raise RuntimeError("socket closed")

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    with pytest.raises(BackendError, match="RuntimeError: socket closed"):
        Runner(spec, Broken("", {Capability.CHAT})).run({"q": "x"})


def test_a_stream_that_raises_at_once_is_a_backend_error_naming_the_plugin() -> None:
    """``stream`` as a plain function (not a generator) that fails before yielding anything."""

    class RaisesAtOnce(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
            raise KeyError("model")

    class UnnamedError(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
            raise BackendError("quota exhausted")

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    runner = Runner(spec, RaisesAtOnce("", {Capability.CHAT}))
    with pytest.raises(BackendError) as err:
        runner.response({"q": "x"})
    assert str(err.value) == "scripted: KeyError: 'model'" and err.value.exit_code == 1
    json_runner = Runner(loads_spec(JSON_SPEC), RaisesAtOnce("", {Capability.CHAT, Capability.GRAMMAR}))
    assert json_runner.method is Method.CONSTRAIN
    with pytest.raises(BackendError, match=r"^scripted: KeyError"):
        json_runner.run({"text": "x"})
    with pytest.raises(BackendError, match=r"^scripted: quota exhausted$"):
        Runner(spec, UnnamedError("", {Capability.CHAT})).run({"q": "x"})


def test_a_dataset_run_records_a_stream_that_raises_at_once(tmp_path: Path) -> None:
    """One error line per row, no traceback: the row-level guard sees a BackendError."""

    class RaisesAtOnce(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
            raise KeyError("model")

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "a"}\n{"q": "b"}\n', encoding="utf-8")
    lines: list[str] = []
    run_dataset(Runner(spec, RaisesAtOnce("", {Capability.CHAT})), DataFile(data), lines.append)
    rows = [json.loads(x) for x in lines]
    assert [r["index"] for r in rows] == [0, 1]
    assert all("scripted: KeyError: 'model'" in r["error"] for r in rows)


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (None, "score returned type NoneType, not a list of numbers, for 2 choices"),
        ("0.1", "score returned type str, not a list of numbers, for 2 choices"),
        ({"Yes": -1.0, "No": -2.0}, "score returned type dict, not a list of numbers, for 2 choices"),
        ([-1.0], "score returned 1 value for 2 choices"),
        (["x", -1.0], "score returned something that is not a number for 2 choices"),
        ([float("nan"), -1.0], "score returned NaN or +inf for 2 choices"),
        ([2.5, -1.0], "score returned a positive log-probability (2.5), which no probability has, for 2 choices"),
    ],
)
def test_a_score_that_is_not_one_number_per_choice_is_the_plugins_error(scores: Any, message: str) -> None:
    """A plugin's bug, named as one (exit 1): never a TypeError from the runner, nor NaN in the JSON."""

    class Odd(Scripted):
        def score(self, prompt: Prompt, continuations: Sequence[str]) -> Any:
            return scores

    with pytest.raises(BackendError) as err:
        Runner(loads_spec(CHOICE_SPEC), Odd(caps=ALL)).run({"text": "hi"})
    assert str(err.value) == f"scripted: {message}" and err.value.exit_code == 1
    ok = Odd(caps=ALL)
    ok.score = lambda prompt, conts: [-float("inf"), -1.0]  # type: ignore[method-assign]  # impossible is a log p
    assert Runner(loads_spec(CHOICE_SPEC), ok).run({"text": "hi"}).value == "No"


def test_a_stream_piece_that_is_not_text_is_the_plugins_error(tmp_path: Path) -> None:
    class Ints(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Any:
            yield "a"
            yield 7

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    with pytest.raises(BackendError) as err:
        Runner(spec, Ints("", {Capability.CHAT})).run({"q": "x"})
    assert str(err.value) == "scripted: stream yielded a piece of type int, not text" and err.value.exit_code == 1
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "a"}\n{"q": "b"}\n', encoding="utf-8")
    lines: list[str] = []
    run_dataset(Runner(spec, Ints("", {Capability.CHAT})), DataFile(data), lines.append)  # one error line a row
    assert [json.loads(x)["error"] for x in lines] == [
        f"line {n} (row {n - 1}): scripted: stream yielded a piece of type int, not text" for n in (1, 2)
    ]


def test_a_stream_that_is_not_an_iterator_and_spec_options_that_return_nothing_name_the_method(
        tmp_path: Path) -> None:
    """A plugin's bug, named with the method: not "TypeError: 'int' object is not iterable"."""
    from promptdsl.runner import spec_options

    class NotIter(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Any:
            return 7

        @classmethod
        def spec_options(cls, model: str | None, options: Any) -> Any:
            return None  # forgot the return

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    with pytest.raises(BackendError) as err:
        Runner(spec, NotIter("", {Capability.CHAT})).run({"q": "x"})
    assert str(err.value) == "scripted: stream() returned int, not an iterator of text" and err.value.exit_code == 1
    with pytest.raises(BackendError) as err:
        spec_options(spec, NotIter, None, {"n": 1})
    assert str(err.value) == "scripted: spec_options() returned NoneType, not a mapping of options"

    class Raises(Scripted):
        @classmethod
        def spec_options(cls, model: str | None, options: Any) -> Any:
            raise TypeError("boom")

    with pytest.raises(BackendError) as err:
        spec_options(spec, Raises, None, {"n": 1})
    assert str(err.value) == "scripted: spec_options() failed: TypeError: boom"


def test_generation_options_come_from_spec_and_output() -> None:
    spec = loads_spec(
        "version: 1\nname: t\nmode: completion\ninputs: {q: {type: string}}\n"
        "model: {options: {temperature: 0.5, seed: 3, max_tokens: 99}}\n"
        "output: {type: text, stop: [END]}\n"
    )
    backend = Scripted("x", {Capability.COMPLETION})
    Runner(spec, backend).run({"q": "x"})
    opts = backend.calls[0][1][1]
    assert opts == GenerationOptions(temperature=0.5, max_tokens=99, stop=("END",), seed=3)
    spec2 = loads_spec("version: 1\nname: t\nmode: completion\ninputs: {q: {type: string}}\n")
    backend2 = Scripted("x", {Capability.COMPLETION})
    Runner(spec2, backend2).run({"q": "x"})
    assert backend2.calls[0][1][1].stop == ("\n\n",)  # completion mode stops at the example separator


def test_the_callers_stop_and_max_tokens_win_over_the_specs_output() -> None:
    """``-o max_tokens=5`` on a spec whose output says 24 was ignored without a word."""
    spec = loads_spec(
        "version: 1\nname: t\nmode: completion\ninputs: {q: {type: string}}\n"
        "model: {options: {max_tokens: 99, stop: [A]}}\noutput: {type: text, stop: [END], max_tokens: 24}\n"
    )
    for options, want in [({}, (24, ("END",))), ({"max_tokens": 5}, (5, ("END",))),
                          ({"stop": ["X"]}, (24, ("X",))), ({"stop": "Y", "max_tokens": 7}, (7, ("Y",)))]:
        backend = Scripted("x", {Capability.COMPLETION})
        Runner(spec, backend, options=options).run({"q": "x"})
        got = backend.calls[0][1][1]
        assert (got.max_tokens, got.stop) == want, options


def test_a_backend_made_for_a_changed_environment_is_replaced_and_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Instances are reused while the variables they read are unchanged; an outdated one is closed, not kept."""
    from promptdsl import registry
    from promptdsl.backend import Backend, Capability

    closed: list[Backend] = []

    class EnvBackend(Backend):
        name = "envtest"
        capabilities = frozenset({Capability.COMPLETION})
        env_keys = ("PROMPTDSL_TEST_ENV_KEY",)

        def stream(self, prompt: Any, options: Any, constraint: Any = None) -> Any:
            return iter(())

        def close(self) -> None:
            closed.append(self)

    monkeypatch.setattr(registry, "backend_class", lambda name: EnvBackend)
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setenv("PROMPTDSL_TEST_ENV_KEY", "one")
    first = registry.get_backend("envtest")
    assert registry.get_backend("envtest") is first and closed == []
    monkeypatch.setenv("PROMPTDSL_TEST_ENV_KEY", "two")
    second = registry.get_backend("envtest")
    assert second is not first and closed == [first] and len(registry._instances) == 1


def test_a_response_closed_before_the_end_has_no_result() -> None:
    """result() after an early close() returned the cut-off text ('The') as if it were the answer."""
    from promptdsl.errors import OutputError
    from promptdsl.result import Response, Result
    from promptdsl.spec import Method

    def finish(text: str) -> Result:
        return Result(value=text, method=Method.GENERATE, raw=text, backend="b", model="m")

    early = Response(iter(["The", " capital", " is Paris."]), finish)
    assert next(iter(early)) == "The"
    early.close()
    with pytest.raises(OutputError, match="closed before the model finished") as err:
        early.result()
    assert err.value.raw == "The" and early.partial == "The"
    whole = Response(iter(["The", " end"]), finish)
    with whole:
        assert whole.text() == "The end"
    assert whole.result().value == "The end"  # closed after the end: the result stands


class CutShort(Scripted):
    """Generation a limit stopped: the text, then the backend's cut-off marker."""

    marker: CutOff = CUT_OFF

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        yield from super().stream(prompt, options, constraint)
        yield self.marker


class ContextShort(CutShort):
    marker = CONTEXT_FULL


def test_an_answer_cut_at_max_tokens_is_marked_and_the_marker_never_shown(tmp_path: Path) -> None:
    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\noutput: {type: text, max_tokens: 3}\n")
    response = Runner(spec, CutShort("one two three", {Capability.CHAT})).response({"q": "x"})
    assert list(response) == ["one ", "two ", "three "]  # the empty marker is not a piece
    result = response.result()
    assert result.truncated == "max_tokens" and result.value == "one two three"
    assert result.to_dict()["truncated"] == "max_tokens"
    full = Runner(spec, ContextShort("one two", {Capability.CHAT})).run({"q": "x"})
    assert full.truncated == "context"
    whole = Runner(spec, Scripted("one two", {Capability.CHAT})).run({"q": "x"})
    assert whole.truncated is None and "truncated" not in whole.to_dict()
    # the cache keeps the mark: a re-run says it too
    from promptdsl.cache import restored, stored

    assert [restored(stored(r), "b", "m").truncated for r in (result, full, whole)] == ["max_tokens", "context", None]


def test_a_constrained_value_that_parsed_is_not_marked_cut() -> None:
    """llama.cpp says "length" when the token count reaches max_tokens as the grammar closes the value."""
    runner = Runner(loads_spec(JSON_SPEC), CutShort('{"n": 3}', ALL - {Capability.SCORE}))
    assert runner.method is Method.CONSTRAIN
    result = runner.run({"text": "abc"})
    assert result.value == {"n": 3} and result.truncated is None


def test_a_cut_answer_that_does_not_parse_says_which_limit_to_raise() -> None:
    runner = Runner(loads_spec(JSON_SPEC, file="j.yaml"), CutShort('{"n":', {Capability.CHAT}),
                    options={"max_tokens": 2})
    with pytest.raises(OutputError) as info:
        runner.run({"text": "abc"})
    assert "the answer holds no valid JSON; the answer was cut off at max_tokens=2 (raise max_tokens)" \
        in str(info.value)
    full = Runner(loads_spec(JSON_SPEC, file="j.yaml"), ContextShort('{"n":', {Capability.CHAT}))
    with pytest.raises(OutputError, match=r"cut off where the model's context ends \(a larger n_ctx, or a shorter"):
        full.run({"text": "abc"})


def test_a_dataset_run_counts_the_cut_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli.dataset import report
    from promptdsl.dataset import DatasetRun

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "a"}\n{"q": "b"}\n', encoding="utf-8")
    lines: list[str] = []
    summary = run_dataset(Runner(spec, CutShort("x", {Capability.CHAT})), DataFile(data), lines.append)
    assert summary.truncated == 2 and summary.ok == 2
    assert all(json.loads(line)["truncated"] == "max_tokens" for line in lines)
    run = DatasetRun.__new__(DatasetRun)
    run.data, run.out = DataFile(data), None
    assert report(run, summary) == 0
    assert '2 ok, 2 cut off by max_tokens or the context ("truncated" in the results)' in capsys.readouterr().err


def test_a_stream_that_ignores_max_tokens_is_ended_with_a_clear_error() -> None:
    class Forever(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
            while True:
                yield "la "

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\noutput: {type: text, max_tokens: 10}\n")
    with pytest.raises(BackendError) as info:
        Runner(spec, Forever("", {Capability.CHAT})).run({"q": "x"})
    assert str(info.value) == ("scripted: the stream went on past 1,000,000 characters (or pieces), far more than "
                               "max_tokens=10 allows; the plugin seems to ignore max_tokens")
    assert info.value.exit_code == 1
    # Backend.complete (what the tool loop's prompted path calls) joins within the same bound
    prompt = Prompt(mode="chat", messages=(Message("user", "x"),))
    with pytest.raises(BackendError, match="seems to ignore max_tokens"):
        Forever("", {Capability.CHAT}).complete(prompt, GenerationOptions(max_tokens=10))


def test_the_stream_bound_never_ends_an_answer_that_kept_to_max_tokens() -> None:
    """SmolLM2 has single tokens of 81 characters ('#' * 80): max_tokens of them is a good answer."""
    from promptdsl.backend import bounded

    long = ["#" * 81] * 200
    assert list(bounded(iter(long), 1, "b")) == long  # even at max_tokens=1, far below the floor


def test_a_plugin_that_calls_sys_exit_in_its_stream_is_a_backend_error() -> None:
    class Exits(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
            yield "a"
            raise SystemExit(3)

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    with pytest.raises(BackendError, match=r"^scripted: it called sys.exit\(3\)$"):
        Runner(spec, Exits("", {Capability.CHAT})).run({"q": "x"})


def test_a_model_id_that_fails_is_the_plugins_error_when_the_runner_is_made() -> None:
    class NoModel(Scripted):
        @property
        def model_id(self) -> str:
            raise AttributeError("no model loaded yet")

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    with pytest.raises(BackendError, match=r"^scripted: AttributeError: no model loaded yet$"):
        Runner(spec, NoModel("x", {Capability.CHAT}))


def test_a_plugins_oserror_is_reported_as_itself_not_as_the_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Only a failed write is "cannot write the output"; a plugin's FileNotFoundError says what it is."""
    import errno

    from promptdsl.cli import main
    from promptdsl.cli import specs as specs_cli

    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    for exc, code, line in ((FileNotFoundError(2, "No such file or directory", "weights.bin"), 1,
                             "promptdsl: error: FileNotFoundError: [Errno 2] No such file or directory: 'weights.bin'"),
                            (OSError(errno.ENOSPC, "No space left on device"), 2,
                             "promptdsl: error: cannot write the output: No space left on device")):
        def fail(args: Any, exc: OSError = exc) -> int:
            raise exc

        monkeypatch.setattr(specs_cli, "cmd_validate", fail)
        assert main(["validate", str(spec)]) == code
        assert capsys.readouterr().err == line + "\n"


def test_promptdsl_test_says_when_an_answer_was_cut() -> None:
    from promptdsl.expect import run_tests

    spec = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\noutput: {type: text, max_tokens: 3}\n"
                      "tests:\n  - {input: {q: a}, expect: {contains: one}}\n")
    cut, whole = (next(run_tests(spec, Runner(spec, backend({Capability.CHAT}))))
                  for backend in (lambda caps: CutShort("one two three", caps), lambda caps: Scripted("one", caps)))
    assert cut.passed and cut.detail == "got 'one two three' (the answer was cut off at max_tokens)"
    assert whole.passed and whole.detail == "got 'one'"


def test_run_stream_ends_the_partial_line_before_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main
    from promptdsl.cli import run as run_cli

    class Breaks(Scripted):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
            yield "partial"
            raise ConnectionError("server went away")

    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    monkeypatch.setattr(run_cli, "runner_from_args", lambda s, args: Runner(s, Breaks("", {Capability.CHAT})))
    assert main(["run", str(spec), "-i", "q=x", "--stream"]) == 1
    out, err = capsys.readouterr()
    assert out == "partial\n" and err == "promptdsl: error: scripted: ConnectionError: server went away\n"
