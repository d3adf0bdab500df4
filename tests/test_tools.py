"""Tools without a model: built-ins (safe by construction), the decorator, discovery, and spec checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import pytest
from fake_dist import fake_distribution

from promptdsl import SpecError, load_spec, loads_spec
from promptdsl.tools import MaxLen, ToolError, ToolFailure, ToolUse, tool
from promptdsl.tools.builtins import Calculator, CurrentTime, ListDir, ReadFile, calculate
from promptdsl.tools.registry import list_tools, open_tool, schema_problem

# ---------------------------------------------------------------------------- calculator


@pytest.mark.parametrize(("expr", "value"), [
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("7 / 2", 3.5), ("7 // 2", 3), ("-3 ** 2", -9), ("10 % 4", 2),
    ("123 * 456", 56088), ("1.5 + 1.5", 3), ("2 ^ 10", 1024), ("6 × 7", 42),
])
def test_calculator_does_arithmetic(expr: str, value: float) -> None:
    assert calculate(expr) == value


@pytest.mark.parametrize(("expr", "reason"), [
    ("__import__('os').system('true')", "not arithmetic"),
    ("x + 1", "unknown name 'x'"),
    ("1 / 0", "division by zero"),
    ("9 ** 9 ** 9", "power too large"),
    ("10 ** 200", "power too large"),
    ("2 +", "cannot parse"),
    ("1" * 201, "longer than 200"),
    ("[1, 2]", "not arithmetic"),
    ("'a' * 3", "not arithmetic"),
    ("1e308 * 10", "not a finite number"),
])
def test_calculator_refuses_everything_else(expr: str, reason: str) -> None:
    with pytest.raises(ToolFailure, match=reason):
        calculate(expr)


def test_calculator_tool_formats_numbers() -> None:
    calc = Calculator()
    assert calc.call({"expression": "1 / 3"}) == "0.3333333333"
    assert calc.call({"expression": "100 * 3"}) == "300"
    assert calc.read_only


# ---------------------------------------------------------------------------- time and files


def test_current_time_in_a_zone() -> None:
    now = CurrentTime().call({"zone": "Asia/Tokyo"})
    assert now.endswith("+09:00") and now[4] == "-"
    with pytest.raises(ToolFailure, match="unknown time zone 'Mars/Base'"):
        CurrentTime().call({"zone": "Mars/Base"})


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello notes\n")
    (root / "bin.dat").write_bytes(b"\xff\xfe\x00")
    (root / "big.txt").write_text("x" * 5000)
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    return root


def test_read_file_reads_only_under_root(notes: Path) -> None:
    reader = ReadFile({"root": str(notes), "max_bytes": 1000})
    assert reader.call({"path": "a.txt"}) == "hello notes\n"
    for path, reason in [("../secret.txt", "outside"), ("link.txt", "outside"), ("/etc/passwd", "no such file"),
                         ("bin.dat", "not UTF-8"), ("big.txt", "limit is 1000"), ("nope.txt", "no such file")]:
        with pytest.raises(ToolFailure, match=reason):
            reader.call({"path": path})


def test_list_dir(notes: Path) -> None:
    lister = ListDir({"root": str(notes)})
    assert lister.call({}).splitlines() == ["a.txt", "big.txt", "bin.dat", "link.txt", "sub/"]
    assert lister.call({"path": "sub"}) == "(empty)"
    with pytest.raises(ToolFailure, match="outside"):
        lister.call({"path": ".."})


@pytest.mark.parametrize("tool", [ReadFile, ListDir])
def test_an_os_error_goes_back_as_the_path_the_model_wrote_not_the_root(notes: Path, tool: type) -> None:
    """A name too long for the file system said 'OSError: [Errno 36] ... /abs/root/...' to a maybe remote model."""
    long = "x" * 300 + "/y"
    (notes / "locked").mkdir()
    (notes / "locked" / "f.txt").write_text("x")
    os.chmod(notes / "locked", 0)
    os.symlink("loop2", notes / "loop1")
    os.symlink("loop1", notes / "loop2")
    try:
        for path, reason in ((long, "File name too long"), ("a\0b", "embedded null byte"),
                             ("loop1", "a loop of symbolic links"),
                             ("locked/f.txt" if tool is ReadFile else "locked/", "Permission denied")):
            try:
                tool({"root": str(notes)}).call({"path": path})
            except ToolFailure as exc:
                assert str(exc).startswith("cannot use '") and str(exc).endswith(reason), exc
                assert str(notes) not in str(exc)
            else:
                assert os.geteuid() == 0 and reason == "Permission denied"  # root reads a mode-0 folder
    finally:
        os.chmod(notes / "locked", 0o755)


def test_list_dir_shows_the_first_names_of_a_large_folder(tmp_path: Path) -> None:
    for i in range(ListDir.max_entries + 50):
        (tmp_path / f"f{i:04d}.txt").write_text("")
    lines = ListDir({"root": str(tmp_path)}).call({}).splitlines()
    assert lines[0] == "f0000.txt" and lines[ListDir.max_entries - 1] == "f0199.txt"
    assert lines[-1] == "... and 50 more" and len(lines) == ListDir.max_entries + 1


def test_a_root_that_is_no_folder_and_options_a_tool_ignores_are_refused(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    for root, what in (("nowhere", "does not exist"), ("file.txt", "is not a folder")):
        with pytest.raises(ToolError, match=f"tool 'read_file': root '{root}' {what}"):
            open_tool(ToolUse("read_file", {"root": root}), base_dir=tmp_path, trusted=False)
    with pytest.raises(ToolError, match="max_bytes"):  # list_dir reads no file: the key would do nothing
        open_tool(ToolUse("list_dir", {"root": ".", "max_bytes": 10}), base_dir=tmp_path, trusted=True)
    assert open_tool(ToolUse("read_file", {"root": ".", "max_bytes": 10}), base_dir=tmp_path, trusted=True)


def test_a_spec_root_stays_inside_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    tool_ = open_tool(ToolUse("read_file", {"root": "notes"}), base_dir=tmp_path, trusted=False)
    assert tool_.options["root"] == str((tmp_path / "notes").resolve())
    with pytest.raises(ToolError, match="only allow a root inside its own folder"):
        open_tool(ToolUse("read_file", {"root": "/"}), base_dir=tmp_path, trusted=False)
    assert open_tool(ToolUse("read_file", {"root": "/"}), base_dir=tmp_path, trusted=True).options["root"] == "/"


# ---------------------------------------------------------------------------- the decorator


def test_a_function_tool_may_say_it_is_cheap() -> None:
    @tool(read_only=True, cheap=True)
    def double(n: int) -> int:
        """Double it."""
        return 2 * n

    @tool
    def triple(n: int) -> int:
        """Triple it."""
        return 3 * n

    assert (double.cheap, double.read_only, triple.cheap) == (True, True, False)


def test_decorator_schema_from_hints_and_docstring() -> None:
    @tool(name="lookup")
    def find(query: str, limit: int = 5, mode: Literal["fast", "full"] = "fast", tags: list[str] | None = None,
             note: Annotated[str, MaxLen(20)] = "") -> list[str]:
        """Search the notes for a phrase.

        Args:
            query: what to look for
            limit: at most this many hits
        """
        return [query] * limit

    assert find.name == "lookup"
    assert find.description == "Search the notes for a phrase."
    props = find.parameters["properties"]
    assert props["query"] == {"type": "string", "maxLength": 200, "description": "what to look for"}
    assert props["limit"] == {"type": "integer", "description": "at most this many hits", "default": 5}
    assert props["mode"] == {"enum": ["fast", "full"], "default": "fast"}
    assert props["tags"]["type"] == "array" and props["tags"]["maxItems"] == 32
    assert props["note"]["maxLength"] == 20
    assert find.parameters["required"] == ["query"]
    assert schema_problem(find.parameters) is None
    assert find.call({"query": "x", "limit": 2}) == '["x", "x"]'


def test_a_decorated_tools_return_value_reaches_the_model_as_text() -> None:
    """A string as it is; anything else as JSON, as docs/tools.md says (None is ``null``)."""

    @tool
    def give(kind: str) -> object:
        """Return something of a kind."""
        return {"text": "sunny", "number": 78, "object": {"t": "é"}, "none": None}[kind]

    assert [give.call({"kind": k}) for k in ("text", "number", "object", "none")] == ["sunny", "78", '{"t": "é"}', "null"]


def test_a_decorated_function_is_typed_and_still_callable() -> None:
    """``@tool`` was typed ``-> Any`` (mypy --strict: "untyped decorator") and the function could no
    longer be called by the program that defined it."""
    from promptdsl.tools.decorator import FunctionTool

    @tool
    def words(text: str) -> int:
        """Count words."""
        return len(text.split())

    @tool(name="shout", read_only=True)
    def upper(text: str) -> str:
        """Upper-case."""
        return text.upper()

    assert isinstance(words, FunctionTool) and isinstance(upper, FunctionTool)  # (mypy checks the types)
    assert words("a b c") == 3 and upper(text="hi") == "HI"
    assert (words.name, upper.name, upper.read_only) == ("words", "shout", True)


def test_decorator_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(ToolError, match="needs a type hint"):
        tool(lambda x: x)
    with pytest.raises(ToolError, match="has no JSON Schema"):
        @tool
        def f(x: object) -> str:
            return ""


def test_schema_problems_are_named() -> None:
    assert schema_problem({"type": "object", "properties": {"s": {"type": "string"}}}) == "string at $.s has no maxLength"
    assert "array at $.a" in str(schema_problem({"type": "object", "properties": {"a": {"type": "array"}}}))
    assert "must be an object" in str(schema_problem({"type": "string", "maxLength": 3}))
    assert "invalid JSON Schema" in str(schema_problem({"type": "object", "properties": 3}))
    assert schema_problem({"type": "object", "properties": {"e": {"type": "string", "enum": ["a"]}}}) is None


# ---------------------------------------------------------------------------- discovery


def test_builtins_are_found_through_entry_points() -> None:
    infos = {i.name: i for i in list_tools()}
    assert {"calculator", "current_time", "read_file", "list_dir"} <= set(infos)
    assert infos["calculator"].error is None and infos["calculator"].distribution == "promptdsl"
    assert "expression" in infos["calculator"].parameters["properties"]
    assert infos["read_file"].options["required"] == ["root"]


@pytest.fixture
def broken_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution with broken and unusable tools, visible to importlib.metadata through sys.path."""
    entry_points = {"missing": "promptdsl_no_such_module:Tool", "explodes": "broken_tool_explodes:Tool",
                    "wrongtype": "json:loads", "unbounded": "unbounded_tool:Unbounded"}
    modules = {
        "broken_tool_explodes": 'raise RuntimeError("boom in a tool")\n',
        "unbounded_tool": (
            "from promptdsl.tools import Tool\n"
            "class Unbounded(Tool):\n"
            "    name = 'unbounded'\n"
            "    parameters = {'type': 'object', 'properties': {'text': {'type': 'string'}}}\n"
            "    def call(self, arguments):\n        return 'ok'\n"
        ),
    }
    with fake_distribution(tmp_path / "site", monkeypatch, "broken-tools", "0.3.0", "promptdsl.tools",
                           entry_points, modules) as site:
        yield site


