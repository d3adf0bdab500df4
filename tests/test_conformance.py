"""The conformance kit: both built-in backends pass it, and it catches backends that break the contract."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from promptdsl.backend import Backend, Capability, Constraint, GenerationOptions, TokenLogprob
from promptdsl.errors import BackendError
from promptdsl.prompt import Prompt
from promptdsl.testing import CHECKS, check_backend, run_check
from promptdsl.testing.__main__ import main as kit_main
from promptdsl.testing.suite import BackendConformance

# ---------------------------------------------------------------------------- the built-in backends


@pytest.mark.model
class TestLlamaCppConformance(BackendConformance):
    """llamacpp on the embedded SmolLM2 model."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_backend(cls, llamacpp_backend: Backend) -> Backend:
        return llamacpp_backend


@pytest.mark.server
class TestOpenAIConformance(BackendConformance):
    """openai against llama-cpp-python's server on the same model."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_backend(cls, openai_backend: Backend) -> Backend:
        return openai_backend


@pytest.mark.model
@pytest.mark.server
def test_both_builtins_declare_everything_the_kit_checks(llamacpp_backend: Backend, openai_backend: Backend) -> None:
    """So that no check is skipped for them: every line of the contract is exercised on both."""
    for backend in (llamacpp_backend, openai_backend):
        assert {Capability.SCORE, Capability.GRAMMAR, Capability.CHAT, Capability.COMPLETION} <= backend.capabilities
        assert backend.generate_logprobs(Prompt(mode="completion", text="Hi"), GenerationOptions(max_tokens=2))


# ---------------------------------------------------------------------------- backends that break the contract
# Small deterministic fakes: each test needs exact control over one violation.


class Toy(Backend):
    """Answers with the prompt's words reversed; honours the whole contract (score by a fixed rule)."""

    name = "toy"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.STREAM}
    )
    closed = False

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)

    def answer(self, prompt: Prompt) -> list[str]:
        text = prompt.text if prompt.mode == "completion" else prompt.messages[-1].content
        words = text.split()
        if len(words) > 1000:
            raise BackendError("prompt too long", backend=self.name)
        return [" " + w for w in reversed(words * 3)]

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        return self._gen(prompt, options)

    def context_length(self) -> int | None:
        return 1000

    def _gen(self, prompt: Prompt, options: GenerationOptions) -> Iterator[str]:
        words = self.answer(prompt)[: options.max_tokens]
        text = "".join(words)
        cut = min([i for i in (text.find(s) for s in options.stop) if i >= 0] or [len(text)])
        for w in words:
            if cut <= 0:
                return
            yield w[:cut]
            cut -= len(w)

    def close(self) -> None:
        type(self).closed = True


class UnknownContext(Toy):
    """Written from docs/plugins.md: context_length() is None ("unknown") and any prompt is answered."""

    def context_length(self) -> int | None:
        return None

    def answer(self, prompt: Prompt) -> list[str]:
        text = prompt.text if prompt.mode == "completion" else prompt.messages[-1].content
        return [" " + w for w in reversed(text.split()[:1000] * 3)]


class NoMaxTokens(Toy):
    def _gen(self, prompt: Prompt, options: GenerationOptions) -> Iterator[str]:
        yield from super()._gen(prompt, GenerationOptions(max_tokens=None, stop=options.stop))


class NoStop(Toy):
    def _gen(self, prompt: Prompt, options: GenerationOptions) -> Iterator[str]:
        yield from super()._gen(prompt, GenerationOptions(max_tokens=options.max_tokens))


