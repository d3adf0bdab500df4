"""The tool loop's rules with scripted backends (no model): limits, approval, timeouts, errors, repeats, cuts, trace."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tools_support import NativeScripted, ScriptedTools

from promptdsl import Runner, load_spec, loads_spec
from promptdsl.datafile import DataFile
from promptdsl.dataset import run_dataset
from promptdsl.tools import Approval, Tool, ToolCall, ToolFailure, ToolUse, tool
from promptdsl.tools.loop import ToolSettings, approve_all, cut

SPEC = """\
version: 1
name: agent
inputs: {question: {type: string}}
output: {type: text}
"""


def spec(extra: str = "") -> Any:
    return loads_spec(SPEC + extra)


@tool(read_only=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(read_only=True)
def broken(x: int) -> str:
    """Always fails."""
    raise ToolFailure(f"cannot do {x}")


@tool(read_only=True)
def slow(seconds: float) -> str:
    """Sleeps."""
    time.sleep(seconds)
    return "woke"


@tool(read_only=True)
def flood(n: int) -> str:
    """A long result."""
    return "".join(str(i % 10) for i in range(n))


class Writer(Tool):
    """Not read-only: its default approval is 'ask'."""

    name = "writer"
    description = "writes things"
    parameters = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 20}},  # noqa: RUF012
                  "required": ["text"], "additionalProperties": False}

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def call(self, arguments: dict[str, Any]) -> str:
        self.written.append(arguments["text"])
        return "written"


def run(backend: Any, tools: list[Any], *, extra: str = "", **settings: Any) -> Any:
    runner = Runner(spec(extra), backend, tools=tools, tool_settings=ToolSettings(**settings))
    return runner.run({"question": "what is 2+3?"})


def test_a_call_then_an_answer_is_traced() -> None:
    backend = ScriptedTools([("add", {"a": 2, "b": 3})], answer="5")
    result = run(backend, [add])
    assert result.value == "5"
    assert result.stop_reason == "answer"
    assert [(s["tool"], s["arguments"], s["result"], s["error"], s["approved"]) for s in result.steps] == [
        ("add", {"a": 2, "b": 3}, "5", None, True)
    ]
    assert set(result.steps[0]) == {"tool", "arguments", "result", "error", "approved", "seconds"}
    out = result.to_dict()
    assert out["steps"] == result.steps and out["stop_reason"] == "answer"
    final = backend.prompts[-1]
    assert final.messages[-2].content == json.dumps({"tool": "add", "arguments": {"a": 2, "b": 3}})
    assert final.messages[-1].content.startswith("add returned: 5")
    # the choice was 'answer' or a tool, by score; the tool list is in the system message
    assert backend.scored[0] == ["answer", "add"]
    assert "- add: Add two integers." in backend.prompts[0].messages[0].content


def test_step_limit_forces_a_final_answer() -> None:
    calls = [("add", {"a": i, "b": 1}) for i in range(10)]
    backend = ScriptedTools(calls, answer="done")
    result = run(backend, [add], extra="max_steps: 3\n")
    assert result.stop_reason == "max_steps"
    assert len(result.steps) == 3 and result.value == "done"
    assert "You can call these tools" not in backend.prompts[-1].messages[0].content  # the last call has no tools


def test_max_steps_override_and_zero() -> None:
    backend = ScriptedTools([("add", {"a": 1, "b": 1})])
    result = run(backend, [add], max_steps=0)
    assert result.steps == [] and result.stop_reason == "max_steps"


def test_ask_is_denied_where_nobody_can_ask() -> None:
    writer = Writer()
    result = run(ScriptedTools([("writer", {"text": "hi"})]), [writer])
    assert result.stop_reason == "denied"
    assert result.steps[0]["approved"] is False and "denied" in result.steps[0]["error"]
    assert writer.written == []


def test_ask_runs_when_the_approver_says_yes() -> None:
    writer = Writer()
    seen: list[ToolCall] = []

    def approver(t: Tool, call: ToolCall) -> bool:
        seen.append(call)
        return True

    result = run(ScriptedTools([("writer", {"text": "hi"})]), [writer], approver=approver)
    assert writer.written == ["hi"] and seen[0].arguments == {"text": "hi"}
    assert result.steps[0]["approved"] is True and result.stop_reason == "answer"


def test_deny_policy_refuses_even_with_yes() -> None:
    backend = ScriptedTools([("add", {"a": 1, "b": 2})])
    runner = Runner(spec(), backend, tools=[], tool_settings=ToolSettings(
        extra=[add], approver=approve_all, approvals={"add": Approval.DENY}))
    result = runner.run({"question": "q"})
    assert result.stop_reason == "denied" and result.steps[0]["result"] is None


def test_a_slow_call_times_out() -> None:
    backend = ScriptedTools([("slow", {"seconds": 3.0})])
    spec_ = spec()
    runner = Runner(spec_, backend, tool_settings=ToolSettings(extra=[slow]))
    runner.tool_loop.tools["slow"].timeout = 0.2  # type: ignore[union-attr]
    started = time.perf_counter()
    result = runner.run({"question": "q"})
    assert time.perf_counter() - started < 2.5
    assert result.steps[0]["error"] == "timed out after 0.2s"


def test_timeout_from_the_spec(tmp_path: Path) -> None:
    s = spec("tools: [{name: calculator, timeout: 0.5}]\n")
    assert s.tools == [ToolUse("calculator", timeout=0.5)]


def test_a_tool_error_goes_back_to_the_model_and_stays_in_the_trace() -> None:
    backend = ScriptedTools([("broken", {"x": 1}), ("add", {"a": 1, "b": 1})], answer="2")
    result = run(backend, [broken, add])
    assert result.steps[0]["error"] == "cannot do 1" and result.steps[0]["result"] is None
    assert result.steps[1]["result"] == "2"
    second_ask = backend.prompts[2]  # score, arguments, then the second score
    assert any("broken returned: error: cannot do 1" in m.content for m in second_ask.messages)
    assert result.stop_reason == "answer"


class _Opaque:
    pass


@tool(read_only=True)
def opaque(kind: str) -> Any:
    """Returns what JSON cannot hold."""
    return {"object": _Opaque(), "set": {"a"}, "nan": float("nan"), "bytes": b"ab"}[kind]


class SetTool(Tool):
    name = "sets"
    description = "returns a set"
    read_only = True
    parameters = {"type": "object", "properties": {}, "additionalProperties": False}  # noqa: RUF012

    def call(self, arguments: dict[str, Any]) -> Any:
        return {"letters": {"a", "b"}}


@pytest.mark.parametrize("kind", ["object", "set", "nan", "bytes"])
def test_a_result_json_cannot_hold_is_the_tools_error_not_its_python_repr(kind: str) -> None:
    """Before, json.dumps(default=str) sent '<_Opaque object at 0x…>' or "{'a'}" to the model as a result
    (and a direct tool made it the answer)."""
    backend = ScriptedTools([("opaque", {"kind": kind})], answer="fine")
    result = run(backend, [opaque])
    step = result.steps[0]
    assert step["result"] is None and step["error"].startswith("tool 'opaque' returned a value JSON cannot hold")
    assert "0x" not in step["error"] and "{'a'}" not in json.dumps(result.to_dict())
    backend = ScriptedTools([("sets", {})], answer="fine")
    assert run(backend, [SetTool()]).steps[0]["error"].startswith("tool 'sets' returned a value JSON cannot hold")


@tool(read_only=True)
def crashes(x: int) -> str:
    """Fails unexpectedly."""
    return {"a": 1}["b" * x]


def test_debug_shows_the_traceback_of_what_a_tool_raised_and_the_model_gets_one_line() -> None:
    import io

    from promptdsl.cli.tools import show_step

    events: list[tuple[str, Any]] = []
    backend = ScriptedTools([("crashes", {"x": 1}), ("broken", {"x": 2})], answer="ok")
    result = run(backend, [crashes, broken], on_event=lambda kind, step: events.append((kind, step)))
    assert result.steps[0]["error"] == "KeyError: 'b'" and "exception" not in result.steps[0]
    crashed, failed = [step for kind, step in events if kind == "result"]
    shown, quiet = io.StringIO(), io.StringIO()
    show_step("result", crashed, shown, debug=True)
    show_step("result", crashed, quiet)
    assert "Traceback" in shown.getvalue() and 'return {"a": 1}["b" * x]' in shown.getvalue()
    assert quiet.getvalue() == "  error: KeyError: 'b'\n"
    expected = io.StringIO()
    show_step("result", failed, expected, debug=True)  # a ToolFailure is the tool's own message: no traceback
    assert failed.exception is None and expected.getvalue() == "  error: cannot do 2\n"


def test_the_same_failing_call_twice_stops_the_loop() -> None:
    backend = ScriptedTools([("broken", {"x": 1}), ("broken", {"x": 1}), ("add", {"a": 1, "b": 1})])
    result = run(backend, [broken, add])
    assert result.stop_reason == "error"
    assert len(result.steps) == 2 and all(s["error"] for s in result.steps)


def test_a_repeated_successful_call_is_not_run_again() -> None:
    backend = ScriptedTools([("add", {"a": 1, "b": 1}), ("add", {"a": 1, "b": 1})])
    result = run(backend, [add])
    assert len(result.steps) == 1 and result.stop_reason == "answer"


def test_long_results_are_cut_head_and_tail() -> None:
    backend = ScriptedTools([("flood", {"n": 10_000})])
    result = run(backend, [flood], result_budget=300)
    text = result.steps[0]["result"]
    assert len(text) <= 300
    assert text.startswith("0123456789") and text.endswith("789")
    assert "characters cut" in text


def test_cut_keeps_short_text_and_counts_what_it_cuts() -> None:
    assert cut("short", 100) == "short"
    long = "a" * 500 + "b" * 500
    out = cut(long, 200)
    n = int(out.split("[... ")[1].split(" ")[0])
    assert len(out) - len(out.split("\n")[1]) - 2 + n == len(long)


def test_bad_arguments_are_checked_before_anything_runs() -> None:
    backend = ScriptedTools([("add", {"a": "two", "b": 3}), ("add", {"a": 2})])
    result = run(backend, [add])
    assert result.steps[0]["error"].startswith("bad arguments: 'two' is not of type 'integer'")
    assert result.steps[0]["approved"] is None
    assert "required" in result.steps[1]["error"]


def test_tool_choice_none_uses_no_tool() -> None:
    backend = ScriptedTools([("add", {"a": 1, "b": 1})])
    result = run(backend, [add], tool_choice="none")
    assert result.steps == [] and backend.scored == []


def test_a_forced_tool_skips_the_choice_for_the_first_step_only() -> None:
    backend = ScriptedTools([("add", {"a": 1, "b": 1})])
    result = run(backend, [add, broken], tool_choice="add")
    assert result.steps[0]["tool"] == "add"
    assert backend.scored == [["answer", "add", "broken"]]  # asked once, after the forced call


def test_required_chooses_among_tools_only() -> None:
    backend = ScriptedTools([("broken", {"x": 2})])
    run(backend, [add, broken], tool_choice="required")
    assert backend.scored[0] == ["add", "broken"]


def test_native_path_runs_calls_and_takes_the_text_answer() -> None:
    backend = NativeScripted([("add", {"a": 2, "b": 2}), "4"])
    runner = Runner(spec(), backend, tools=[add])
    result = runner.run({"question": "2+2?"})
    assert runner.tool_loop is not None and runner.tool_loop.path == "native"
    assert result.value == "4" and result.raw == "4" and result.stop_reason == "answer"
    assert backend.turns[1][0][0].result == "4" and backend.turns[1][0][0].id == "id0"
    assert backend.prompts == []  # the native text answer was the result
    assert result.truncated is None


def test_a_native_answer_a_limit_cut_is_marked_truncated_and_a_bad_mark_is_the_plugins_error() -> None:
    from promptdsl.backend import CONTEXT_FULL, CUT_OFF
    from promptdsl.errors import BackendError
    from promptdsl.tools.native import ToolTurn

    for mark in (CUT_OFF, CONTEXT_FULL):
        backend = NativeScripted([("add", {"a": 2, "b": 2}), ToolTurn(text="The sum is", cut_off=mark)])
        result = Runner(spec(), backend, tools=[add]).run({"question": "2+2?"})
        assert result.value == "The sum is" and result.truncated == mark.reason
    backend = NativeScripted([ToolTurn(text="x", cut_off="length")])  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="cut_off of type str, not a CutOff"):
        Runner(spec(), backend, tools=[add]).run({"question": "q"})


def test_a_chat_reply_a_limit_cut_says_so_and_a_direct_result_never_does() -> None:
    from promptdsl.backend import CUT_OFF
    from promptdsl.prompt import Message
    from promptdsl.tools.chat import ChatToolLoop
    from promptdsl.tools.native import ToolTurn

    loop = ChatToolLoop(NativeScripted([ToolTurn(text="Once upon", cut_off=CUT_OFF)]), [add])
    found = loop.steps([Message("user", "a story")])
    assert found.text == "Once upon" and found.cut_off is CUT_OFF
    loop.close()
    loop = ChatToolLoop(NativeScripted([ToolTurn(text="done")]), [add])
    assert loop.steps([Message("user", "hi")]).cut_off is None
    loop.close()


def test_native_unknown_tool_is_fed_back() -> None:
    backend = NativeScripted([("nope", {}), ("nope", {}), "x"])
    result = Runner(spec(), backend, tools=[add]).run({"question": "q"})
    assert "unknown tool 'nope'" in result.steps[0]["error"]
    assert result.stop_reason == "error"
    assert backend.prompts, "the final answer is asked for without tools"


def test_events_tell_calls_and_results() -> None:
    events: list[tuple[str, str]] = []
    run(ScriptedTools([("add", {"a": 1, "b": 2})]), [add], on_event=lambda kind, step: events.append((kind, step.tool)))
    assert events == [("call", "add"), ("result", "add")]


def test_completion_mode_prompted_path() -> None:
    s = loads_spec("version: 1\nname: c\nmode: completion\ninputs: {q: {type: string}}\ntemplate: 'Q: {{ q }}'\n")
    backend = ScriptedTools([("add", {"a": 1, "b": 2})], answer="3")
    result = Runner(s, backend, tools=[add]).run({"q": "1+2"})
    assert result.value == "3"
    assert 'Tool call: {"tool": "add", "arguments": {"a": 1, "b": 2}}\nResult: 3' in backend.prompts[-1].text
    assert backend.scored[0] == [" answer", " add"]


def test_dataset_lines_carry_steps(tmp_path: Path) -> None:
    backend = ScriptedTools([("add", {"a": 1, "b": 2})] * 2, answer="3")
    runner = Runner(spec(), backend, tools=[add])
    data = tmp_path / "in.jsonl"
    data.write_text('{"question": "a"}\n{"question": "b"}\n')
    written: list[str] = []
    run_dataset(runner, DataFile(data), written.append)
    lines = [json.loads(line) for line in written]
    assert [line["stop_reason"] for line in lines] == ["answer", "answer"]
    assert lines[0]["steps"][0]["result"] == "3"


def test_unique_tool_names() -> None:
    from promptdsl.tools import ToolError

    with pytest.raises(ToolError, match="given twice: add"):
        Runner(spec(), ScriptedTools([]), tools=[add, add])


def test_a_direct_tool_result_is_the_answer() -> None:
    s = loads_spec("version: 1\nname: d\ninputs: {q: {type: string}}\ntools: [{name: calculator, direct: true}]\n"
                   "output: {type: json, schema: {type: number}}\n")
    backend = ScriptedTools([("calculator", {"expression": "6 * 7"})], answer="0")
    result = Runner(s, backend).run({"q": "6 times 7?"})
    assert result.value == 42 and result.raw == "42" and result.stop_reason == "answer"
    assert result.to_dict()["answered_by"] == "calculator"
    assert all(not p.messages[-1].content.endswith("Now answer the question.") for p in backend.prompts)


def test_a_direct_result_that_does_not_parse_falls_back_to_the_model() -> None:
    s = loads_spec("version: 1\nname: d\ninputs: {q: {type: string}}\ntools: [{name: current_time, direct: true}]\n"
                   "output: {type: json, schema: {type: number}}\n")
    backend = ScriptedTools([("current_time", {"zone": "UTC"})], answer="7")
    result = Runner(s, backend).run({"q": "when?"})
    assert result.value == 7 and "answered_by" not in result.to_dict()


def test_arguments_python_json_cannot_hold_go_back_to_the_model() -> None:
    """A 5,000-digit integer in a call the model wrote is a bad call, fed back: never a ValueError
    that ends the run (or a whole dataset run)."""
    from promptdsl.tools.prompted import _arguments_from

    huge = '{"tool": "add", "arguments": {"a": 1' + "1" * 5000 + ', "b": 2}}'
    assert _arguments_from(huge, "add") == huge
    deep = '{"tool": "add", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert _arguments_from(deep, "add") == deep
    assert _arguments_from('{"tool": "add", "arguments": {"a": 1, "b": 2}}', "add") == {"a": 1, "b": 2}


def test_a_model_written_argument_is_checked_with_a_time_limit() -> None:
    """A plugin's or MCP server's pattern that backtracks (``^(a+)+$``) ran forever on the plain
    ``re`` engine, before approval and outside the tool's timeout."""
    from promptdsl.tools.loop import _argument_problem

    class Picky(Tool):
        name = "picky"
        description = "takes a word"
        parameters = {"type": "object", "properties": {"w": {"type": "string", "pattern": "^(a+)+$"}}}  # noqa: RUF012

        def call(self, arguments: dict[str, Any]) -> str:
            return "ok"

    start = time.monotonic()
    problem = _argument_problem(Picky(), {"w": "a" * 40 + "!"})
    assert problem is not None and "does not match" in problem
    assert time.monotonic() - start < 10
    assert _argument_problem(Picky(), {"w": "aaa"}) is None

    class Broken(Picky):
        parameters = {"type": "object", "properties": {"w": {"type": "nonsense"}}}  # noqa: RUF012

    assert "argument schema cannot be used" in (_argument_problem(Broken(), {"w": "a"}) or "")


