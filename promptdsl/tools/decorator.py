"""``@tool``: a typed Python function becomes a tool; its JSON Schema comes from the hints and docstring.

    @tool
    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: the first addend
            b: the second addend
        '''
        return a + b

    Runner(spec, tools=[add])

Strings get ``maxLength`` (default 200; ``Annotated[str, MaxLen(n)]`` sets
another) so that decoding their values under a grammar cannot run away.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, overload

from .base import Tool, ToolError, result_text

DEFAULT_MAX_LENGTH = 200
MAX_ITEMS = 32


@dataclass(frozen=True)
class MaxLen:
    """``Annotated[str, MaxLen(n)]``: the string's bound in the argument schema."""

    n: int


def _schema_for(hint: Any, where: str) -> dict[str, Any]:
    """JSON Schema of one parameter's type hint (a table of the types a model can fill)."""
    origin = get_origin(hint)
    if origin is typing.Annotated:
        base, *meta = get_args(hint)
        schema = _schema_for(base, where)
        for m in meta:
            if isinstance(m, MaxLen) and schema.get("type") == "string":
                schema["maxLength"] = m.n
        return schema
    if origin is Literal:
        values = list(get_args(hint))
        return {"enum": values}
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(hint) if a is not type(None)]
        if len(parts) == 1:
            return _schema_for(parts[0], where)
        return {"anyOf": [_schema_for(p, where) for p in parts]}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        args = get_args(hint)
        item = _schema_for(args[0], where) if args else {"type": "string", "maxLength": DEFAULT_MAX_LENGTH}
        return {"type": "array", "items": item, "maxItems": MAX_ITEMS}
    simple = _SIMPLE.get(hint)
    if simple is None:
        raise ToolError(f"tool parameter {where}: type {hint!r} has no JSON Schema (use str, int, float, bool, "
                        "Literal, list or Optional of those)")
    return dict(simple)


_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string", "maxLength": DEFAULT_MAX_LENGTH},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
}

_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    description: list[str] = []
    params: dict[str, str] = {}
    in_args = False
    for line in lines:
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            m = _ARG_LINE.match(line)
            if m:
                params[m.group(1)] = m.group(2).strip()
            elif line.strip() and not line.startswith((" ", "\t")):
                in_args = False
        elif not params:
            description.append(line)
    return " ".join(" ".join(description).split()), params


class FunctionTool(Tool):
    """A tool backed by a typed Python function (built by :func:`tool`)."""

    def __init__(self, func: Callable[..., Any], *, name: str | None = None, read_only: bool = False,
                 cheap: bool = False) -> None:
        super().__init__()
        self.func = func
        self.name = name or func.__name__
        self.read_only = read_only
        self.cheap = cheap
        description, param_docs = _doc_parts(func.__doc__ or "")
        self.description = description or self.name
        hints = get_type_hints(func, include_extras=True)
        props: dict[str, Any] = {}
        required: list[str] = []
        for pname, param in inspect.signature(func).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolError(f"tool '{self.name}': *args/**kwargs cannot be described to a model")
            if pname not in hints:
                raise ToolError(f"tool '{self.name}': parameter '{pname}' needs a type hint")
            schema = _schema_for(hints[pname], f"'{self.name}.{pname}'")
            if pname in param_docs:
                schema["description"] = param_docs[pname]
            if param.default is inspect.Parameter.empty:
                required.append(pname)
            else:
                schema["default"] = param.default
            props[pname] = schema
        self.parameters = {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The function itself: decorating it does not take it away from your own code."""
        return self.func(*args, **kwargs)

    def call(self, arguments: dict[str, Any]) -> str:
        return result_text(self.name, self.func(**arguments))


@overload
def tool(func: Callable[..., Any], *, name: str | None = None, read_only: bool = False,
         cheap: bool = False) -> FunctionTool: ...


@overload
def tool(
    func: None = None, *, name: str | None = None, read_only: bool = False, cheap: bool = False
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    func: Callable[..., Any] | None = None, *, name: str | None = None, read_only: bool = False, cheap: bool = False
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Decorator: turn a typed function into a :class:`Tool` (``@tool`` or
    ``@tool(name=..., read_only=True, cheap=True)``; ``cheap``: free, local and without side effects,
    so the prompted path may run it on calls the model only listed, see docs/tools.md)."""
    if func is not None:
        return FunctionTool(func, name=name, read_only=read_only, cheap=cheap)

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, read_only=read_only, cheap=cheap)

    return wrap
