"""The openai backend against a real OpenAI-compatible server (llama-cpp-python's, on the embedded model).

Every request is bounded: the backend's timeout option, and subprocess timeouts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from openai_server import KEY_ENV, Server, llama_server
from promptdsl_openai import OpenAIBackend

from promptdsl.backend import Capability, Constraint, CutOff, GenerationOptions
from promptdsl.cli import main
from promptdsl.errors import BackendError
from promptdsl.loader import load_spec
from promptdsl.prompt import Message, Prompt
from promptdsl.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))

pytestmark = pytest.mark.server

GREEDY = GenerationOptions(temperature=0.0, max_tokens=8)


def chat(text: str) -> Prompt:
    return Prompt(mode="chat", messages=(Message("user", text),))


# ---------------------------------------------------------------------------- the example specs


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_example_spec_passes_its_tests(
    spec: Path, openai_env: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """`promptdsl test SPEC --backend openai -o base_url=...` passes for every spec in specs/."""
    code = main(["test", str(spec), "--backend", "openai", "-o", f"base_url={openai_env.base_url}", "-o", "timeout=60"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert " 0 failed" in out.out and "FAIL" not in out.out


def test_cli_subprocess_run_json(openai_server: Server, tmp_path: Path) -> None:
    """The real command line, in its own process: result JSON has the method and no key."""
    env = {**_clean_env(), "OPENAI_API_KEY": openai_server.api_key, "OPENAI_BASE_URL": openai_server.base_url}
    proc = subprocess.run(
        [sys.executable, "-m", "promptdsl.cli", "run", str(ROOT / "specs" / "sentiment.yaml"),
         "--backend", "openai", "--input", "text=I love this city!", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["value"] == "Positive"
    assert result["method"] == "score" and result["backend"] == "openai" and result["model"] == "smollm2"
    assert set(result["scores"]) == {"Positive", "Negative", "Neutral"}
    assert openai_server.api_key not in proc.stdout + proc.stderr


def test_dataset_run_with_concurrent_requests(openai_env: Server, home: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset run sends rows concurrently (remote backend): one shared client, every row scored."""
    rows = tmp_path / "rows.jsonl"
    texts = ["I love this city!", "This is the worst service I have ever had.", "Best day ever"]
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out.jsonl"
    code = main(["run", str(ROOT / "specs" / "sentiment.yaml"), "--data", str(rows), "--out", str(out),
                 "--backend", "openai", "-o", f"base_url={openai_env.base_url}", "--concurrency", "3"])
    assert code == 0, capsys.readouterr().err
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["value"] for r in results] == ["Positive", "Negative", "Positive"]
    assert all(r["method"] == "score" and r["backend"] == "openai" for r in results)
    assert openai_env.api_key not in out.read_text()