def test_broken_tools_are_named_and_the_rest_work(broken_tools: Path) -> None:
    infos = {i.name: i for i in list_tools()}
    assert "ModuleNotFoundError" in str(infos["missing"].error)
    assert "RuntimeError: boom in a tool" in str(infos["explodes"].error)
    assert str(infos["wrongtype"].error).endswith(
        "is neither a promptdsl Tool subclass nor a Tool; decorate the function with @promptdsl.tools.tool")
    assert infos["missing"].version == "0.3.0"
    assert infos["calculator"].error is None


def test_validate_names_the_tool_problem_and_where(broken_tools: Path, tmp_path: Path) -> None:
    cases = {
        "tools: [calculater]": "unknown tool 'calculater' (did you mean 'calculator'?)",
        "tools: [explodes]": "tool plugin 'explodes'",
        "tools: [unbounded]": "argument schema is unusable: string at $.text has no maxLength",
        "tools: [{name: read_file}]": "bad options: 'root' is a required property",
        "tools: [{name: read_file, options: {root: x, depth: 3}}]": "unknown option 'depth'; this tool's options: ",
        "tools: [{name: calculator, options: {frm: x}}]": "unknown option 'frm' (did you mean 'form'?)",
        "tools: [{name: current_time, options: {x: 1}}]": "unknown option 'x'; this tool takes no options",
        "tools: [calculator]\ntool_choice: clock": "tool_choice 'clock' is none of auto, required, none",
        "tools: [{name: calculator, approval: maybe}]": "'maybe' is not one of ['auto', 'ask', 'deny']",
        "max_steps: 99": "99 is greater than the maximum of 50",
    }
    for extra, message in cases.items():
        path = tmp_path / "s.yaml"
        path.write_text(f"version: 1\nname: s\n{extra}\n")
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert message in str(info.value), (extra, str(info.value))
        assert str(info.value).startswith(f"{path}:"), str(info.value)


