"""The prompted path's finite choices: numbers copied from the conversation, calls listed and scored, worked examples."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from promptdsl import Backend, Capability, Constraint, GenerationOptions, Prompt, Runner, loads_spec
from promptdsl.errors import SpecError
from promptdsl.tools import ToolUse
from promptdsl.tools.builtins import Calculator
from promptdsl.tools.candidates import enumerate_arguments, numbers_in, restrict
from promptdsl.tools.loop import ToolSettings
from promptdsl.tools.registry import open_tool


def test_numbers_in_reads_integers_decimals_and_thousands() -> None:
    assert numbers_in(["Ana had 1,200 coins and 3.5 kg, room B12, 7 days; 7 again", "result 42"]) == [1200, 3.5, 7, 42]


def test_restrict_limits_marked_numbers_to_those_in_the_conversation() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "x-from-input": True}, "x": {"type": "number"}}}
    out = restrict(schema, [12, 2.5, 40])
    assert out["properties"]["n"]["enum"] == [12, 40]  # an integer cannot be 2.5
    assert "enum" not in out["properties"]["x"]  # not marked: left open
    assert restrict(schema, []) == schema  # nothing to copy: unchanged (the grammar decides)


def test_x_parts_lists_strings_made_of_parts() -> None:
    schema = {"type": "string", "maxLength": 20, "x-parts": [{"enum": ["go", "stop"]}, {"type": "integer", "x-from-input": True}]}
    assert enumerate_arguments(restrict(schema, [3, 12])) == ["go 3", "go 12", "stop 3", "stop 12"]
    assert enumerate_arguments(schema) is None  # an open integer part


def operands() -> dict[str, Any]:
    return open_tool(ToolUse("calculator", {"form": "operands", "copy_numbers": True})).parameters


def test_the_calculator_operands_form_lists_every_call() -> None:
    calls = enumerate_arguments(restrict(operands(), [36, 12]))
    assert calls is not None and len(calls) == 2 * 4 * 2
    assert {"expression": "36 - 12"} in calls and {"expression": "12 / 36"} in calls
    assert Calculator({"form": "operands"}).call({"expression": "96 / 12"}) == "8"


def test_open_or_large_schemas_are_not_listed() -> None:
    assert enumerate_arguments(operands()) is None  # numbers not restricted yet
    assert enumerate_arguments(Calculator.parameters) is None  # a free string
    many = {"type": "object", "properties": {"x": {"enum": list(range(20))}, "y": {"enum": list(range(20))}},
            "required": ["x", "y"]}
    assert enumerate_arguments(many) is None  # 400 > the bound
    optional = {"type": "object", "properties": {"b": {"type": "boolean"}}}
    assert enumerate_arguments(optional) is None
    assert enumerate_arguments({"type": "object", "properties": {}, "required": []}) == [{}]


def test_copy_numbers_needs_the_operands_form() -> None:
    from promptdsl.tools import ToolError

    with pytest.raises(ToolError, match="copy_numbers needs form: operands"):
        open_tool(ToolUse("calculator", {"copy_numbers": True}))


class Ranker(Backend):
    """Scores the calls holding ``prefer`` highest; records what it was asked."""

    name = "ranker"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.SCORE, Capability.GRAMMAR}
    )

    def __init__(self, prefer: str) -> None:
        super().__init__("ranker", {})
        self.prefer = prefer
        self.asked: list[tuple[Prompt, list[str]]] = []

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        self.asked.append((prompt, list(continuations)))
        return [0.0 if self.prefer in c else -1.0 for c in continuations]  # log-probabilities: at most 0

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        yield "0"


AGENT = """\
version: 1
name: agent
inputs: {q: {type: string, maxLength: 200}}
tools:
  - name: calculator
    options: {form: operands, copy_numbers: true}
    direct: true
    shots: 2
    examples:
      - {input: {q: "A jar has 5 sweets and 3 more are added."}, arguments: {expression: "5 + 3"}}
      - {input: {q: "Each bag holds 4 nuts; how many in 6 bags?"}, arguments: {expression: "4 * 6"}}
      - {input: {q: "A bus had 9 people and 2 got off; how many are left?"}, arguments: {expression: "9 - 2"}}
