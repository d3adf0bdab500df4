"""GBNF grammars for :class:`~promptdsl.backend.Constraint`, for backends that take llama.cpp grammars.

Both the local llama.cpp backend and llama.cpp-family servers (through the
openai backend) constrain decoding with the same grammars, so they live here once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import PromptDSLError


class GrammarError(PromptDSLError, ValueError):
    """A constraint that no llama.cpp grammar can express (say, a choice holding a NUL character): bad
    input, exit 2, wherever it surfaces."""


#: The largest repetition count the grammars write: llama.cpp refuses a lower bound above 2000
#: (``MAX_REPETITION_THRESHOLD``), and a larger one is written as repeated blocks of this size.
MAX_COUNT = 1000


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal. Control characters are escaped (``\\u0001``); a NUL cannot
    be: llama.cpp ends its token strings with code point 0, and matching one aborts the process."""
    if "\0" in text:
        raise GrammarError(f"{json.dumps(text[:60])} holds a NUL character, which decoding cannot be limited to")
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise GrammarError(f"{json.dumps(text[:60])} holds a lone surrogate, which is not valid Unicode")
    return json.dumps(text, ensure_ascii=False)


_ANY_JSON = r"""
pdsl-value ::= pdsl-object | pdsl-array | pdsl-string | pdsl-number | ("true" | "false" | "null") ws
pdsl-object ::= "{" ws ( pdsl-string ":" ws pdsl-value ("," ws pdsl-string ":" ws pdsl-value)* )? "}" ws
pdsl-array ::= "[" ws ( pdsl-value ("," ws pdsl-value)* )? "]" ws
pdsl-string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
pdsl-number ::= pdsl-int ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,4})? ws
pdsl-integer ::= pdsl-int ws
pdsl-int ::= "-"? ([0-9] | [1-9] [0-9]{0,15})
ws ::= | " " | "\n" [ \t]{0,20}
"""


#: Depth past which a schema is treated as "any JSON value" (keeps grammars small and finite).
MAX_DEPTH = 12
_STRING_CHAR = r'( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )'
_PRIMITIVES = {
    "string": "pdsl-string",
    "number": "pdsl-number",
    "integer": "pdsl-integer",
    "boolean": '("true" | "false") ws',
    "null": '"null" ws',
}