def test_tool_choice_may_force_a_tool_the_run_adds(tmp_path: Path) -> None:
    """`tool_choice: required` with no tools listed was refused at load, so `-T` could never meet it."""
    from tools_support import NativeScripted

    from promptdsl import Runner
    from promptdsl.validate import spec_notes

    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nname: s\nmode: chat\ninputs: {q: {type: string}}\ntool_choice: required\n"
                    "max_steps: 1\n")
    spec = load_spec(path)
    assert any("each run needs one given with -T NAME" in n for n in spec_notes(spec))
    with pytest.raises(SpecError, match=r"tool_choice 'required' needs a tool, and the spec lists none") as info:
        Runner(spec, NativeScripted([]))
    assert info.value.path == ("tool_choice",) and info.value.line == 5
    backend = NativeScripted([("calculator", {"expression": "1+1"}), "2"])
    result = Runner(spec, backend, tools=["calculator"]).run({"q": "1+1?"})
    assert backend.turns[0][2] == "required" and result.steps[0]["tool"] == "calculator"
    from promptdsl.tools.loop import ToolSettings

    assert Runner(spec, NativeScripted([]), tool_settings=ToolSettings(tool_choice="none")).tool_loop is None
    path.write_text("version: 1\nname: s\ntool_choice: calculater\n")  # no tools listed, still a typo
    with pytest.raises(SpecError, match=r"tool_choice 'calculater' names no installed tool \(did you mean 'calc"):
        load_spec(path)
    path.write_text("version: 1\nname: s\ntool_choice: lookup_order\n")  # maybe an MCP server's tool: for -T
    assert load_spec(path).tool_choice == "lookup_order"


