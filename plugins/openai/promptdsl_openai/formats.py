"""Request shapes for constrained output: ``response_format`` bodies and llama.cpp grammars.

OpenAI takes ``{"type": "json_schema", ...}``; some compatible servers (the
llama-cpp-python server among them) only take ``{"type": "json_object",
"schema": ...}``, so both forms are built here. Servers that speak the llama.cpp
``grammar`` extension get a GBNF grammar instead, which also works for
completion-mode prompts (built by :mod:`promptdsl.grammar`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from promptdsl.grammar import exact_grammar, gbnf_literal, grammar_for

__all__ = [
    "choice_schema",
    "exact_grammar",
    "function_tools",
    "gbnf_literal",
    "grammar_for",
    "is_strict_compatible",
    "json_object_format",
    "json_schema_format",
    "rejects_json_schema",
    "tool_arguments",
    "tool_choice_param",
    "tool_messages",
]

#: Field that wraps a choice when a server can only constrain to JSON objects.
ANSWER_KEY = "answer"


def choice_schema(choices: Sequence[str]) -> dict[str, Any]:
    """An object schema whose one field is an enum of the choices (OpenAI needs an object at the root)."""
    return {
        "type": "object",
        "properties": {ANSWER_KEY: {"type": "string", "enum": list(choices)}},
        "required": [ANSWER_KEY],
        "additionalProperties": False,
    }


def is_strict_compatible(schema: Any) -> bool:
    """True if OpenAI's strict structured-output mode accepts ``schema`` as it is.

    Strict mode wants every object closed (``additionalProperties: false``) with
    all of its properties required; anything else is sent non-strict.
    """
    if isinstance(schema, list):
        return all(is_strict_compatible(s) for s in schema)
    if not isinstance(schema, Mapping):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False or set(schema.get("required", ())) != set(props):
            return False
    return all(is_strict_compatible(v) for k, v in schema.items() if k not in {"enum", "const", "default"})


def json_schema_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's structured-output ``response_format``."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": dict(schema), "strict": is_strict_compatible(schema)},
    }


def json_object_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The older JSON-mode ``response_format`` with a schema, as llama.cpp-style servers accept it."""
    return {"type": "json_object", "schema": dict(schema)}


def rejects_json_schema(message: str) -> bool:
    """Does an error message say the server does not know the ``json_schema`` response format?"""
    return bool(re.search(r"response_format|json_schema", message))


# ---------------------------------------------------------------------------- native tool calls


def function_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``tools`` request field: each tool as a function with its argument schema."""
    return [
        {"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                          "parameters": dict(t["parameters"])}}
        for t in tools
    ]


def tool_choice_param(choice: str) -> Any:
    """``auto`` / ``required`` / ``none`` as they are; a tool's name as a named function."""
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def tool_messages(steps: Sequence[Any]) -> list[dict[str, Any]]:
    """Each step as an assistant message with its call and a ``tool`` message with its result (or error)."""
    out: list[dict[str, Any]] = []
    for s in steps:
        arguments = s.arguments if isinstance(s.arguments, str) else json.dumps(s.arguments, ensure_ascii=False)
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": s.id, "type": "function", "function": {"name": s.tool, "arguments": arguments}}]})
        out.append({"role": "tool", "tool_call_id": s.id, "content": s.feedback()})
    return out


def tool_arguments(value: Any) -> Any:
    """A call's arguments: the JSON object the model wrote, else what it sent (the loop reports that).

    Servers send a JSON text; some send the object itself. Missing arguments are ``{}``.
    """
    if value is None:
        return {}
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value or "{}")
    except (ValueError, TypeError, RecursionError):  # also integers past Python's digit limit, deep nesting
        return value
