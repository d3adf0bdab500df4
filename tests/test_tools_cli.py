"""The CLI side of tools: `promptdsl tools`, -T, --yes, calls shown on stderr, approval on a terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptdsl.cli import main
from promptdsl.errors import InputError
from promptdsl.tools import Step, ToolCall, ToolUse
from promptdsl.tools.builtins import Calculator

ROOT = Path(__file__).resolve().parent.parent


def cli_tools():  # type: ignore[no-untyped-def]
    """The module that holds the tool helpers of the CLI."""
    from promptdsl.cli import tools as module

    return module


class Tty(io.StringIO):
    def __init__(self, text: str = "", tty: bool = True) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_tools_command_lists_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools"]) == 0
    out = capsys.readouterr().out
    assert "calculator  0.1.0  (promptdsl, read-only)" in out and '"expression"' in out
    assert main(["tools", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert listed["read_file"]["options"]["required"] == ["root"] and listed["calculator"]["error"] is None


def test_tool_flag_syntax() -> None:
    parse = cli_tools().parse_tool_flag
    assert parse("calculator") == ToolUse("calculator")
    assert parse("read_file:root=./notes,max_bytes=100") == ToolUse("read_file", {"root": "./notes", "max_bytes": 100})
    assert parse("mcp:python server.py --port=3") == ToolUse("mcp:python server.py --port=3")
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse("read_file:root")


def test_steps_are_shown_on_stderr() -> None:
    show = cli_tools().show_step
    out = io.StringIO()
    step = Step("calculator", {"expression": "1+2"})
    show("call", step, out)
    step.result, step.approved, step.seconds = "3", True, 0.01
    show("result", step, out)
    show("result", Step("calculator", {"expression": "x"}, error="unknown name 'x'", approved=True), out)
    show("result", Step("writer", {"t": 1}, error="the user denied this call", approved=False), out)
    assert out.getvalue().splitlines() == [
        'tool: calculator {"expression": "1+2"}', "  -> 3  (0.01s)", "  error: unknown name 'x'", "  denied"]


def test_approval_asks_on_a_terminal_and_denies_elsewhere() -> None:
    approver = cli_tools().terminal_approver
    call = ToolCall("calculator", {"expression": "1+2"})
    err = Tty()
    assert approver(False, Tty("y\n"), err)(Calculator(), call) is True
    assert "run calculator" in err.getvalue() and "[y/N]" in err.getvalue()
    assert approver(False, Tty("\n"), Tty())(Calculator(), call) is False
    assert approver(False, Tty("y\n", tty=False), Tty())(Calculator(), call) is False  # no terminal: deny
    assert approver(True, Tty("", tty=False), Tty())(Calculator(), call) is True  # --yes


def test_what_tools_and_models_write_reaches_the_terminal_escaped_and_masked() -> None:
    """A file read by read_file (or a tool name a server made up) must not retitle the terminal,
    clear it or print fake lines; a token in a result is masked like in any message."""
    show = cli_tools().show_step
    out = io.StringIO()
    evil = "\x1b]0;PWNED\x07\x1b[2K\r\x1b[31mFAKE: all tests passed \u202e"
    token = "https://alice:" + "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8" + "@github.com/x.git"
    step = Step("x" + evil, {"path": evil})
    show("call", step, out)
    step.result, step.approved, step.seconds = f"url = {token} {evil}", True, 0.0
    show("result", step, out)
    show("result", Step("y" + evil, {}, error="unknown tool " + evil, approved=None), out)
    text = out.getvalue()
    assert not any(c in text for c in "\x1b\x07\r\u202e")
    assert "\\x1b]0;PWNED" in text and "ghp_" not in text and "alice:***@github.com" in text
    assert len(text.splitlines()) == 4
    saved = step.to_dict()  # what results files and --json hold
    assert "ghp_" not in saved["result"] and "alice:***@github.com" in saved["result"]


def test_approval_shows_every_key_of_the_call() -> None:
    """A long first value must not push what the call does out of the question."""
    approver = cli_tools().terminal_approver
    err = Tty()
    call = ToolCall("fs_tool", {"note": "n" * 5000, "path": "~/.ssh", "action": "delete_recursive"})
    assert approver(False, Tty("n\n"), err)(Calculator(), call) is False
    question = err.getvalue()
    assert '"path": "~/.ssh"' in question and '"action": "delete_recursive"' in question
    assert len(question) < 1000


def test_unknown_tool_flag_is_one_line_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: s\ninputs: {q: {type: string}}\n")
    proc = subprocess.run([sys.executable, "-m", "promptdsl.cli", "run", str(spec), "-i", "q=x", "-T", "calcu",
                           "-b", "openai", "-o", "base_url=http://127.0.0.1:9/v1", "-o", "grammar=false"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "promptdsl: error: unknown tool 'calcu' (did you mean 'calculator'?); installed tools: calculator, "
        "current_time, list_dir, read_file"]


@pytest.mark.model
def test_run_shows_calls_on_stderr_and_steps_in_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "promptdsl.cli", "run", "specs/calculator-agent.yaml", "--json",
         "-i", "question=A shop had 125 apples and sold 47 of them. How many apples are left?"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["steps"][0]["tool"] == "calculator" and result["stop_reason"]
    assert proc.stderr.startswith("tool: calculator {\"expression\": ")
    assert "  -> " in proc.stderr


def test_no_terminal_says_why_a_call_is_denied_once_a_tool() -> None:
    approver = cli_tools().terminal_approver(False, Tty("", tty=False), err := Tty())
    call = ToolCall("calculator", {"expression": "1+2"})
    assert approver(Calculator(), call) is False and approver(Calculator(), call) is False
    assert err.getvalue().splitlines() == [
        "promptdsl: no terminal to ask whether to run calculator, so it is denied; "
        "--yes approves calls whose approval is 'ask'"]


ASKING = """
version: 1
name: asking
mode: chat
inputs: {q: {type: string}}
template: "{{ q }}"
output: {type: text}
tools:
  - {name: calculator, approval: ask}
