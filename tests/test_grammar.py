"""The JSON Schema -> GBNF compiler in promptdsl.grammar: pure Python, same grammar everywhere."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from promptdsl import grammar
from promptdsl.grammar import exact_grammar, grammar_for, schema_gbnf

SCHEMAS = [
    {"type": "object", "required": ["name", "age"],
     "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
                    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}}},
    {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": ["string", "null"]}}},
    {"$defs": {"x": {"type": "boolean"}}, "type": "array", "items": {"$ref": "#/$defs/x"}, "minItems": 2,
     "maxItems": 2},
    {},
    {"anyOf": [{"const": 1}, {"type": "string", "minLength": 3}]},
    {"type": "array", "maxItems": 0},
    {"$ref": "#/nowhere"},
]


def test_the_core_grammar_never_imports_llama_cpp() -> None:
    code = ("import sys, promptdsl.grammar as g; g.grammar_for(None, {'type': 'object', 'properties': "
            "{'a': {'type': 'string'}}}, ''); print('llama_cpp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_members_keep_their_order_required_always_optional_maybe() -> None:
    g = schema_gbnf(SCHEMAS[0])
    assert '"\\"name\\"" ws ":" ws' in g and '("," ws "\\"tags\\"" ws ":" ws' in g
    assert "{0,20}" in g  # maxLength bounds the string
    assert '("," ws ("\\"a\\"" ws | "\\"b\\"" ws)){0,2}' in g  # at most 3 items


def test_bounded_and_unsupported_parts() -> None:
    assert "{1,1}" in schema_gbnf(SCHEMAS[2])  # exactly two items: one, then one more
    assert schema_gbnf({}).startswith("pdsl-json ::= pdsl-value")
    assert schema_gbnf({"$ref": "#/nowhere"}).startswith("pdsl-json ::= pdsl-value")
    deep: dict[str, object] = {"type": "string"}
    for _ in range(50):
        deep = {"type": "array", "items": deep}
    assert "pdsl-value" in schema_gbnf(deep)  # depth-capped, still finite


@pytest.mark.parametrize("schema", SCHEMAS)
def test_llama_cpp_parses_every_grammar(schema: dict[str, object]) -> None:
    grammar = pytest.importorskip("llama_cpp.llama_grammar", reason="llama-cpp-python not installed")
    for text in (grammar_for(None, schema, " "), grammar_for(["Yes", "No"], None, " "), exact_grammar("a\"b")):
        parsed = grammar.LlamaGrammar.from_string(text, verbose=False)
        assert parsed is not None


def test_a_ref_reached_many_ways_at_each_level_is_made_once_per_level() -> None:
    """`D = {properties: {p0..p10: {$ref: D}}}` was expanded 11^depth times: 16 s for a 150-byte schema."""
    schema = {"$defs": {"D": {"type": "object", "properties": {f"p{i}": {"$ref": "#/$defs/D"} for i in range(40)}}},
              "$ref": "#/$defs/D"}
    calls = 0
    original = grammar._SchemaGrammar._rule

    def counted(self: Any, sub: Any, depth: int) -> str:
        nonlocal calls
        calls += 1
        return original(self, sub, depth)

    grammar._SchemaGrammar._rule = counted  # type: ignore[method-assign]
    try:
        text = grammar_for(None, schema, "")
    finally:
        grammar._SchemaGrammar._rule = original  # type: ignore[method-assign]
    assert "pdsl-r" in text and calls < 1000  # was 40^6
