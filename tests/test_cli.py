"""The CLI as a user meets it: exit codes, one-line errors, no tracebacks.

Commands run in-process through ``promptdsl.cli.main`` (what the console script calls);
one test starts the real ``python -m promptdsl.cli`` to check the entry point itself.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from promptdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


class Ran:
    """Exit code and captured output of one in-process command."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """Run ``promptdsl ARGS...`` in this process (stdin from a string), as the console script would."""

    def run(*args: str, stdin: str | None = None) -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


def test_schema_prints_the_packaged_schema(cli: Callable[..., Ran]) -> None:
    proc = cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["additionalProperties"] is False


def test_validate_all_shipped_specs(cli: Callable[..., Ran]) -> None:
    proc = cli("validate", *sorted(str(p) for p in SPECS.glob("*.yaml")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok: ") == len(list(SPECS.glob("*.yaml")))


def test_system_in_a_completion_spec_is_valid_with_a_note(cli: Callable[..., Ran], tmp_path: Path) -> None:
    """As in the spec language's own example: ``system`` is kept (for chat mode) and not sent."""
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: x\nmode: completion\nsystem: You are careful.\ninstruction: Say hi.\n",
                    encoding="utf-8")
    proc = cli("validate", str(spec))
    assert proc.returncode == 0 and proc.stderr == ""
    assert "  note: 'system' is not used in completion mode" in proc.stdout
    assert "careful" not in cli("compile", str(spec)).stdout


def test_a_misspelt_enum_value_gets_a_did_you_mean(cli: Callable[..., Ran], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: x\ninputs: {tone: {type: string, enum: [positive, negative]}}\n",
                    encoding="utf-8")
    for typed, hint in (("postive", " (did you mean 'positive'?)"), ("Negative", " (did you mean 'negative'?)"),
                        ("zzz", "")):
        proc = cli("compile", str(spec), "-i", f"tone={typed}")
        assert proc.returncode == 2
        assert proc.stderr == f"promptdsl: error: input 'tone': '{typed}' is not one of ['positive', 'negative']{hint}\n"


def test_an_input_no_template_uses_is_a_note(cli: Callable[..., Ran], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: x\ninputs: {text: {type: string}, lang: {type: string, default: en}}\n"
                    "instruction: 'Answer in {{ text[:0] }}this language.'\ntemplate: '{{ text }}'\n", encoding="utf-8")
    proc = cli("validate", str(spec))
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.splitlines()[1:] == [
        "  note: input 'lang' is used by no template (system, instruction, template), so the model never sees it"]
    spec.write_text("version: 1\nname: x\ninputs: {text: {type: string}, lang: {type: string}}\n", encoding="utf-8")
    assert "note" not in cli("validate", str(spec)).stdout  # no template: the default one shows every input


