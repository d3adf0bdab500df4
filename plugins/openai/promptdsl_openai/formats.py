"""Request shapes for constrained output: ``response_format`` bodies and llama.cpp grammars.

OpenAI takes ``{"type": "json_schema", ...}``; some compatible servers (the
llama-cpp-python server among them) only take ``{"type": "json_object",
"schema": ...}``, so both forms are built here. Servers that speak the llama.cpp
``grammar`` extension get a GBNF grammar instead, which also works for
completion-mode prompts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

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


# ------------------------------------------------------------------ llama.cpp grammars (GBNF)


def gbnf_literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


_ANY_JSON = r"""
pdsl-value ::= pdsl-object | pdsl-array | pdsl-string | pdsl-number | ("true" | "false" | "null") ws
pdsl-object ::= "{" ws ( pdsl-string ":" ws pdsl-value ("," ws pdsl-string ":" ws pdsl-value)* )? "}" ws
pdsl-array ::= "[" ws ( pdsl-value ("," ws pdsl-value)* )? "]" ws
pdsl-string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
pdsl-number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,4})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"""


def _schema_gbnf(schema: Mapping[str, Any]) -> str:
    """GBNF for ``schema`` with its start rule named ``pdsl-json``.

    Uses llama-cpp-python's converter when it is installed locally; otherwise a
    grammar for any JSON value (the runner still validates against the schema).
    """
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError:
        return "pdsl-json ::= pdsl-value\n" + _ANY_JSON
    gbnf = str(json_schema_to_gbnf(json.dumps(dict(schema))))
    # Its string rule admits raw control characters, which JSON forbids (json.loads rejects them).
    gbnf = gbnf.replace('[^"\\\\]', '[^"\\\\\\x7F\\x00-\\x1F]')
    return re.sub(r"^root ::=", "pdsl-json ::=", gbnf, count=1, flags=re.MULTILINE)


def grammar_for(choices: Sequence[str] | None, schema: Mapping[str, Any] | None, prefix: str) -> str:
    """A GBNF grammar for exactly one of ``choices``, or JSON valid against ``schema``.

    ``prefix`` (the prompt's continuation prefix, e.g. the few-shot target
    delimiter) is optional before the answer, as the model may or may not emit it.
    """
    opt = f"{gbnf_literal(prefix)}? " if prefix else ""
    if choices is not None:
        bare = [c[len(prefix):] if prefix and c.startswith(prefix) else c for c in choices]
        return f"root ::= {opt}({' | '.join(gbnf_literal(c) for c in bare)})\n"
    return f"root ::= {opt}pdsl-json\n" + _schema_gbnf(schema or {})


def exact_grammar(text: str) -> str:
    """A grammar that admits exactly ``text`` (forced decoding, used for scoring)."""
    return f"root ::= {gbnf_literal(text)}\n"
