"""Tool discovery through the ``promptdsl.tools`` entry-point group, and the checks a spec's tools must pass.

Built-in and third-party tools are found the same way (see :mod:`promptdsl.registry`).
A plugin that fails to load, declares malformed attributes, is installed under a
name other than its own, or shares its name with another distribution's tool is
named with its reason and never stops the others. The entry-point name is the
tool's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from ..errors import did_you_mean, quote
from ..registry import (
    PluginProblem,
    distribution,
    failure_text,
    load_plugin,
    name_problem,
    object_schema_problem,
    plugin_entry_points,
    plugin_output,
)
from ..schema import errors as schema_errors
from .base import Tool, ToolError, ToolUse

GROUP = "promptdsl.tools"
MAX_ARRAY = 64


@dataclass(frozen=True)
class ToolInfo:
    """What ``promptdsl tools`` shows for one installed tool."""

    name: str
    version: str
    distribution: str = ""
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] | None = field(default_factory=dict)  # None: not declared (options are not checked)
    read_only: bool = False
    error: str | None = None


#: The type each declared attribute must have, and how a message says it; checked in this order.
_ATTRIBUTE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "read_only": (lambda v: isinstance(v, bool), "True or False"),
    "cheap": (lambda v: isinstance(v, bool), "True or False"),
    "parameters": (lambda v: isinstance(v, Mapping), "a JSON Schema object (a dict)"),
    "options_schema": (lambda v: v is None or isinstance(v, Mapping), "a JSON Schema object (a dict) or None"),
}


def _attribute_problem(name: str, obj: type[Tool] | Tool) -> str | None:
    for attr, (fits, expected) in _ATTRIBUTE_TYPES.items():
        value = getattr(obj, attr, None)
        if not fits(value):
            return f"{attr} must be {expected}, not {type(value).__name__} {quote(value, python=True)}"
    return None


def _name_problem(name: str, obj: type[Tool] | Tool) -> str | None:
    fix = f"set name = '{name}'" if isinstance(obj, type) else f"make it with @tool(name='{name}')"
    return name_problem("tool", name, obj.name, fix)


def _parameters_problem(name: str, obj: type[Tool] | Tool) -> str | None:
    """The shape always; bounds on strings and arrays too when nothing can change the schema (a ready-made
    tool instance, an ``@tool`` function or a class with Tool's own constructor, that takes no options;
    a constructor of its own may still set it): then every spec naming it would fail, and the listing
    should say so."""
    problem = object_schema_problem(obj.parameters)
    if problem is not None:
        return f"parameters (its argument schema) {problem}"
    declared = obj.options_schema
    takes_options = (declared is None or bool(declared.get("properties"))
                     or declared.get("additionalProperties") is not False)
    if takes_options or (isinstance(obj, type) and obj.__init__ is not Tool.__init__):
        return None
    unusable = schema_problem(obj.parameters)
    return None if unusable is None else f"its argument schema is unusable: {unusable}"


def _options_schema_problem(name: str, obj: type[Tool] | Tool) -> str | None:
    if obj.options_schema is None:  # not declared: options are not checked, as for backends
        return None
    problem = object_schema_problem(obj.options_schema)
    return None if problem is None else f"options_schema {problem}"


def _call_problem(name: str, obj: type[Tool] | Tool) -> str | None:
    """Without its own ``call``, every call would fail with an empty NotImplementedError, sent to the model."""
    cls = obj if isinstance(obj, type) else type(obj)
    return "does not implement call(arguments)" if cls.call is Tool.call else None


#: What a tool plugin must satisfy to be listed as usable; the first failing check makes it broken.
_TOOL_CHECKS: tuple[Callable[[str, type[Tool] | Tool], str | None], ...] = (
    _attribute_problem, _name_problem, _call_problem, _parameters_problem, _options_schema_problem,
)


def _load(name: str, eps: Sequence[EntryPoint]) -> type[Tool] | Tool:
    try:
        ep, obj = load_plugin("tool", name, eps)
    except PluginProblem as exc:
        raise ToolError(str(exc)) from exc.__cause__
    if not (isinstance(obj, Tool) or (isinstance(obj, type) and issubclass(obj, Tool))):
        hint = ("; decorate the function with @promptdsl.tools.tool" if callable(obj) and not isinstance(obj, type)
                else "")
        raise ToolError(f"tool plugin '{name}' ({ep.value}) is neither a promptdsl Tool subclass nor a Tool{hint}")
    for check in _TOOL_CHECKS:
        problem = check(name, obj)
        if problem is not None:
            raise ToolError(f"tool plugin '{name}' ({ep.value}): {problem}")
    return obj


def list_tools() -> list[ToolInfo]:
    """Every installed tool plugin, loaded or with the reason it failed."""
    infos = []
    for name, eps in sorted(plugin_entry_points(GROUP).items()):
        dname, version = distribution(eps[0])
        try:
            obj = _load(name, eps)
        except ToolError as exc:
            infos.append(ToolInfo(name, version, dname, error=exc.message))
            continue
        options = None if obj.options_schema is None else dict(obj.options_schema)
        infos.append(ToolInfo(name, version, dname, obj.description, dict(obj.parameters), options, obj.read_only))
    return infos


def tool_names() -> list[str]:
    """The names installed tool plugins register (none is loaded)."""
    return sorted(plugin_entry_points(GROUP))


def find_tool(name: str, extra: Mapping[str, Tool] | None = None) -> type[Tool] | Tool:
    """The class or instance registered as ``name`` (``extra``: tools given in Python, first)."""
    if extra and name in extra:
        return extra[name]
    eps = plugin_entry_points(GROUP)
    if name not in eps:
        known = sorted({*eps, *(extra or {})})
        listed = ", ".join(known) or "none"
        raise ToolError(f"unknown tool '{name}'{did_you_mean(name, known)}; installed tools: {listed}")
    return _load(name, eps[name])


def _option_problem(obj: type[Tool] | Tool, options: Mapping[str, Any]) -> str | None:
    if obj.options_schema is None:  # not declared: the tool takes its options unchecked
        return None
    known = dict(obj.options_schema.get("properties", {}))
    if obj.options_schema.get("additionalProperties", True) is False:
        for key in options:
            if key not in known:
                names = ", ".join(sorted(known))
                where = f"this tool's options: {names}" if names else "this tool takes no options"
                return f"unknown option {quote(key)}{did_you_mean(str(key), known)}; {where}"
    errors = schema_errors(obj.options_schema, dict(options))
    if not errors:
        return None
    err = errors[0]
    at = ".".join(str(p) for p in err.absolute_path)
    return f"{err.message}" + (f" (option '{at}')" if at else "")


def open_tool(use: ToolUse, *, base_dir: Path | None = None, trusted: bool = False,
              extra: Mapping[str, Tool] | None = None) -> Tool:
    """A configured tool for one spec entry; checks options and the argument schema."""
    obj = find_tool(use.name, extra)
    problem = _option_problem(obj, use.options)
    if problem:
        raise ToolError(f"tool '{use.name}': bad options: {problem}")
    try:
        with plugin_output():
            options = obj.prepare_options(use.options, base_dir=base_dir, trusted=trusted)
            made = obj(options) if isinstance(obj, type) else (obj.with_options(options) if options else obj)
    except ToolError:
        raise
    except (Exception, SystemExit) as exc:  # a plugin may fail in any way, even exit
        raise ToolError(f"tool '{use.name}' failed to start: {failure_text(exc)}") from exc
    if not made.name:
        made.name = use.name
    problem = schema_problem(made.parameters)
    if problem:
        raise ToolError(f"tool '{use.name}': its argument schema is unusable: {problem}")
    return made


def schema_problem(schema: Any, where: str = "$") -> str | None:
    """Why an argument schema cannot be used (invalid, not an object, or unbounded strings); None if fine.

    Every string must have ``maxLength`` (or an ``enum``/``const``), so that a
    grammar built from the schema cannot decode forever.
    """
    if where == "$":
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            return f"invalid JSON Schema: {exc.message}"
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            return "the arguments must be an object (type: object)"
    if not isinstance(schema, Mapping):
        return None
    if "enum" in schema or "const" in schema:
        return None
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "string" in types and "maxLength" not in schema:
        return f"string at {where} has no maxLength"
    if "array" in types and "maxItems" not in schema:
        return f"array at {where} has no maxItems"
    for key, sub in _children(schema, where):
        problem = schema_problem(sub, key)
        if problem:
            return problem
    return None


def _children(schema: Mapping[str, Any], where: str) -> Iterable[tuple[str, Any]]:
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{where}.{name}", sub
    if isinstance(schema.get("items"), Mapping):
        yield f"{where}[]", schema["items"]
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or ()):
            yield f"{where}/{key}[{i}]", sub