def test_an_option_the_default_backend_refuses_is_a_note_when_the_spec_names_no_backend(
    cli: Callable[..., Ran], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate said "ok" and run then refused it: with no backend named, -b may still pick one that takes it
    (openai takes base_url), but an option no installed backend takes is an error."""
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: x\nmodel: {options: {base_url: 'http://h/v1', temperature: 0}}\n",
                    encoding="utf-8")
    proc = cli("validate", str(spec))
    assert proc.returncode == 0, proc.stderr
    assert "  note: with the default backend 'llamacpp': unknown option 'base_url'" in proc.stdout
    spec.write_text("version: 1\nname: x\nmodel: {options: {n_thread: 2, temperature: 0}}\n", encoding="utf-8")
    proc = cli("validate", str(spec))
    assert proc.returncode == 2 and "s.yaml:3:19: no installed backend takes the option 'n_thread' (did you mean " \
        "'n_threads'?)" in proc.stderr
    spec.write_text("version: 1\nname: x\nmodel: {options: {api_key: sk-abc}}\n", encoding="utf-8")
    proc = cli("validate", str(spec))  # the backend's own reason, not "did you mean 'api_key_env'?"
    assert proc.returncode == 2 and "option 'api_key' is refused: keys come only from the environment" in proc.stderr
    assert "sk-abc" not in proc.stderr and "did you mean" not in proc.stderr
    spec.write_text("version: 1\nname: x\nmodel: {options: {n_ctx: 2048, temperature: 0}}\n", encoding="utf-8")
    assert "note" not in cli("validate", str(spec)).stdout
    monkeypatch.setenv("PROMPTDSL_BACKEND", "nonesuch")  # no default backend to hold them to: no note
    spec.write_text("version: 1\nname: x\nmodel: {options: {base_url: 'http://h/v1'}}\n", encoding="utf-8")
    assert "note" not in cli("validate", str(spec)).stdout


def test_validate_says_what_run_would_refuse_a_model_name_an_option_no_backend_takes_from_a_spec_and_no_type(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """Each of these passed validate and failed in run (or gave three wrong errors besides the right one)."""
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: x\nmodel: {backend: llamacpp, model: smolm2}\n", encoding="utf-8")
    proc = cli("validate", str(spec))
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"promptdsl: error: {spec}:3:28: backend 'llamacpp': unknown model 'smolm2' (did you mean 'smollm2'?)"), \
        proc.stderr
    assert "(at $.model.model)" in proc.stderr
    spec.write_text("version: 1\nname: x\nmodel: {model: gpt-4o}\n", encoding="utf-8")  # -b openai may take it
    proc = cli("validate", str(spec))
    assert proc.returncode == 0 and "  note: with the default backend 'llamacpp': unknown model 'gpt-4o'" in proc.stdout
    for fine in ("{backend: llamacpp, model: SmolLM2}", "{backend: openai, model: gpt-4o}", "{model: default}"):
        spec.write_text(f"version: 1\nname: x\nmodel: {fine}\n", encoding="utf-8")
        proc = cli("validate", str(spec))
        assert proc.returncode == 0 and "note" not in proc.stdout, (fine, proc.stdout, proc.stderr)
    spec.write_text("version: 1\nname: x\nmodel: {options: {api_key_env: MY_KEY}}\n", encoding="utf-8")
    proc = cli("validate", str(spec))  # only openai declares it, and it refuses it from a spec: -b cannot help
    assert proc.returncode == 2 and "s.yaml:3:19: refused: a spec file may not choose which environment variable " \
        "is sent as the API key" in proc.stderr, proc.stderr
    spec.write_text("version: 1\nname: x\noutput: {max_tokens: 5}\n", encoding="utf-8")
    proc = cli("validate", str(spec))
    assert proc.returncode == 2 and proc.stderr == \
        f"promptdsl: error: {spec}:3:1: missing required key 'type' (at $.output.type)\n"


def test_validate_debug_shows_the_traceback(cli: Callable[..., Ran], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: x\nfoo: 1\n", encoding="utf-8")
    plain, debug = cli("validate", str(spec)), cli("validate", "--debug", str(spec))
    assert plain.returncode == debug.returncode == 2 and "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr and "unknown key 'foo'" in debug.stderr.splitlines()[-1]


@pytest.mark.parametrize(("model", "message"), [
    ("{backend: llamacp}", "unknown backend 'llamacp' (did you mean 'llamacpp'?); installed backends: "),
    ("{backend: llamacpp, options: {n_ctxx: 5}}", "backend 'llamacpp': unknown option 'n_ctxx' (did you mean 'n_ctx'?)"),
    ("{backend: llamacpp, options: {n_ctx: many}}", "backend 'llamacpp': option 'n_ctx'"),
])
def test_validate_checks_the_backend_a_spec_names(
    cli: Callable[..., Ran], tmp_path: Path, model: str, message: str
) -> None:
    """A misspelt backend or option is found by validate, not first by run (no model is loaded)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: 1\nname: x\nmodel: {model}\n", encoding="utf-8")
    proc = cli("validate", str(spec))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"promptdsl: error: {spec}:") and message in proc.stderr
    assert "(at $.model." in proc.stderr
    if "options" not in model:  # the unknown backend, at its line and column
        assert proc.stderr.startswith(f"promptdsl: error: {spec}:3:9: unknown backend")
    if "options" in model:  # a bad option is named at its place in the file, for run too
        assert proc.stderr.startswith(f"promptdsl: error: {spec}:3:") and "(at $.model.options.n_ctx" in proc.stderr
        spec.write_text(spec.read_text(encoding="utf-8") + "inputs: {q: {type: string}}\n", encoding="utf-8")
        ran = cli("run", str(spec), "-i", "q=hi")
        assert ran.returncode == 2 and ran.stderr.startswith(f"promptdsl: error: {spec}:3:") and message in ran.stderr
    spec.write_text("version: 1\nname: x\nmodel: {backend: llamacpp, options: {n_ctx: 512, temperature: 0}}\n")
    assert cli("validate", str(spec)).returncode == 0


def test_compile_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(SPECS / "sentiment.yaml"), "--input", "text=Great day"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("Text: Great day\nSentiment:\n")
    assert main(["compile", str(SPECS / "qa.yaml"), "-i", "question=Why?", "--json"]) == 0
    messages = json.loads(capsys.readouterr().out)
    assert messages[-1] == {"role": "user", "content": "Why?"}