class _SchemaGrammar:
    """Compiles a JSON Schema to GBNF rules, one rule per sub-schema.

    Pure Python, so every backend (and every install, with or without llama-cpp-python)
    gets the same grammar. Covers what decoding needs: objects with their properties in
    order (required ones always, optional ones maybe), arrays with item counts, strings
    with lengths, enum/const, anyOf/oneOf, type lists and local ``$ref``s. Anything else
    becomes "any JSON value"; the runner validates the parsed answer against the full schema.
    """

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        #: (id(schema), depth) -> (schema, its rule). A ``$ref`` reached K ways at each level was
        #: expanded K^depth times (16 s for a 150-byte schema); the schema is kept so its id stays its own.
        self._made: dict[tuple[int, int], tuple[Any, str]] = {}

    def rule(self, schema: Any, depth: int = 0) -> str:
        """The name (or inline body) of a rule matching ``schema``."""
        key = (id(schema), depth)
        made = self._made.get(key)
        if made is not None:
            return made[1]
        body = self._rule(schema, depth)
        self._made[key] = (schema, body)
        return body

    def _rule(self, schema: Any, depth: int) -> str:
        if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
            return "pdsl-value"
        if "$ref" in schema:
            return self.rule(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return self._literal(schema["const"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return "(" + " | ".join(self._literal(v) for v in schema["enum"]) + ")"
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return "(" + " | ".join(self.rule(sub, depth + 1) for sub in schema[key]) + ")"
        kind = schema.get("type")
        if isinstance(kind, list) and kind:
            return "(" + " | ".join(self.rule({**schema, "type": k}, depth + 1) for k in kind) + ")"
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return _PRIMITIVES[kind]
        return "pdsl-value"

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref.lstrip("#").strip("/").split("/") if ref not in ("#", "#/") else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                return {}
            node = node[part]
        return node

    def _literal(self, value: Any) -> str:
        return gbnf_literal(json.dumps(value, ensure_ascii=False)) + " ws"

    def _add(self, body: str) -> str:
        for name, existing in self.rules.items():
            if existing == body:
                return name
        name = f"pdsl-r{len(self.rules)}"
        self.rules[name] = body
        return name

    def _object(self, schema: Mapping[str, Any], depth: int) -> str:
        props = schema.get("properties")
        if not isinstance(props, Mapping) or not props:
            return "pdsl-object"
        required = set(schema.get("required") or ())
        items = [
            (
                name in required,
                gbnf_literal(json.dumps(str(name), ensure_ascii=False)) + ' ws ":" ws ' + self.rule(sub, depth + 1),
            )
            for name, sub in props.items()
        ]
        # Fixed order; required members always, optional ones maybe. "after" rules follow a member
        # already written (so they start with a comma); "first" rules have nothing before them.
        after = first = ""
        for is_required, member in reversed(items):
            tail_after = f" {after}" if after else ""
            new_after = self._add(f'"," ws {member}{tail_after}' if is_required else f'("," ws {member})?{tail_after}')
            with_member = f"{member}{tail_after}"
            new_first = self._add(
                with_member if is_required else f"({with_member}" + (f" | {first})" if first else ")?")
            )
            after, first = new_after, new_first
        return self._add(f'"{{" ws {first} "}}" ws')

    def _array(self, schema: Mapping[str, Any], depth: int) -> str:
        item = self.rule(schema.get("items", {}), depth + 1)
        low = _count(schema.get("minItems")) or 0
        high = _count(schema.get("maxItems"))
        if high is not None and high < low:
            high = low
        if high == 0:
            return self._add('"[" ws "]" ws')
        rest_low = max(0, low - 1)
        rest_high = None if high is None else high - 1
        more = '("," ws ' + item + ")"
        body = f"{item} {_counted(more, rest_low, rest_high)}"
        return self._add(f'"[" ws {body if low else f"({body})?"} "]" ws')

    def _string(self, schema: Mapping[str, Any]) -> str:
        low = _count(schema.get("minLength")) or 0
        high = _count(schema.get("maxLength"))
        if low == 0 and high is None:
            return "pdsl-string"
        if high is not None and high < low:
            high = low
        char = _STRING_CHAR
        simple = _SIMPLE_CLASS.fullmatch(str(schema.get("pattern", "")))
        if simple:  # pattern: '^[class]+$' (e.g. the calculator's expression): decode only that class
            char, low = f"[{simple.group(1)}]", max(low, 1)
        return self._add(f'"\\"" {_counted(char, low, high)} "\\"" ws')


#: A ``pattern`` of one character class, ``^[...]+$``, whose characters can stand as they are in
#: both a JSON string and a GBNF class: no ``]``, ``\\``, ``"`` or ``^``, and no control character (a
#: NUL would end llama.cpp's grammar text; the others would need escapes inside the JSON string).
_SIMPLE_CLASS = re.compile(r'\^\[([^\]\\"^\x00-\x1f\x7f]+)\]\+\$')


def _counted(atom: str, low: int, high: int | None) -> str:
    """``atom{low,high}`` (``high`` None: no upper bound) as llama.cpp accepts it: a lower bound above
    :data:`MAX_COUNT` is written as exact blocks, ``x{2500,}`` as ``(x{1000}){2} x{500} x{0,}``."""
    if high is not None and high < low:
        high = low
    top = "" if high is None else str(high)
    if low <= MAX_COUNT:
        return f"{atom}{{{low},{top}}}"
    rest = None if high is None else high - low
    tail = "" if rest == 0 else f" {atom}{{0,{'' if rest is None else rest}}}"
    return _exactly(atom, low) + tail


def _exactly(atom: str, n: int) -> str:
    """``atom{n}`` with no count above :data:`MAX_COUNT` (blocks of blocks for very large ``n``)."""
    if n <= MAX_COUNT:
        return f"{atom}{{{n}}}"
    blocks, rest = divmod(n, MAX_COUNT)
    out = _exactly(f"({atom}{{{MAX_COUNT}}})", blocks)
    return f"{out} {atom}{{{rest}}}" if rest else out


def _count(value: Any) -> int | None:
    """A non-negative integer bound from a schema, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def schema_gbnf(schema: Mapping[str, Any]) -> str:
    """GBNF for ``schema`` with its start rule named ``pdsl-json`` (plus the shared JSON rules)."""
    compiler = _SchemaGrammar(schema)
    start = compiler.rule(schema)
    lines = [f"pdsl-json ::= {start}"]
    lines += [f"{name} ::= {body}" for name, body in compiler.rules.items()]
    return "\n".join(lines) + "\n" + _ANY_JSON


def grammar_for(choices: Sequence[str] | None, schema: Mapping[str, Any] | None, prefix: str) -> str:
    """A GBNF grammar for exactly one of ``choices``, or JSON valid against ``schema``.

    ``prefix`` (the prompt's continuation prefix, e.g. the few-shot target
    delimiter) is optional before the answer, as the model may or may not emit it.
    """
    opt = f"{gbnf_literal(prefix)}? " if prefix else ""
    if choices is not None:
        bare = [c[len(prefix) :] if prefix and c.startswith(prefix) else c for c in choices]
        return f"root ::= {opt}({' | '.join(gbnf_literal(c) for c in bare)})\n"
    return f"root ::= {opt}pdsl-json\n" + schema_gbnf(schema or {})


def exact_grammar(text: str) -> str:
    """A grammar that admits exactly ``text`` (forced decoding, used for scoring)."""
    return f"root ::= {gbnf_literal(text)}\n"
