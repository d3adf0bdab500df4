"""Load-time checks of a spec's ``tools``, ``tool_choice`` and ``max_steps`` (called once by the loader)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import PromptDSLError, did_you_mean, quote
from ..schema import RegexProblem, regex_budget
from .base import Tool, ToolError, ToolUse
from .registry import open_tool, tool_names

if TYPE_CHECKING:
    from pathlib import Path

    from ..spec import Spec
    from ..yamlsource import Located

CHOICES = ("auto", "required", "none")
MCP_PREFIX = "mcp:"


def mcp_command(name: str) -> str:
    """An ``mcp:`` entry's command with its spacing made plain (two spellings of one server compare
    equal); "" when there is none."""
    import shlex

    text = name[len(MCP_PREFIX):]
    try:
        return shlex.join(shlex.split(text))
    except ValueError:  # an unclosed quote: opening the server says so
        return text.strip()


def tool_uses(data: dict[str, Any]) -> list[ToolUse]:
    """The typed ``tools`` list of a schema-valid spec mapping."""
    return [ToolUse.from_data(item) for item in data.get("tools", [])]


def tool_folder(spec: Spec, index: int) -> Path | None:
    """The folder of the spec file that listed tool ``index`` (a base spec's, through ``extends``): its
    relative paths (a ``root``, an MCP server's script) are relative to that file, as ``examples_file``.
    A base outside the running spec's folder (one of ``$PROMPTDSL_READ_DIRS``) gets the running spec's
    folder: that setting lets specs read spec files there, not hand the folder to a model."""
    base = spec.path.parent if spec.path else None
    if base is None or spec.source is None:
        return base
    from ..loader import declared_in

    folder = declared_in(spec.source, ("tools", index), base)
    try:
        return folder if folder.resolve().is_relative_to(base.resolve()) else base
    except (OSError, RuntimeError):
        return base


def check_spec_tools(spec: Spec, located: Located) -> None:
    """Every tool exists, its options fit its schema, its argument schema is usable; tool_choice names one."""
    names: dict[str, int] = {}  # tool name -> its index in 'tools'
    servers: dict[str, int] = {}  # an MCP server's command, as words -> its index
    for i, use in enumerate(spec.tools):
        if use.name.startswith(MCP_PREFIX):
            command = mcp_command(use.name)
            if not command:
                raise located.error("an MCP tool source needs a command after 'mcp:'", ("tools", i))
            if command in servers:  # the same server twice: every one of its tools twice
                raise located.error(f"the MCP server {quote(command)} is listed twice (tools[{servers[command]}] "
                                    f"and tools[{i}])", ("tools", i))
            servers[command] = i
            continue  # its tools are only known once the server runs
        try:
            tool = open_tool(use, base_dir=tool_folder(spec, i), trusted=False)
        except ToolError as exc:
            raise located.error(exc.message, ("tools", i)) from None
        if tool.name in names:  # run would refuse it (the model could not tell them apart): say so now
            tool.release()
            raise located.error(f"tool '{tool.name}' is listed twice (tools[{names[tool.name]}] and "
                                f"tools[{i}]); a tool's name must be unique", ("tools", i))
        names[tool.name] = i
        problem = _example_problem(spec, use, tool)
        tool.release()
        if problem:
            at, message = problem
            raise located.error(message, ("tools", i, "examples", at))
    choice = spec.tool_choice
    if choice in CHOICES or choice in names:
        return
    if not spec.tools:
        # A spec that lists no tools may force one the user adds (-T), or an MCP server's: a name close
        # to an installed tool's, but not one, is a typo all the same.
        installed = tool_names()
        hint = did_you_mean(choice, installed)
        if choice not in installed and hint:
            raise located.error(f"tool_choice '{choice}' names no installed tool{hint}", ("tool_choice",))
    elif not any(u.name.startswith(MCP_PREFIX) for u in spec.tools):  # an MCP server's tools are known at run
        raise located.error(
            f"tool_choice '{choice}' is none of auto, required, none, or a listed tool "
            f"({', '.join(names)}{did_you_mean(choice, names)})",
            ("tool_choice",),
        )


def _example_problem(spec: Spec, use: ToolUse, tool: Tool) -> tuple[int, str] | None:
    """(index, why) of the first worked example whose input or arguments do not fit."""
    from ..inputs import validate_inputs
    from ..schema import validator as bounded  # a spec's arguments against a plugin's patterns: time-limited

    validator = bounded(tool.parameters)
    for i, example in enumerate(use.examples):
        try:
            validate_inputs(spec, example.input)
        except PromptDSLError as exc:
            return i, f"bad tool example input: {exc.message}"
        try:
            with regex_budget():
                error = next(iter(validator.iter_errors(example.arguments)), None)
        except RegexProblem as exc:
            return i, f"tool example arguments cannot be checked: {exc}"
        if error is not None:
            return i, f"tool example arguments do not fit '{tool.name}': {error.message}"
    return None
