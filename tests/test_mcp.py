"""MCP servers as tool sources: a real stdio server (tests/mcp_server.py, built on the SDK's server API)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from tools_support import ScriptedTools

from promptdsl import Runner, loads_spec
from promptdsl.tools import ToolError, ToolFailure
from promptdsl.tools.loop import ToolSettings, approve_all
from promptdsl.tools.mcp import bounded, open_mcp_tools

pytestmark = pytest.mark.server

SERVER = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).with_name('mcp_server.py')))}"


def test_tools_are_listed_called_and_failures_reported() -> None:
    tools = {t.name: t for t in open_mcp_tools(SERVER, timeout=5)}
    try:
        assert set(tools) == {"add", "shout", "fail", "nap"}
        assert tools["add"].description == "Add two integers."
        assert tools["add"].parameters["properties"]["a"]["type"] == "integer"
        assert tools["shout"].parameters["properties"]["text"]["maxLength"] == 1000  # bounded for grammars
        assert tools["add"].call({"a": 2, "b": 40}) == "42"
        assert tools["shout"].call({"text": "hi"}) == "HI"
        with pytest.raises(ToolFailure, match=r"no good|Error executing tool fail"):
            tools["fail"].call({"reason": "no good"})
        tools["nap"].timeout = 0.3
        with pytest.raises(ToolFailure, match="timed out"):
            tools["nap"].call({"seconds": 3})
        assert tools["add"].call({"a": 1, "b": 1}) == "2"  # the session survives a timed-out call
    finally:
        tools["add"].close()
    with pytest.raises(ToolFailure, match="not running"):
        tools["add"].call({"a": 1, "b": 1})


def test_mcp_tools_run_in_the_loop_under_the_same_rules() -> None:
    spec = loads_spec("version: 1\nname: m\ninputs: {q: {type: string}}\n")
    backend = ScriptedTools([("add", {"a": 20, "b": 22}), ("shout", {"text": 5})], answer="42")
    denied = Runner(spec, backend, tool_settings=ToolSettings(extra=[f"mcp:{SERVER}"]))
    result = denied.run({"q": "x"})
    assert result.steps[0]["approved"] is False and result.stop_reason == "denied"  # MCP tools default to ask
    assert denied.tool_loop is not None
    denied.tool_loop.close()

    backend = ScriptedTools([("add", {"a": 20, "b": 22}), ("shout", {"text": 5})], answer="42")
    runner = Runner(spec, backend, tool_settings=ToolSettings(extra=[f"mcp:{SERVER}"], approver=approve_all))
    try:
        result = runner.run({"q": "x"})
    finally:
        assert runner.tool_loop is not None
        runner.tool_loop.close()
    assert result.steps[0]["result"] == "42" and result.steps[0]["approved"] is True
    assert result.steps[1]["error"].startswith("bad arguments: 5 is not of type 'string'")


def test_a_spec_may_not_start_a_server_without_approval(tmp_path: Path) -> None:
    spec = loads_spec(f"version: 1\nname: m\ntools: ['mcp:{SERVER}']\n", base_dir=tmp_path)
    with pytest.raises(ToolError, match="approve it on a terminal or pass --yes"):
        Runner(spec, ScriptedTools([]))
    runner = Runner(spec, ScriptedTools([]), tool_settings=ToolSettings(approver=approve_all))
    assert runner.tool_loop is not None and set(runner.tool_loop.tools) == {"add", "shout", "fail", "nap"}
    runner.tool_loop.close()


def test_a_server_that_does_not_start_is_one_clear_error() -> None:
    with pytest.raises(ToolError, match="MCP server 'no-such-command-xyz' failed to start"):
        open_mcp_tools("no-such-command-xyz", timeout=5)


def test_bounded_adds_limits_only_where_missing() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string"}, "e": {"type": "string", "enum": ["a"]},
                                               "l": {"type": "array", "items": {"type": "string", "maxLength": 5}}}}
    out = bounded(schema)
    assert out["properties"]["s"]["maxLength"] == 1000 and "maxLength" not in out["properties"]["e"]
    assert out["properties"]["l"]["maxItems"] == 64 and out["properties"]["l"]["items"]["maxLength"] == 5
