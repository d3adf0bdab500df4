"""Tool discovery through the ``promptdsl.tools`` entry-point group, and the checks a spec's tools must pass.

Built-in and third-party tools are found the same way; a plugin that fails to
load is named with its reason and never stops the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from ..errors import did_you_mean
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
    options: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False
    error: str | None = None


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def _load(ep: EntryPoint) -> type[Tool] | Tool:
    try:
        obj = ep.load()
    except Exception as exc:  # a third-party import can fail in any way
        raise ToolError(f"tool plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, Tool) or (isinstance(obj, type) and issubclass(obj, Tool)):
        return obj
    raise ToolError(f"tool plugin '{ep.name}' ({ep.value}) is neither a promptdsl Tool subclass nor a Tool")


def list_tools() -> list[ToolInfo]:
    """Every installed tool plugin, loaded or with the reason it failed."""
    infos = []
    for name, ep in sorted(_entry_points().items()):
        dist = getattr(ep, "dist", None)
        dname, version = (dist.metadata["Name"], dist.version) if dist is not None else ("", "?")
        try:
            obj = _load(ep)
        except ToolError as exc:
            infos.append(ToolInfo(name, version, dname, error=exc.message))
            continue
        infos.append(ToolInfo(name, version, dname, obj.description, dict(obj.parameters),
                              dict(obj.options_schema), obj.read_only))
    return infos


def find_tool(name: str, extra: Mapping[str, Tool] | None = None) -> type[Tool] | Tool:
    """The class or instance registered as ``name`` (``extra``: tools given in Python, first)."""
    if extra and name in extra:
        return extra[name]
    eps = _entry_points()
    if name not in eps:
        known = sorted({*eps, *(extra or {})})
        listed = ", ".join(known) or "none"
        raise ToolError(f"unknown tool '{name}'{did_you_mean(name, known)}; installed tools: {listed}")
    return _load(eps[name])


def _option_problem(obj: type[Tool] | Tool, options: Mapping[str, Any]) -> str | None:
    errors = sorted(Draft202012Validator(obj.options_schema).iter_errors(dict(options)), key=lambda e: list(e.path))
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
    options = obj.prepare_options(use.options, base_dir=base_dir, trusted=trusted)
    try:
        made = obj(options) if isinstance(obj, type) else (obj.with_options(options) if options else obj)
    except ToolError:
        raise
    except Exception as exc:
        raise ToolError(f"tool '{use.name}' failed to start: {type(exc).__name__}: {exc}") from exc
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