def test_a_spec_may_make_approval_stricter_never_looser() -> None:
    from promptdsl.tools.loop import _approval

    auto, ask, deny = Approval.AUTO, Approval.ASK, Approval.DENY
    spec = {"trusted": False, "floor": auto}
    assert _approval(None, ask, **spec) is ask and _approval(auto, ask, **spec) is ask  # a writer, an MCP tool
    assert _approval(None, auto, **spec) is auto and _approval(deny, auto, **spec) is deny
    assert _approval(auto, ask, trusted=True, floor=auto) is auto  # -T is the user's own choice
    assert _approval(auto, auto, trusted=False, floor=ask) is ask  # the spec chose the server too


@pytest.mark.parametrize(("chose", "expected"), [(False, "auto"), (True, "ask")])
def test_when_the_spec_chose_the_server_its_tools_ask(tmp_path: Path, chose: bool, expected: str) -> None:
    """What read_file reads goes to the server the model runs on: a spec that chose both could read
    the user's files (a .git/config with a token) and send them to itself."""
    from promptdsl.tools.loop import make_loop

    (tmp_path / "notes").mkdir()
    text = SPEC + "tools:\n  - {name: read_file, options: {root: ./notes}, approval: auto}\n"
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    backend = ScriptedTools([], answer="x")
    backend.spec_chose_destination = chose
    loop = make_loop(Runner(load_spec(path), backend), ToolSettings())
    assert loop is not None and [t.approval.value for t in loop.tools.values()] == [expected]