def test_inputs_from_file_and_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str], cli: Callable[..., Ran]) -> None:
    (tmp_path / "q.txt").write_text("From a file?", encoding="utf-8")
    assert main(["compile", str(SPECS / "qa.yaml"), "-i", f"question=@{tmp_path / 'q.txt'}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[-1]["content"] == "From a file?"
    proc = cli("compile", str(SPECS / "qa.yaml"), "--input", "-", "--json", stdin='{"question": "Via stdin?"}')
    assert proc.returncode == 0 and json.loads(proc.stdout)[-1]["content"] == "Via stdin?"


def test_typed_inputs_are_parsed_by_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "n.yaml"
    spec.write_text("version: 1\nname: n\ninputs: {n: {type: integer, maximum: 9}, s: {type: string}}\n"
                    "template: '{{ n + 1 }} {{ s }}'\n")
    assert main(["compile", str(spec), "-i", "n=3", "-i", "s=42"]) == 0
    assert capsys.readouterr().out.strip().endswith("4 42")


def test_every_missing_input_is_named_with_the_flag_that_gives_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "two.yaml"
    spec.write_text("version: 1\nname: two\ninputs: {a: {type: string}, n: {type: integer, default: 1}, "
                    "b: {type: integer}}\ntemplate: '{{ a }} {{ b }} {{ n }}'\n")
    assert main(["compile", str(spec)]) == 2
    assert capsys.readouterr().err.strip() == (
        "promptdsl: error: missing inputs 'a', 'b' (no default); give them with -i a=VALUE -i b=VALUE")
    assert main(["compile", str(spec), "-i", "b=2"]) == 2  # one left
    assert capsys.readouterr().err.strip().endswith("missing input 'a' (no default); give it with -i a=VALUE")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"b": 2}'))
    assert main(["compile", str(spec), "-i", "-"]) == 2
    assert capsys.readouterr().err.strip().endswith("give it with -i a=VALUE or in the JSON on standard input")


# (args, stdin, expected stderr fragment)
BAD_RUNS = [
    (["run", "missing.yaml"], None, "missing.yaml: spec file not found"),
    (["run", "{specs}/sentiment.yaml"], None, "missing input 'text' (no default); give it with -i text=VALUE"),
    (["compile", "{specs}/summarize.yaml", "-i", "max_words=9"], None, "give it with -i text=VALUE"),
    (["compile", "{specs}/translate-fr.yaml"], None, "missing input 'text' (no default); give it with"),
    (["run", "{specs}/sentiment.yaml", "-i", "txt=hi"], None, "unknown input 'txt' (did you mean 'text'?)"),
    (["run", "{specs}/sentiment.yaml", "-i", "text="], None, "input 'text': '' should be non-empty"),
    (["run", "{specs}/sentiment.yaml", "-i", "text"], None, "--input expects name=value"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=@/nonexistent.txt"], None, "file not found: /nonexistent.txt"),
    (["run", "{specs}/sentiment.yaml", "-i", "-"], "[1, 2]", "expected a JSON object"),
    (["run", "{specs}/sentiment.yaml", "-i", "-"], "{oops", "stdin: invalid JSON at line 1"),
    (["compile", "{specs}/summarize.yaml", "-i", "text=x", "-i", "max_words=3"], None,
     "input 'max_words': 3 is less than the minimum of 5"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=a", "-i", "text=b"], None,
     "input 'text' is given with --input twice; give it once"),
    (["run", "{specs}/sentiment.yaml", "-i", "-", "-i", "text=b"], '{"text": "a"}',
     "input 'text' is given both on standard input and with --input; give it once"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=b", "-i", "-"], '{"text": "a"}',
     "input 'text' is given both on standard input and with --input; give it once"),
    (["run", "{specs}/sentiment.yaml", "-i", "-", "-i", "-"], '{"text": "a"}',
     "--input - is given twice; standard input can be read once"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--backend", "llamacp"], None,
     "unknown backend 'llamacp' (did you mean 'llamacpp'?)"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--model", "/nope/model.gguf"], None,
     "llamacpp: model file not found: /nope/model.gguf"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--model", "gpt-17"], None, "unknown model 'gpt-17'"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--out", "x.jsonl"], None, "--out goes with --data"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--resume"], None, "--resume goes with --data"),
    (["run", "{specs}/sentiment.yaml", "--data", "{specs}/../tests/data/tweeteval-sentiment-val500.jsonl", "--out",
      "results.csv"], None, "results.csv: --out writes JSON lines, not CSV; give it a .jsonl name"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--limit", "3"], None, "--limit goes with --data"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--field", "text=tweet"], None, "--field goes with --data"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--on-error", "stop"], None, "--on-error goes with --data"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--stream", "--json"], None, "--stream prints the text"),
    (["run", "{specs}/sentiment.yaml", "--data", "{specs}/../tests/data/tweeteval-sentiment-val500.jsonl", "--stream"], None,
     "--stream shows one answer"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "-o", "novalue"], None, "--option expects KEY=VALUE"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "-o", "temperature=hot"], None,
     "option 'temperature': 'hot' is not of type 'number'"),
    (["frobnicate"], None, "invalid choice: 'frobnicate'"),
    (["rn"], None, "(did you mean 'run'?)"),
    (["run", "{specs}/sentiment.yaml", "-i", "text=hi", "--jsn"], None,
     "promptdsl: error: run: unrecognized arguments: --jsn (did you mean '--json'?)"),
    (["--json", "run", "{specs}/sentiment.yaml", "-i", "text=hi"], None,
     "promptdsl: error: run: unrecognized arguments: --json (a command's flags go after it)"),
    (["eval", "{specs}/sentiment.yaml", "--label", "x"], None,
     "promptdsl: error: eval: the following arguments are required: --data"),
    (["run", "{specs}/sentiment.yaml", "--on-error", "skp"], None, "promptdsl: error: run: argument --on-error"),
]