tool_choice: calculator
output: {type: json, schema: {type: number}}
"""


def test_the_prompted_path_picks_the_best_scored_call_after_the_most_similar_examples() -> None:
    backend = Ranker('"125 - 47"')
    result = Runner(loads_spec(AGENT), backend).run({"q": "A shop had 125 apples and sold 47; how many are left?"})
    assert result.value == 78 and result.steps[0]["arguments"] == {"expression": "125 - 47"}
    prompt, calls = backend.asked[0]
    # 16 listed; the 8 that copy a number twice ("125 + 125") are dropped: each is written once
    assert len(calls) == 8 and all(json.loads(c)["tool"] == "calculator" for c in calls)
    turns = [m.content for m in prompt.messages[1:]]
    # two of the three examples (shots: 2), the most similar to the question ("how many are left") last
    assert len(turns) == 5 and turns[-1].startswith("A shop had 125")
    assert turns[2].startswith("A bus had 9") and json.loads(turns[3])["arguments"] == {"expression": "9 - 2"}


def test_tool_examples_are_checked_when_the_spec_loads() -> None:
    bad = AGENT.replace('"9 - 2"', '"9 ^ 2"')
    with pytest.raises(SpecError, match="tool example arguments do not fit 'calculator'"):
        loads_spec(bad)
    with pytest.raises(SpecError, match="bad tool example input"):
        loads_spec(AGENT.replace("{q: \"A jar", "{r: \"A jar"))


def test_completion_mode_shows_the_examples_as_text_before_the_prompt() -> None:
    backend = Ranker('"125 - 47"')
    spec = loads_spec(AGENT.replace("tool_choice:", "mode: completion\ntool_choice:"))
    Runner(spec, backend).run({"q": "A shop had 125 apples and sold 47; how many are left?"})
    prompt, calls = backend.asked[0]
    assert prompt.mode == "completion" and all(c.startswith(prompt.continuation_prefix) for c in calls)
    assert prompt.text.count("Tool call: ") == 2 and prompt.text.rstrip().endswith("how many are left?")


def test_calls_whose_result_cannot_be_the_answer_are_not_scored() -> None:
    """A direct, read-only, auto-approved tool is tried on each listed call: only results that fit the output count."""
    counts = AGENT.replace("schema: {type: number}", "schema: {type: integer, minimum: 0}")
    backend = Ranker('"47 - 125"')  # the model's favourite would give -78: not a count
    result = Runner(loads_spec(counts), backend).run({"q": "A shop had 125 apples and sold 47; how many are left?"})
    _, calls = backend.asked[0]
    expressions = [json.loads(c)["arguments"]["expression"] for c in calls]
    # 8 listed that copy each number once; 47 - 125 (negative), 47 / 125 and 125 / 47 (not whole) are dropped
    assert sorted(expressions) == sorted(["125 + 47", "47 + 125", "125 - 47", "125 * 47", "47 * 125"])
    assert result.value in (172, 78, 5875)
    # with a plain number output nothing is dropped, and the favourite wins
    backend = Ranker('"47 - 125"')
    result = Runner(loads_spec(AGENT), backend).run({"q": "A shop had 125 apples and sold 47; how many are left?"})
    assert len(backend.asked[0][1]) == 8 and result.value == -78


def test_tools_that_ask_first_are_never_run_to_filter_calls() -> None:
    asks = AGENT.replace("direct: true", "direct: true\n    approval: ask").replace(
        "schema: {type: number}", "schema: {type: integer, minimum: 0}")
    backend = Ranker('"125 - 47"')
    Runner(loads_spec(asks), backend, tool_settings=ToolSettings(approver=lambda tool, call: True)).run(
        {"q": "A shop had 125 apples and sold 47; how many are left?"})
    assert len(backend.asked[0][1]) == 8  # nothing was run before the model chose, so nothing more was dropped


def test_a_number_is_copied_as_often_as_it_is_written() -> None:
    from promptdsl.tools.candidates import copies_within, number_counts

    once = number_counts(["Max packs 270 eggs into cartons of 27."])
    assert not copies_within({"expression": "27 * 27"}, once)
    assert copies_within({"expression": "270 / 27"}, once)
    twice = number_counts(["There are 12 boxes with 12 pens in each box."])
    assert copies_within({"expression": "12 * 12"}, twice)
    assert copies_within({"expression": "270 / 3", "digits": 3}, once)  # 3 is not from the text: not counted
