"""The compiler: exact layout of both modes, few-shot selection, determinism, sandboxing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptdsl import SpecError, compile_prompt, loads_spec
from promptdsl.compiler import Compiler, render_output, select_examples
from promptdsl.prompt import Message

SENTIMENT = Path(__file__).resolve().parent.parent / "specs" / "sentiment.yaml"

BASE = """\
version: 1
name: t
mode: {mode}
{system}instruction: Classify into {{{{ output.choices | join(', ') }}}}.
inputs:
  text: {{type: string}}
template: "Text: {{{{ text }}}}\\nLabel:"
examples:
  - {{input: {{text: one}}, output: A}}
  - {{input: {{text: two}}, output: B}}
  - {{input: {{text: three}}, output: A}}
  - {{input: {{text: four}}, output: C}}
{fewshot}
output: {{type: choice, choices: [A, B, C]}}
"""


def spec_text(mode: str = "completion", fewshot: str = "", system: str = "") -> str:
    return BASE.format(mode=mode, fewshot=fewshot, system=system)


def test_completion_layout_is_exact() -> None:
    spec = loads_spec(spec_text(fewshot="fewshot: {k: 2}"))
    prompt = compile_prompt(spec, {"text": "five"})
    assert prompt.mode == "completion"
    assert prompt.text == (
        "Classify into A, B, C.\n\n"
        "Text: one\nLabel: A\n\n"
        "Text: two\nLabel: B\n\n"
        "Text: five\nLabel:"
    )
    assert prompt.continuation_prefix == " "


def test_completion_delimiter_and_separator_are_settable() -> None:
    spec = loads_spec(spec_text(fewshot="fewshot: {k: 1, target_delimiter: '', separator: \"\\n###\\n\"}"))
    prompt = compile_prompt(spec, {"text": "x"})
    assert prompt.text == "Classify into A, B, C.\n\nText: one\nLabel:A\n###\nText: x\nLabel:"
    assert prompt.continuation_prefix == ""


def test_zero_shot_completion() -> None:
    spec = loads_spec(spec_text(fewshot="fewshot: {k: 0}"))
    assert compile_prompt(spec, {"text": "x"}).text == "Classify into A, B, C.\n\nText: x\nLabel:"


def test_chat_layout() -> None:
    spec = loads_spec(spec_text(mode="chat", fewshot="fewshot: {k: 1}", system="system: Be careful.\n"))
    prompt = compile_prompt(spec, {"text": "x"})
    assert prompt.messages == (
        Message("system", "Be careful.\n\nClassify into A, B, C."),
        Message("user", "Text: one\nLabel:"),
        Message("assistant", "A"),
        Message("user", "Text: x\nLabel:"),
    )
    assert json.loads(prompt.to_json())[0] == {"role": "system", "content": "Be careful.\n\nClassify into A, B, C."}


def test_select_random_is_seeded_and_balanced_round_robins() -> None:
    a = select_examples(loads_spec(spec_text(fewshot="fewshot: {k: 3, select: random, seed: 1}")))
    b = select_examples(loads_spec(spec_text(fewshot="fewshot: {k: 3, select: random, seed: 1}")))
    assert a == b and len(a) == 3
    seeds = {tuple(e.input["text"] for e in select_examples(
        loads_spec(spec_text(fewshot=f"fewshot: {{k: 3, select: random, seed: {s}}}")))) for s in range(6)}
    assert len(seeds) > 1  # the seed really changes the choice
    balanced = select_examples(loads_spec(spec_text(fewshot="fewshot: {k: 3, select: balanced}")))
    assert sorted(e.output for e in balanced) == ["A", "B", "C"]


def test_compiled_prompt_is_byte_for_byte_deterministic() -> None:
    text = spec_text(fewshot="fewshot: {k: 3, select: random, seed: 7}")
    outs = {compile_prompt(loads_spec(text), {"text": "é ü 漢字"}).to_json() for _ in range(5)}
    assert len(outs) == 1


def test_default_template_and_defaults_filled() -> None:
    spec = loads_spec(
        "version: 1\nname: t\ninputs:\n  q: {type: string}\n  lang: {type: string, default: en}\n"
        "instruction: 'Answer in {{ lang }}.'\n"
    )
    prompt = compile_prompt(spec, {"q": "hi"})
    assert prompt.messages == (Message("system", "Answer in en."), Message("user", "q: hi\nlang: en"))
    single = loads_spec("version: 1\nname: t\ninputs: {q: {type: string}}\n")
    assert compile_prompt(single, {"q": "hi"}).messages == (Message("user", "hi"),)


def test_json_examples_render_as_compact_json() -> None:
    spec = loads_spec(
        "version: 1\nname: t\nmode: completion\ninputs: {t: {type: string}}\ntemplate: '{{ t }} ->'\n"
        "examples:\n  - {input: {t: a}, output: {x: 1, y: [1, 2]}}\n"
        "output: {type: json, schema: {type: object}}\n"
    )
    assert compile_prompt(spec, {"t": "b"}).text == 'a -> {"x":1,"y":[1,2]}\n\nb ->'


def test_a_non_string_answer_for_a_text_spec_is_written_as_json_not_repr() -> None:
    """Labels read from a data file can be numbers or objects: the model sees JSON, never ``{'a': 1}``."""
    spec = loads_spec(spec_text())
    assert render_output(spec, {"a": 1, "b": "é"}) == '{"a":1,"b":"é"}'
    assert render_output(spec, True) == "true" and render_output(spec, 3) == "3"
    assert render_output(spec, "A") == "A"


def test_sandbox_refuses_python_internals_at_render_time() -> None:
    # Reached through a filter result, so the load-time check cannot see the attribute name.
    spec = loads_spec("version: 1\nname: t\ninputs: {t: {type: string}}\ntemplate: '{{ t | attr(\"__class__\") }}'\n",
                      file="evil.yaml")
    with pytest.raises(SpecError) as info:
        compile_prompt(spec, {"t": "x"})
    assert "unsafe" in str(info.value) and "evil.yaml:4:1" in str(info.value)


def test_seed_sentiment_spec_compiles_to_the_seed_prompt() -> None:
    from promptdsl import load_spec

    spec = load_spec(SENTIMENT)
    text = Compiler(spec).compile({"text": "I love this city!"}).text
    assert text.startswith("Classify the sentiment of the following text into Positive, Negative, or Neutral.\n\n")
    assert "Text: I absolutely love this movie! The acting was superb and the plot kept me engaged from start to " \
           "finish.\nSentiment: Positive\n\n" in text
    assert text.endswith("Text: I love this city!\nSentiment:")
    assert text.count("Sentiment:") == 4