class _ShortScores(ScriptedTools):
    def score(self, prompt: Any, continuations: Any) -> list[float]:
        return [0.0]  # one number, whatever the count of choices: a plugin bug


class _ExitingStream(ScriptedTools):
    def stream(self, prompt: Any, options: Any, constraint: Any = None) -> Any:
        raise SystemExit(3)


class _Bytes(ScriptedTools):
    def complete(self, prompt: Any, options: Any, constraint: Any = None) -> Any:
        return b"add"


@pytest.mark.parametrize(("backend", "message"), [
    (_ShortScores([]), "scripted: score returned 1 value for 2 choices"),
    (_ExitingStream([("add", {"a": 1, "b": 2})]), "scripted: it called sys.exit(3)"),
    (_Bytes([("add", {"a": 1, "b": 2})]), "scripted: complete returned bytes, not text"),
])
def test_a_misbehaving_backend_on_the_prompted_path_is_one_backend_error(backend: Any, message: str) -> None:
    """As without tools: the plugin is named, exit code 1, no traceback from inside the tool loop."""
    from promptdsl import BackendError

    with pytest.raises(BackendError) as info:
        Runner(spec(), backend, tools=[add]).run({"question": "1 plus 2?"})
    assert str(info.value) == message and info.value.exit_code == 1