@pytest.mark.parametrize(("args", "stdin", "message"), BAD_RUNS, ids=[m for _, _, m in BAD_RUNS])
def test_bad_input_is_one_line_exit_2(args: list[str], stdin: str | None, message: str, cli: Callable[..., Ran]) -> None:
    proc = cli(*(a.format(specs=SPECS) for a in args), stdin=stdin)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


def test_entry_point_errors_and_debug_traceback() -> None:
    """The real ``python -m promptdsl.cli`` process: one line and exit 2, or the traceback with --debug."""
    cmd = [sys.executable, "-m", "promptdsl.cli", "run", "missing.yaml"]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stderr == "promptdsl: error: missing.yaml: spec file not found\n"
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_literal_text_starting_with_at(cli: Callable[..., Ran]) -> None:
    """``@@`` is a literal ``@`` (tweets start with @user); a lone ``@`` that names no file says so."""
    proc = cli("compile", str(SPECS / "sentiment.yaml"), "-i", "text=@@user hello")
    assert proc.returncode == 0 and proc.stdout.endswith("Text: @user hello\nSentiment:\n")
    proc = cli("compile", str(SPECS / "sentiment.yaml"), "-i", "text=@user hello")
    assert proc.returncode == 2
    assert "file not found: user hello (for text that starts with '@', double it: 'text=@@user hello')" in proc.stderr


def test_backends_lists_llamacpp_with_capabilities(cli: Callable[..., Ran]) -> None:
    proc = cli("backends", "--json")
    assert proc.returncode == 0
    infos = {b["name"]: b for b in json.loads(proc.stdout)}
    assert {"chat", "completion", "score", "grammar", "stream"} <= set(infos["llamacpp"]["capabilities"])
    assert infos["llamacpp"]["version"] == "0.1.0" and infos["llamacpp"]["error"] is None
    assert infos["openai"]["options"]["properties"]["api_key"]["deprecated"] is True  # --json: all of it
    listed = cli("backends").stdout
    assert "api_key_env" in listed and "api_key," not in listed  # refused, so not offered


def test_a_non_blocking_stdout_pipe_loses_nothing(tmp_path: Path) -> None:
    """A parent may hand us a non-blocking pipe (Node does); a reader that lags must not cost output."""
    import fcntl
    import os
    import time

    text = tmp_path / "big.txt"
    text.write_text("word " * 60000, encoding="utf-8")
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    proc = subprocess.Popen([sys.executable, "-m", "promptdsl.cli", "compile", str(SPECS / "sentiment.yaml"),
                             "-i", f"text=@{text}"], stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    time.sleep(1.5)  # the reader starts late: the 64 KiB pipe is long full
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    assert proc.wait(timeout=60) == 0 and proc.stderr is not None and proc.stderr.read() == b""
    assert b"word " * 59999 + b"word" in data  # the whole input came through, not the first 64 KiB


def test_validate_a_folder_skips_the_files_its_specs_are_built_from(cli: Callable[..., Ran], tmp_path: Path) -> None:
    """A folder's .yaml examples file (or base) is part of a spec, not a broken spec; an empty folder
    is one error line and the other specs are still checked."""
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "s.yaml").write_text("version: 1\nname: s\ninputs: {text: {type: string}}\nexamples_file: shots.yaml\n",
                                   encoding="utf-8")
    (folder / "shots.yaml").write_text("- input: {text: a}\n  output: x\n", encoding="utf-8")
    proc = cli("validate", str(folder))
    assert proc.returncode == 0 and proc.stdout.startswith(f"ok: {folder / 's.yaml'} (1 example") and not proc.stderr
    (tmp_path / "empty").mkdir()
    proc = cli("validate", str(tmp_path / "empty"), str(folder / "s.yaml"))
    assert proc.returncode == 2 and proc.stdout.count("ok: ") == 1 and proc.stdout.endswith("1 ok, 1 invalid\n")
    assert proc.stderr == f"promptdsl: error: {tmp_path / 'empty'}: a folder with no spec files (*.yaml, *.yml)\n"
