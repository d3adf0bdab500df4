"""GBNF grammars for :class:`~promptdsl.backend.Constraint`, for backends that take llama.cpp grammars.

Both the local llama.cpp backend and llama.cpp-family servers (through the
openai backend) constrain decoding with the same grammars, so they live here once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any


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
