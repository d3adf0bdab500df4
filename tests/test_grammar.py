"""The JSON Schema -> GBNF compiler in promptdsl.grammar: pure Python, same grammar everywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
