"""Answers Python can read but no results file can carry: a lone surrogate, NaN/Infinity, a
duplicate key. Each is the answer's OutputError (exit 1, one line, no traceback), in a single run
(plain, --json, --stream), a dataset run (an error line, later rows still run, the file strict
JSON, --resume carries on), an evaluation's --out and ``promptdsl test --json``.

Fast tier: the example ``echo`` backend (it answers with its prompt, so a JSON escape such as
``"\\ud800"`` reaches the parser as the model would write it) and a backend whose Python text
holds a lone surrogate itself, both installed as a throwaway distribution; no model, no server.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_dist import fake_distribution
from test_data_hardening import results as strict_lines  # the results file as strict JSON (UTF-8, no NaN)
from test_plugins import Ran

from promptdsl import registry
from promptdsl.cache import cached_problem
from promptdsl.cli import main
from promptdsl.spec import OutputSpec, OutputType

ROOT = Path(__file__).resolve().parent.parent
ECHO_SOURCE = ROOT / "plugins" / "example" / "promptdsl_echo" / "__init__.py"

#: A backend whose text holds a lone surrogate itself (as a server's JSON "\ud800" decodes to):
#: it answers with the prompt's last line, "<S>" in it written as U+D800.
LONE_SOURCE = """\
from promptdsl.backend import Backend, Capability

class Lone(Backend):
    name = "lone"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.STREAM})

    def stream(self, prompt, options, constraint=None):
        text = prompt.messages[-1].content if prompt.mode == "chat" else prompt.text
        yield text.strip().splitlines()[-1].replace("<S>", "\\ud800")