def test_only_a_cheap_direct_tool_is_run_on_every_listed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The filter runs a direct tool on each listed call only when it says running is free (calculator):
    a read-only plugin tool may be a remote API, run only when the model calls it."""
    from promptdsl.tools.builtins import Calculator

    calls: list[str] = []

    def call(self: Any, arguments: dict[str, Any]) -> str:
        calls.append(arguments["expression"])
        return "7"

    monkeypatch.setattr(Calculator, "call", call)
    s = loads_spec("version: 1\nname: d\ninputs: {q: {type: string}}\ntools: [{name: calculator, direct: true}]\n"
                   "output: {type: json, schema: {type: integer}}\n")
    for cheap, runs in ((True, 3), (False, 0)):
        monkeypatch.setattr(Calculator, "cheap", cheap)
        calls[:] = []
        loop = Runner(s, ScriptedTools([])).tool_loop
        assert loop is not None
        for expression in ("1 + 6", "2 + 5", "3 + 4"):
            assert loop.acceptable({"q": "x"}, "calculator", {"expression": expression})
        assert len(calls) == runs, (cheap, calls)


def test_a_tool_whose_close_fails_or_exits_does_not_fail_the_run() -> None:
    class BadClose(Tool):
        name = "badclose"
        read_only = True
        parameters = {"type": "object", "properties": {}, "additionalProperties": False}  # noqa: RUF012

        def call(self, arguments: dict[str, Any]) -> str:
            return "ok"

        def close(self) -> None:
            raise SystemExit(5)

    backend = ScriptedTools([("badclose", {})], answer="done")
    runner = Runner(spec(), backend, tools=[BadClose()])
    assert runner.run({"question": "x"}).value == "done"
    assert runner.tool_loop is not None
    runner.tool_loop.close()  # neither raises nor ends the test process
