"""Native tool calls through the openai backend, against a real llama-cpp-python server.

The server runs the embedded model with ``--chat_format chatml-function-calling``,
which turns ``tools`` into a prompt plus a grammar and returns real
``tool_calls``. Its template drops ``tool`` messages (results never reach the
model), so the loop's final answer is asked for with the results as plain
messages, which every server shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai_server import Server, llama_server

from promptdsl import load_spec
from promptdsl.runner import Runner
from promptdsl.tools.loop import ToolSettings

pytestmark = pytest.mark.server

KEY_ENV = "PROMPTDSL_TOOLS_SERVER_KEY"


@pytest.fixture(scope="module")
def fc_server() -> Iterator[Server]:
    with llama_server(args=["--chat_format", "chatml-function-calling"]) as server:
        yield server


@pytest.fixture
def backend(fc_server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from promptdsl_openai import OpenAIBackend

    monkeypatch.setenv(KEY_ENV, fc_server.api_key)
    b = OpenAIBackend(None, {"base_url": fc_server.base_url, "api_key_env": KEY_ENV, "timeout": 120,
                             "grammar": False})
    yield b
    b.close()


def test_native_forced_call_then_final_answer(backend: Any) -> None:
    runner = Runner(load_spec("specs/calculator-agent.yaml"), backend)
    assert runner.tool_loop is not None and runner.tool_loop.path == "native"
    result = runner.run({"question": "A shop had 125 apples and sold 47 of them. How many apples are left?"})
    first = result.steps[0]
    assert first["tool"] == "calculator" and first["approved"] is True
    assert isinstance(first["arguments"], dict) and "expression" in first["arguments"]
    assert (first["result"] is None) != (first["error"] is None)  # ran, or told the model why not
    assert result.stop_reason in {"answer", "max_steps", "error"}
    assert isinstance(result.value, (int, float))


def test_native_path_turns_off_with_tools_false(fc_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl_openai import OpenAIBackend

    monkeypatch.setenv(KEY_ENV, fc_server.api_key)
    b = OpenAIBackend(None, {"base_url": fc_server.base_url, "api_key_env": KEY_ENV, "tools": "false",
                             "grammar": False})
    try:
        runner = Runner(load_spec("specs/calculator-agent.yaml"), b, tool_settings=ToolSettings(max_steps=1))
        assert runner.tool_loop is not None and runner.tool_loop.path == "prompted"
    finally:
        b.close()