class StreamDiffers(Toy):
    def complete(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> str:
        return super().complete(prompt, options, constraint).upper()


class RawErrors(Toy):
    def answer(self, prompt: Prompt) -> list[str]:
        try:
            return super().answer(prompt)
        except BackendError:
            raise RuntimeError("socket exploded") from None


class ListStream(Toy):
    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        return iter(list(self._gen(prompt, options)))


class BadScore(Toy):
    """Declares score; its scores disagree with its own generation log-probabilities."""

    capabilities = Toy.capabilities | {Capability.SCORE}

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        return [-1.0 * len(c) for c in continuations]

    def generate_logprobs(self, prompt: Prompt, options: GenerationOptions) -> list[TokenLogprob] | None:
        return [TokenLogprob(w, -0.5) for w in self._gen(prompt, options)]


class ConstantScore(Toy):
    """Declares score without generate_logprobs, and makes its scores up."""

    capabilities = Toy.capabilities | {Capability.SCORE}

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        return [-1.0 for _ in continuations]


class HonestScoreNoLogprobs(ConstantScore):
    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        return [-0.5 * len(c.split()) for c in continuations]


class NoModes(Toy):
    capabilities = frozenset({Capability.STREAM})


class IgnoresConstraints(Toy):
    capabilities = Toy.capabilities | {Capability.GRAMMAR}


class Hangs(Toy):
    def _gen(self, prompt: Prompt, options: GenerationOptions) -> Iterator[str]:
        time.sleep(5)
        yield "late"


def test_a_conforming_backend_passes_and_inapplicable_checks_skip() -> None:
    report = check_backend(Toy)
    assert report.ok, str(report)
    assert {r.name: r.status for r in report.results} == {
        **{name: "pass" for name in CHECKS},
        "score_matches_generation": "skip", "json_schema": "skip", "choices": "skip",
    }
    assert Toy.closed  # a backend made by the factory is closed afterwards
    assert "6 passed, 0 failed, 3 skipped" in str(report)


def test_a_backend_with_unknown_context_length_passes() -> None:
    """The kit cannot call a prompt too long for an unknown window; it still checks the other errors."""
    report = check_backend(UnknownContext)
    assert report.ok, str(report)
    errors = next(r for r in report.results if r.name == "errors_are_backend_errors")
    assert errors.status == "pass" and "context length unknown" in errors.detail and "score" in errors.detail


@pytest.mark.parametrize(("backend", "check", "message"), [
    (NoMaxTokens, "max_tokens", "max_tokens=1 was not honoured"),
    (NoStop, "stop_sequences", "stop="),
    (StreamDiffers, "stream_equals_complete", "stream gave"),
    (RawErrors, "errors_are_backend_errors", "raised RuntimeError (socket exploded), not BackendError"),
    (ListStream, "cancel_releases", "closable iterator"),
    (BadScore, "score_matches_generation", "but generation"),
    (ConstantScore, "score_matches_generation", "the same value -1.0"),
    (IgnoresConstraints, "json_schema", "not JSON"),
    (IgnoresConstraints, "choices", "is not one of"),
])
def test_the_kit_catches_violations(backend: type[Toy], check: str, message: str) -> None:
    result = run_check(backend(), check)
    assert result.status == "fail"
    assert message in result.detail


def test_a_score_the_kit_cannot_compare_is_a_skip_not_a_pass() -> None:
    result = run_check(HonestScoreNoLogprobs(), "score_matches_generation")
    assert result.status == "skip" and "generate_logprobs returns None" in result.detail


def test_a_backend_without_a_prompt_mode_fails_once_and_the_rest_skip() -> None:
    """No check passes having tried nothing, and none fails with an IndexError."""
    report = check_backend(NoModes)
    status = {r.name: r.status for r in report.results}
    assert status.pop("capabilities") == "fail" and set(status.values()) == {"skip"}, str(report)


def test_a_hung_backend_fails_within_the_timeout() -> None:
    start = time.monotonic()
    result = run_check(Hangs(), "stream_equals_complete", timeout=0.5)
    assert result.status == "fail" and "did not finish within 0.5s" in result.detail
    assert time.monotonic() - start < 2


def test_unknown_check_name() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        check_backend(Toy(), checks=["nope"])


# ---------------------------------------------------------------------------- python -m promptdsl.testing


@pytest.mark.model
def test_kit_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert kit_main(["llamacpp", "--check", "capabilities", "--check", "cancel_releases", "--timeout", "600"]) == 0
    out = capsys.readouterr().out
    assert "PASS  capabilities" in out and "PASS  cancel_releases" in out and "2 passed, 0 failed" in out
    assert kit_main(["no-such-backend"]) == 2
    assert "unknown backend 'no-such-backend'" in capsys.readouterr().err


def test_after_a_check_times_out_the_rest_are_skipped_and_sys_exit_is_a_failure() -> None:
    """A stuck backend costs one timeout, not one per check; a plugin's sys.exit fails its check."""
    release = __import__("threading").Event()

    class Stuck(Toy):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Any:
            release.wait(30)
            return iter(())

    try:
        began = time.perf_counter()
        report = check_backend(Stuck, timeout=0.5)
        assert time.perf_counter() - began < 5
        first = next(r for r in report.results if r.status == "fail")
        assert first.detail.startswith("did not finish within 0.5s")
        later = report.results[report.results.index(first) + 1:]
        assert later and all(r.status == "skip" and r.detail == f"not run: the backend is stuck since {first.name}"
                             for r in later)
    finally:
        release.set()

    class Exits(Toy):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Any:
            raise SystemExit(3)

    result = run_check(Exits(), "stream_equals_complete", timeout=5)
    assert (result.status, result.detail) == ("fail", "called sys.exit(3)")


def test_a_stream_that_ignores_max_tokens_fails_its_check_without_filling_the_memory() -> None:
    class Forever(Toy):
        def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Any:
            def gen() -> Iterator[str]:
                while True:
                    yield "la "
            return gen()

    began = time.perf_counter()
    result = run_check(Forever(), "stream_equals_complete", timeout=60)
    assert result.status == "fail" and "seems to ignore max_tokens" in result.detail
    assert time.perf_counter() - began < 30  # ended by the bound (about a megabyte), not by the time limit


STUCK_SUITE = """
import threading
from promptdsl.backend import Backend, Capability
from promptdsl.testing.suite import BackendConformance
import pytest

release = threading.Event()


class Stuck(Backend):
    name = "stuck"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.STREAM})

    def stream(self, prompt, options, constraint=None):
        release.wait(30)
        return iter(())


class TestStuck(BackendConformance):
    conformance_timeout = 0.5

    @pytest.fixture(scope="class")
    def conformance_backend(self):
        yield Stuck()
        release.set()
"""


def test_the_pytest_suite_skips_the_checks_after_a_stuck_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "test_stuck.py").write_text(STUCK_SUITE)
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
                           str(tmp_path / "test_stuck.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - began < 60, proc.stdout  # one time limit, not one per check
    # capabilities passes, the first stream check waits its 0.5 s and fails, every later one is skipped
    assert "1 failed, 1 passed, 7 skipped" in proc.stdout, proc.stdout
    assert "not run: the backend is stuck since stream_equals_complete" in proc.stdout