def test_a_good_tools_block_loads(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nname: s\ntools:\n  - calculator\n"
                    "  - {name: read_file, options: {root: ./notes}, approval: auto, timeout: 5}\n"
                    "tool_choice: calculator\nmax_steps: 3\n")
    spec = load_spec(path)
    assert [u.name for u in spec.tools] == ["calculator", "read_file"]
    assert spec.tools[1].timeout == 5 and spec.tools[1].approval == "auto"
    assert spec.tool_choice == "calculator" and spec.max_steps == 3


def test_mcp_sources_load_without_starting_anything() -> None:
    spec = loads_spec("version: 1\nname: s\ntools: ['mcp:python -m my_server']\n")
    assert spec.tools[0].name == "mcp:python -m my_server"


# ---------------------------------------------------------------------------- openai request shapes


def test_openai_native_tool_request_shapes() -> None:
    from promptdsl_openai.formats import function_tools, tool_arguments, tool_choice_param, tool_messages

    from promptdsl.tools import Step

    calc = Calculator()
    assert function_tools([calc.describe()]) == [{"type": "function", "function": {
        "name": "calculator", "description": calc.description, "parameters": calc.parameters}}]
    assert tool_choice_param("auto") == "auto" and tool_choice_param("none") == "none"
    assert tool_choice_param("calculator") == {"type": "function", "function": {"name": "calculator"}}
    ok = Step("calculator", {"expression": "1+2"}, result="3", approved=True, id="c1")
    bad = Step("calculator", {"expression": "x"}, error="unknown name 'x'", approved=True, id="c2")
    messages = tool_messages([ok, bad])
    assert messages[0] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1+2"}'}}]}
    assert messages[1] == {"role": "tool", "tool_call_id": "c1", "content": "3"}
    assert messages[3]["content"] == "error: unknown name 'x'"
    assert tool_arguments('{"a": 1}') == {"a": 1} and tool_arguments("not json") == "not json"
    assert tool_arguments(None) == {}
