"""The calculator agent end to end on the real embedded model (prompted path: grammar-filled arguments)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from promptdsl import Runner, load_spec

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_agent import correct, problems  # noqa: E402

SAMPLE = 8


@pytest.fixture(scope="module")
def agent(llamacpp_backend: Any) -> Runner:
    return Runner(load_spec(ROOT / "specs" / "calculator-agent.yaml"), llamacpp_backend)


def test_calculator_agent_solves_word_problems(agent: Runner) -> None:
    assert agent.tool_loop is not None and agent.tool_loop.path == "prompted"
    rows = problems(SAMPLE, seed=1)
    hits = 0
    for row in rows:
        result = agent.run({"question": row["question"]})
        first = result.steps[0]
        assert first["tool"] == "calculator" and first["approved"] is True
        assert set(first["arguments"]) == {"expression"}  # the grammar kept the arguments to the schema
        assert result.stop_reason in {"answer", "max_steps", "error"}
        assert isinstance(result.value, (int, float))
        hits += correct(result.value, row["answer"])
    assert hits / SAMPLE >= 0.75, f"{hits}/{SAMPLE} correct"


def test_without_tools_the_same_spec_answers_directly(agent: Runner, llamacpp_backend: Any) -> None:
    plain = Runner(replace(agent.spec, tool_choice="none"), llamacpp_backend)
    result = plain.run({"question": problems(1, seed=1)[0]["question"]})
    assert result.steps == [] and result.stop_reason == "answer"
    assert isinstance(result.value, (int, float))
