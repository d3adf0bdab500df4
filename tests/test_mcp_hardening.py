"""Misbehaving MCP servers are bad input: one clear line, exit code 2, nothing hangs, no process left behind.

The servers are tests/mcp_misbehaving.py (each writes its pid to a file, so the tests can see it end).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tools_support import ScriptedTools

from promptdsl import registry
from promptdsl.cli import main
from promptdsl.tools import ToolError, ToolFailure, mcp
from promptdsl.tools.mcp import open_mcp_tools, tool_problem

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).with_name("mcp_misbehaving.py")
SPEC = "version: 1\nname: m\ninputs: {q: {type: string, maxLength: 10}}\ntemplate: '{{ q }}'\n"


def server(mode: str, pidfile: Path) -> str:
    return shlex.join([sys.executable, str(SCRIPT), mode, str(pidfile)])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_of(pidfile: Path) -> int:
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the server never wrote its pid"
        time.sleep(0.02)
    return int(pidfile.read_text())


@pytest.fixture
def quick_start(monkeypatch: pytest.MonkeyPatch) -> float:
    """A 1 s startup timeout, so a server that never answers fails fast."""
    monkeypatch.setattr(mcp, "STARTUP_TIMEOUT", 1.0)
    return 1.0


class NoCalls(ScriptedTools):
    """A backend that loads no model (the run fails on its MCP server before any generation)."""

    def __init__(self, model: object = None, options: object = None) -> None:
        super().__init__([])


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    real = registry.backend_class
    monkeypatch.setattr(registry, "backend_class", lambda name: NoCalls if name == "scripted" else real(name))
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "home"))
    return "scripted"


def test_tool_problem_names_unusable_input_schemas() -> None:
    def info(schema: object) -> SimpleNamespace:
        return SimpleNamespace(name="t", inputSchema=schema)

    assert tool_problem(info({"type": "object", "properties": {"a": {"type": "string"}}})) is None
    assert tool_problem(info({})) is None  # no schema: no arguments
    assert "invalid JSON Schema" in (tool_problem(info({"properties": {"a": {"type": "nonsense"}}})) or "")
    assert "must describe an object" in (tool_problem(info({"type": "string"})) or "")
    assert "not a JSON object" in (tool_problem(info(["x"])) or "")


@pytest.mark.server
def test_a_tool_with_an_invalid_input_schema_refuses_its_server(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = server("badschema", pidfile)
    with pytest.raises(ToolError) as caught:
        open_mcp_tools(command, timeout=5)
    message = str(caught.value)
    assert message.startswith(f"MCP server '{command}' offers tool 'badtype', which has an input schema that is unusable")
    assert "\n" not in message and "$.properties.a.type" in message
    assert not alive(pid_of(pidfile))


@pytest.mark.server
def test_a_server_that_never_answers_is_one_line_exit_2_and_ended(
        tmp_path: Path, quick_start: float, no_model: str, capfd: pytest.CaptureFixture[str]) -> None:
    pidfile = tmp_path / "pid"
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    started = time.monotonic()
    code = main(["run", str(spec), "-i", "q=x", "-b", no_model, "-T", f"mcp:{server('mute', pidfile)}"])
    elapsed = time.monotonic() - started
    _, err = capfd.readouterr()
    assert code == 2
    assert err.splitlines() == [f"promptdsl: error: MCP server '{server('mute', pidfile)}' did not start within 1s"]
    assert not alive(pid_of(pidfile))  # ended (the SDK closes stdin, then SIGTERMs the group), not orphaned
    assert elapsed < quick_start + 5  # the startup timeout plus the SDK's bounded shutdown, no 10 s extra


@pytest.mark.server
def test_a_server_that_ignores_sigterm_is_killed(tmp_path: Path, quick_start: float) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not start within 1s"):
        open_mcp_tools(server("stubborn", pidfile), timeout=5)
    assert not alive(pid_of(pidfile))
    assert time.monotonic() - started < quick_start + mcp.CLOSE_TIMEOUT


@pytest.mark.server
def test_garbage_on_stdout_is_one_line_without_the_sdks_traceback(tmp_path: Path) -> None:
    """In a fresh process, so nothing the test session configured hides the SDK's logging."""
    pidfile = tmp_path / "pid"
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    command = server("garbage", pidfile)
    program = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import test_mcp_hardening as t; "
               "from promptdsl import registry; registry.backend_class = lambda name: t.NoCalls; "
               "from promptdsl.cli import main; sys.exit(main())")
    done = subprocess.run(
        [sys.executable, "-c", program, str(Path(__file__).parent), "run", str(spec), "-i", "q=x", "-T", f"mcp:{command}"],
        capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"promptdsl: error: MCP server '{command}' failed to start: MCPError: Connection closed; "
        "it wrote 'garbage' on stdout, which is not a JSON-RPC message"]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.server
def test_sdk_logs_stay_off_the_terminal_in_process(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ToolError, match="not a JSON-RPC message"):
        open_mcp_tools(server("garbage", tmp_path / "pid"), timeout=5)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.server
def test_close_ends_the_process_promptly(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    tools = open_mcp_tools(server("good", pidfile), timeout=5)
    assert [t.name for t in tools] == ["good"] and tools[0].call({"a": "x"}) == "ok"
    pid = pid_of(pidfile)
    started = time.monotonic()
    tools[0].close()
    assert time.monotonic() - started < 3 and not alive(pid)
    tools[0].close()  # twice is fine
    with pytest.raises(ToolFailure, match="not running"):
        tools[0].call({"a": "x"})


@pytest.mark.server
def test_servers_left_open_are_closed_at_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    tools = open_mcp_tools(server("good", pidfile), timeout=5)
    pid = pid_of(pidfile)
    mcp._close_open_servers()  # what atexit runs
    assert not alive(pid)
    with pytest.raises(ToolFailure, match="not running"):
        tools[0].call({"a": "x"})


@pytest.mark.server
@pytest.mark.parametrize("trusted", [False, True])
def test_a_server_a_spec_names_does_not_get_your_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    """A spec's server starts with what a program needs (HOME, PATH, ...), not your API keys; one
    you name with -T gets your environment, since it may need its own token."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-spec-0123456789")
    seen = tmp_path / "env.txt"
    good = Path(__file__).with_name("mcp_server.py")
    inner = f"printenv > {shlex.quote(str(seen))}; exec {shlex.quote(sys.executable)} {shlex.quote(str(good))}"
    tools = open_mcp_tools(f"sh -c {shlex.quote(inner)}", timeout=10, trusted=trusted)
    try:
        env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    finally:
        tools[0].close()
    assert ("OPENAI_API_KEY" in env) is trusted
    assert env.get("PATH") and env.get("HOME") == os.environ.get("HOME")
