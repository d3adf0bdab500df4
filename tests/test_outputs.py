"""Output parsing, table-driven: each raw text gives a value or the expected failure."""

from __future__ import annotations

from typing import Any

import pytest

from promptdsl.outputs import ParseFailure, parse_output
from promptdsl.spec import OutputSpec, OutputType

CHOICE = OutputSpec(OutputType.CHOICE, choices=("Positive", "Negative", "Neutral"))
JSON = OutputSpec(
    OutputType.JSON,
    schema={"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}},
)
REGEX_NAMED = OutputSpec(OutputType.REGEX, pattern=r"answer is (?P<answer>\d+)")
REGEX_GROUP = OutputSpec(OutputType.REGEX, pattern=r"(\d+) apples")
REGEX_WHOLE = OutputSpec(OutputType.REGEX, pattern=r"\d+")
TEXT = OutputSpec(OutputType.TEXT)
DATED = OutputSpec(OutputType.JSON, schema={"type": "object", "properties": {"on": {"type": "string", "format": "date"}}})

GOOD: list[tuple[OutputSpec, str, Any]] = [
    (TEXT, "  hello world \n", "hello world"),
    (OutputSpec(OutputType.TEXT, strip=False), " hi ", " hi "),
    (CHOICE, " Positive", "Positive"),
    (CHOICE, "negative.", "Negative"),
    (CHOICE, "I think it is Neutral, not Positive", "Neutral"),
    (CHOICE, "Sentiment: POSITIVE!", "Positive"),
    (JSON, '{"age": 3}', {"age": 3}),
    (JSON, 'Sure! ```json\n{"age": 4}\n``` done', {"age": 4}),
    (JSON, 'The answer: {"age": 5} and more text', {"age": 5}),
    (REGEX_NAMED, "so the answer is 42.", "42"),
    (REGEX_GROUP, "I have 7 apples", "7"),
    (REGEX_WHOLE, "about 12 of them", "12"),
    # Prose brackets before the answer: the first value that fits the schema is the answer.
    (JSON, 'Per source [1], the answer: {"age": 6}', {"age": 6}),
    (JSON, 'See [note 2] and {"age": 7}', {"age": 7}),
    (JSON, "".join(f"[doc{i}](http://x/{i}) " for i in range(150)) + '{"age": 8}', {"age": 8}),  # many links
    (JSON, "if arr[i] < arr[j] " * 60 + 'then {"age": 9}', {"age": 9}),
    (JSON, 'I would say {"age": "a} hmm, actually {"age": 10}', {"age": 10}),  # after an unclosed quote
    (DATED, '{"on": "2026-12-01"}', {"on": "2026-12-01"}),
]
LOOSE = OutputSpec(OutputType.JSON, schema={"type": "object"})
EITHER = OutputSpec(OutputType.REGEX, pattern=r"(?P<answer>yes)|no")

BAD: list[tuple[OutputSpec, str, str]] = [
    (TEXT, " \n ", "the answer is empty (the model wrote nothing but white space before it stopped, or a stop "
     "string came first)"),
    (OutputSpec(OutputType.TEXT, strip=False), "\n", "the answer is empty"),  # kept as is, but still nothing
    (CHOICE, "I cannot tell", "names none of the choices"),
    (CHOICE, "Positively not", "names none of the choices"),  # whole words only
    (JSON, "no json here", "holds no valid JSON"),
    (JSON, '{"age": "three"}', "does not fit the output schema: 'three' is not of type 'integer' at ['age']"),
    (JSON, '{"name": "x"}', "'age' is a required property"),
    (REGEX_NAMED, "no digits", "does not match the pattern"),
    # A malformed object: its nested object is not the answer.
    (LOOSE, '{"person": {"name": "Ada"}, "age": }', "holds no valid JSON"),
    # Replies Python's json cannot hold: a failed parse, never a RecursionError or ValueError.
    (LOOSE, "[" * 100_000 + "]" * 100_000, "holds no valid JSON"),
    (LOOSE, "answer: " + "[" * 5000, "holds no valid JSON"),
    (LOOSE, 'x {"a": ' + "1" * 5000 + "}", "holds no valid JSON"),
    (EITHER, "no", "the answer group took no part"),  # never the text "None"
    (DATED, '{"on": "next Tuesday"}', "'next Tuesday' is not a 'date' at ['on']"),  # format is checked, as for inputs
]

ANY = OutputSpec(OutputType.JSON, schema={})
LONE = "the answer holds a lone surrogate (such as \\ud800), which is not valid Unicode"

#: JSON Python reads but a results file cannot carry (strict JSON, UTF-8), refused as inputs are.
BAD += [
    (ANY, '"\\ud800"', LONE),  # valid JSON text, but not Unicode
    (ANY, '{"a": ["x\\udfff"]}', LONE),
    (ANY, '{"\\ud800": 1}', LONE),  # in a key too
    (ANY, 'Sure: ```json\n"\\ud800"\n```', LONE),
    (ANY, "NaN", "the answer is not valid JSON: NaN is not a JSON number"),
    (ANY, "Infinity", "Infinity is not a JSON number"),
    (ANY, "-Infinity", "-Infinity is not a JSON number"),
    (ANY, '{"x": NaN}', "NaN is not a JSON number"),
    (ANY, "1e400", "1e400 is not a finite number"),
    (ANY, '{"a": 1, "a": 2}', "the answer is not valid JSON: duplicate key 'a'"),
    (ANY, 'The answer: {"a": 1, "a": 2} ok', "duplicate key 'a'"),  # in prose too
    # A lone surrogate in the text itself (a backend's Python string can hold one), whatever the type.
    (TEXT, "hi \ud800", LONE),
    (CHOICE, "Positive \udc00", LONE),
    (REGEX_WHOLE, "12 \ud800", LONE),
    (ANY, '{"a": "\ud800"}', LONE),
]

#: The first value that is standard JSON and fits is still the answer.
GOOD += [
    (ANY, 'x {"a": NaN} y {"b": 1}', {"b": 1}),
    (ANY, 'x {"a": 1, "a": 2} y {"b": 2}', {"b": 2}),
    (ANY, '"\\ud83d\\ude00"', "\U0001f600"),  # an escaped surrogate pair is one character, not two lone ones
]


@pytest.mark.parametrize(("out", "raw", "value"), GOOD)
def test_parses(out: OutputSpec, raw: str, value: Any) -> None:
    assert parse_output(out, raw) == value


@pytest.mark.parametrize(("out", "raw", "message"), BAD)
def test_refuses(out: OutputSpec, raw: str, message: str) -> None:
    with pytest.raises(ParseFailure, match=None) as info:
        parse_output(out, raw)
    assert message in str(info.value)