def test_spec_model_options_configure_the_backend(openai_server: Server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """backend, base_url, timeout and retries can live in the spec's model block.

    The key goes to a base_url the spec chose only because the user trusts it (issue 9).
    """
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("PROMPTDSL_TRUSTED_BASE_URLS", openai_server.base_url)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("PROMPTDSL_READ_DIRS", str(ROOT / "specs"))  # the user lets specs build on the shipped ones
    spec = tmp_path / "remote-qa.yaml"
    spec.write_text(
        f"version: 1\nname: remote-qa\nextends: {ROOT / 'specs' / 'qa.yaml'}\n"
        f"model: {{backend: openai, model: smollm2, options: {{base_url: '{openai_server.base_url}', "
        "timeout: 30, max_retries: 1, temperature: 0}}\n"
    )
    assert main(["run", str(spec), "--input", "question=What is the capital of France?", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "openai" and result["model"] == "smollm2" and result["method"] == "generate"
    assert "Paris" in result["value"]


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != KEY_ENV}


# ---------------------------------------------------------------------------- capabilities and methods


def test_server_extensions_detected(openai_backend: OpenAIBackend) -> None:
    """llama-cpp-python's server honours `grammar`, so the instance adds score + grammar to the class's set."""
    assert openai_backend.grammar is True
    assert {Capability.SCORE, Capability.GRAMMAR} <= openai_backend.capabilities
    assert Capability.SCORE not in OpenAIBackend.capabilities  # what `promptdsl backends` promises for any server
    assert openai_backend.model_id == "smollm2"


@pytest.mark.model
def test_scores_equal_the_local_backend(openai_backend: OpenAIBackend, llamacpp_backend: object) -> None:
    """Forced-decoding scores through the server equal llama.cpp's own log-likelihoods (same model file)."""
    from promptdsl.backend import Backend

    assert isinstance(llamacpp_backend, Backend)
    prompt = Prompt(mode="completion", text="Text: I love it\nSentiment:", continuation_prefix=" ")
    conts = [" Positive", " Negative", " Neutral"]
    remote = openai_backend.score(prompt, conts)
    local = llamacpp_backend.score(prompt, conts)
    assert remote == pytest.approx(local, abs=0.02)
    assert max(range(3), key=lambda i: remote[i]) == 0


def test_choice_without_grammar_uses_constrained_json(openai_server: Server) -> None:
    """With the llama.cpp extension switched off, a chat choice spec is constrained through response_format."""
    backend = OpenAIBackend(None, {"base_url": openai_server.base_url, "api_key_env": KEY_ENV, "grammar": False})
    try:
        assert Capability.SCORE not in backend.capabilities
        spec = load_spec(_write_choice_spec())
        runner = Runner(spec, backend)
        result = runner.run({"text": "I love this city!"})
        assert result.method == "constrain"
        assert result.value in {"Positive", "Negative", "Neutral"}
        assert result.raw == result.value  # the {"answer": ...} wrapper is unwrapped
        # The server rejected {"type": "json_schema"}; the backend fell back to json_object + schema.
        assert backend._json_schema_ok is False
        with pytest.raises(BackendError, match="cannot score"):
            backend.score(chat("x"), ["y"])
    finally:
        backend.close()


def _write_choice_spec() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "chat-sentiment.yaml"
    path.write_text(
        "version: 1\nname: chat-sentiment\nmode: chat\n"
        "instruction: Classify the sentiment of the text as Positive, Negative or Neutral.\n"
        "inputs: {text: {type: string}}\ntemplate: 'Text: {{ text }}'\n"
        "output: {type: choice, choices: [Positive, Negative, Neutral]}\n"
    )
    return path


def test_completion_constraint_without_grammar_is_a_clear_error(openai_server: Server) -> None:
    backend = OpenAIBackend(None, {"base_url": openai_server.base_url, "api_key_env": KEY_ENV, "grammar": False})
    try:
        prompt = Prompt(mode="completion", text="Answer:", continuation_prefix=" ")
        with pytest.raises(BackendError, match="cannot constrain completion-mode") as err:
            backend.complete(prompt, GREEDY, Constraint(choices=(" Yes", " No")))
        assert err.value.exit_code == 2
    finally:
        backend.close()


def test_json_constrained_in_both_modes(openai_backend: OpenAIBackend) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    opts = GenerationOptions(temperature=0.0, max_tokens=32)
    one_shot = 'Italy, as JSON: {"city": "Rome"}\nFrance, as JSON:'
    for prompt in (chat("Give the capital of France as JSON."), Prompt(mode="completion", text=one_shot)):
        value = json.loads("".join(openai_backend.stream(prompt, opts, Constraint(json_schema=schema))))
        assert value == {"city": "Paris"}


def test_a_cut_at_max_tokens_is_the_streams_last_piece(openai_backend: OpenAIBackend) -> None:
    for prompt in (chat("Count from 1 to 50."), Prompt(mode="completion", text="Count from 1 to 50: 1, 2,")):
        cut = list(openai_backend.stream(prompt, GenerationOptions(temperature=0.0, max_tokens=3)))
        assert isinstance(cut[-1], CutOff) and "".join(cut[:-1]) and not any(isinstance(p, CutOff) for p in cut[:-1])
    done = Constraint(choices=("yes", "no"))  # the grammar ends it: a stop, not a cut
    whole = list(openai_backend.stream(chat("Say yes."), GenerationOptions(temperature=0.0, max_tokens=64), done))
    assert "".join(whole) in ("yes", "no") and not any(isinstance(p, CutOff) for p in whole)


# ---------------------------------------------------------------------------- errors, keys, broken servers


def test_wrong_key_is_401_and_never_shown(openai_server: Server, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-wrong-" + "x" * 24
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # max_retries=0 also keeps this backend instance apart from the (correct-key) ones cached by other tests
    code = main(["run", str(ROOT / "specs" / "qa.yaml"), "--backend", "openai", "-o", "max_retries=0",
                 "-o", f"base_url={openai_server.base_url}", "--input", "question=Hi?"])
    out = capsys.readouterr()
    assert code == 2
    assert "rejected the API key in OPENAI_API_KEY (401" in out.err and out.err.count("\n") == 1
    assert secret not in out.out + out.err


def test_key_in_options_is_refused(openai_server: Server) -> None:
    with pytest.raises(BackendError, match="do not put API keys") as err:
        OpenAIBackend(None, {"base_url": openai_server.base_url, "api_key": "sk-123"})
    assert err.value.exit_code == 2 and "sk-123" not in str(err.value)


def test_context_too_long_streaming_and_not(openai_backend: OpenAIBackend) -> None:
    """The server drops a too-long *stream* silently; the backend asks again and reports the real reason."""
    huge = Prompt(mode="completion", text="word " * 3000)
    for call in (lambda: "".join(openai_backend.stream(huge, GREEDY)), lambda: openai_backend.complete(huge, GREEDY)):
        with pytest.raises(BackendError, match="too long for the model's context") as err:
            call()
        assert err.value.exit_code == 2
    assert openai_backend.complete(chat("Say hi."), GREEDY)  # the backend still works


def test_server_killed_mid_stream() -> None:
    """Kill the server while a stream is being read: a clear exit-1 BackendError, not a traceback."""
    import os

    with llama_server() as server:
        os.environ["PROMPTDSL_TEST_KILL_KEY"] = server.api_key
        try:
            backend = OpenAIBackend(None, {"base_url": server.base_url, "api_key_env": "PROMPTDSL_TEST_KILL_KEY",
                                           "timeout": 20, "max_retries": 0})
            stream = backend.stream(Prompt(mode="completion", text="Once upon a time"),
                                    GenerationOptions(temperature=0.0, max_tokens=400))
            got = []
            with pytest.raises(BackendError) as err:
                for piece in stream:
                    got.append(piece)
                    if len(got) == 3:
                        server.kill()
            assert len(got) >= 3
            assert err.value.exit_code == 1
            assert "lost mid-answer" in str(err.value) and "\n" not in str(err.value)
            with pytest.raises(BackendError, match="cannot connect"):
                backend.complete(chat("Hi"), GREEDY)
        finally:
            os.environ.pop("PROMPTDSL_TEST_KILL_KEY", None)