"""

JS = """\
version: 1
name: js
model: {backend: echo}
inputs: {text: {type: string}}
output: {type: json, schema: {}, method: generate}
"""

LONE = "the answer holds a lone surrogate (such as \\ud800), which is not valid Unicode"


@pytest.fixture
def cli(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Ran]]:
    """``promptdsl ARGS...`` in this process with the echo and lone backends installed."""
    monkeypatch.setattr(registry, "_instances", {})
    entries = {"echo": "promptdsl_echo:EchoBackend", "lone": "promptdsl_lone:Lone"}
    modules = {"promptdsl_echo": ECHO_SOURCE.read_text(encoding="utf-8"), "promptdsl_lone": LONE_SOURCE}
    with fake_distribution(tmp_path / "site", monkeypatch, "promptdsl-echo", "0.1.0", "promptdsl.backends",
                           entries, modules):

        def run(*args: str) -> Ran:
            capsys.readouterr()
            monkeypatch.setattr(sys, "stdin", io.StringIO(""))
            code = main(list(args))
            out = capsys.readouterr()
            return Ran(code, out.out, out.err)

        yield run


def spec(tmp_path: Path, text: str = JS) -> str:
    path = tmp_path / "js.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def output_error(ran: Ran, message: str) -> None:
    """Exit 1, nothing on stdout, one error line naming ``message``, no traceback."""
    assert ran.returncode == 1, ran
    assert ran.stdout.strip() == "", ran.stdout
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert message in ran.stderr, ran.stderr


BAD_ANSWERS = [
    ('"\\ud800"', LONE),
    ('{"a": "x\\udc00"}', LONE),
    ("NaN", "NaN is not a JSON number"),
    ("Infinity", "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"),
    ("1e400", "1e400 is not a finite number"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
]


@pytest.mark.parametrize(("answer", "message"), BAD_ANSWERS)
@pytest.mark.parametrize("flags", [(), ("--json",)])
def test_a_single_run_refuses_an_answer_no_results_file_can_carry(
    cli: Callable[..., Ran], tmp_path: Path, answer: str, message: str, flags: tuple[str, ...]
) -> None:
    output_error(cli("run", spec(tmp_path), "-i", f"text={answer}", "--no-cache", *flags), message)


def test_standard_json_still_runs(cli: Callable[..., Ran], tmp_path: Path) -> None:
    ran = cli("run", spec(tmp_path), "-i", 'text={"a": "\\ud83d\\ude00", "b": 1.5}', "--json", "--no-cache")
    assert ran.returncode == 0, ran
    assert json.loads(ran.stdout)["value"] == {"a": "\U0001f600", "b": 1.5}


def test_a_dataset_run_writes_an_error_line_and_runs_the_next_row(cli: Callable[..., Ran], tmp_path: Path) -> None:
    rows = [{"text": answer} for answer, _ in BAD_ANSWERS] + [{"text": "[1, 2]"}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ("run", spec(tmp_path), "--data", str(data), "--out", str(out), "--on-error", "skip", "--no-cache")
    ran = cli(*args)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran
    lines = strict_lines(out)
    assert [line["index"] for line in lines] == list(range(len(rows)))
    for line, (_, message) in zip(lines, BAD_ANSWERS, strict=False):
        assert line["error_type"] == "output" and message in line["error"], line
    assert lines[-1]["value"] == [1, 2]
    again = cli(*args, "--resume")  # every row is done: nothing runs again, nothing crashes
    assert again.returncode == 0 and "Traceback" not in again.stderr, again
    assert strict_lines(out) == lines


def test_an_evaluations_out_file_and_test_json_stay_strict(cli: Callable[..., Ran], tmp_path: Path) -> None:
    data = tmp_path / "gold.jsonl"
    rows = [{"text": '"\\ud800"', "gold": "x"}, {"text": "NaN", "gold": 1}, {"text": '"ok"', "gold": "ok"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "eval.jsonl"
    ran = cli("eval", spec(tmp_path), "--data", str(data), "--label", "gold", "--out", str(out), "--no-cache",
              "--on-error", "skip")
    assert "Traceback" not in ran.stderr, ran
    assert [line.get("correct") for line in strict_lines(out)] == [False, False, True]

    tested = spec(tmp_path, JS + "tests:\n  - input: {text: '\"\\ud800\"'}\n    expect: x\n"
                  "  - input: {text: 'NaN'}\n    expect: 1\n")
    ran = cli("test", tested, "--json")
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran
    reports = [json.loads(line, parse_constant=lambda name: pytest.fail(name)) for line in ran.stdout.splitlines()]
    assert [r["passed"] for r in reports] == [False, False]
    assert LONE in reports[0]["detail"] and "NaN is not a JSON number" in reports[1]["detail"]


LONE_TEXT = JS.replace("backend: echo", "backend: lone").replace(
    "output: {type: json, schema: {}, method: generate}", "output: {type: text}"
)


@pytest.mark.parametrize("flags", [(), ("--json",), ("--stream",)])
def test_raw_text_holding_a_lone_surrogate_is_an_output_error(
    cli: Callable[..., Ran], tmp_path: Path, flags: tuple[str, ...]
) -> None:
    ran = cli("run", spec(tmp_path, LONE_TEXT), "-i", "text=hi <S> there", "--no-cache", *flags)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran
    assert LONE in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr
    if "--stream" in flags:  # the text so far is shown, the surrogate as a replacement character
        assert ran.stdout == "hi \ufffd there\n"
    else:
        assert ran.stdout == ""


def test_raw_text_holding_a_lone_surrogate_is_an_error_line_in_a_dataset(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a <S>"}\n{"text": "fine"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    ran = cli("run", spec(tmp_path, LONE_TEXT), "--data", str(data), "--out", str(out), "--on-error", "skip",
              "--no-cache")
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran
    first, second = strict_lines(out)
    assert first["error_type"] == "output" and LONE in first["error"] and "raw" not in first
    assert second["value"] == "fine" and second["raw"] == "fine"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "\ud800", {"k\udc00": 1}])
def test_a_cached_answer_that_is_not_standard_json_is_not_served(value: Any) -> None:
    entry = {"value": value, "raw": "x", "method": "generate", "scores": None}
    assert cached_problem(entry, OutputSpec(OutputType.JSON, schema={})) is not None
    assert cached_problem({**entry, "value": 1.5}, OutputSpec(OutputType.JSON, schema={})) is None