"""


@pytest.mark.parametrize(("yes", "code"), [(False, 1), (True, 0)])
def test_an_answer_without_the_tool_exits_1_with_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], yes: bool, code: int
) -> None:
    """A denied call (no terminal here) still gets the model's own answer, but not as a success:
    a script reading stdout would take the guess for the tool's result."""
    from tools_support import ScriptedTools

    from promptdsl.cli import run as run_module
    from promptdsl.runner import Runner

    spec = tmp_path / "asking.yaml"
    spec.write_text(ASKING)
    monkeypatch.setattr(run_module, "runner_from_args", lambda s, args: Runner(
        s, ScriptedTools([("calculator", {"expression": "1+2"})], answer="1.25"),
        tool_settings=cli_tools().tool_settings(args)))
    monkeypatch.setattr(sys, "stdin", Tty("", tty=False))
    assert main(["run", str(spec), "-i", "q=what is 1+2?", *(["--yes"] if yes else [])]) == code
    out, err = capsys.readouterr()
    if yes:
        assert "  -> 3" in err and "denied" not in err
    else:
        assert out == "1.25\n"  # the answer is still printed, in the output type
        assert err.splitlines()[-1] == (
            "promptdsl: a tool call was denied, so the model answered without its result (stop_reason: denied)")
        assert "no terminal to ask whether to run calculator" in err


def test_a_tool_listed_twice_fails_validate_where_run_would(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: s\ninputs: {q: {type: string}}\ntools:\n  - calculator\n"
                    "  - current_time\n  - {name: calculator, options: {form: operands}}\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err == (f"promptdsl: error: {spec}:7:5: tool 'calculator' is listed twice (tools[0] and tools[2]); "
                   "a tool's name must be unique (at $.tools[2])\n")


def test_t_for_a_tool_the_spec_lists_says_so_before_any_backend(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: s\ninputs: {q: {type: string}}\ntools: [calculator]\n")
    # port 9 (discard) is never reached: the tools are opened before the first request
    assert main(["run", str(spec), "-i", "q=x", "-T", "calculator", "-T", "current_time", "-b", "openai",
                 "-o", "base_url=http://127.0.0.1:9/v1"]) == 2
    err = capsys.readouterr().err
    assert err == ("promptdsl: error: the spec already lists the tool 'calculator'; a tool added for the run (-T) "
                   "must be one the spec does not list, so leave it out, or remove it from the spec to give it your "
                   "own settings\n")


def test_an_mcp_server_listed_twice_or_again_with_t_is_refused_before_it_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: s\ninputs: {q: {type: string}}\ntools:\n  - 'mcp:python  server.py --x'\n"
                    "  - mcp:python server.py '--x'\n")  # two spellings of one command
    assert main(["validate", str(spec)]) == 2
    assert capsys.readouterr().err == (f"promptdsl: error: {spec}:6:5: the MCP server 'python server.py --x' is "
                                       "listed twice (tools[0] and tools[1]) (at $.tools[1])\n")
    spec.write_text("version: 1\nname: s\ninputs: {q: {type: string}}\ntools: ['mcp:python server.py']\n")
    # refused from the names alone: no server starts (server.py does not even exist), no backend is asked
    assert main(["run", str(spec), "-i", "q=x", "--yes", "-T", "mcp:python  server.py", "-b", "openai",
                 "-o", "base_url=http://127.0.0.1:9/v1"]) == 2
    assert capsys.readouterr().err == (
        "promptdsl: error: the spec already starts the MCP server 'python server.py'; a tool added for the run (-T) "
        "must be one the spec does not list, so leave it out\n")
