"""``promptdsl test``'s comparisons: JSON equality, and ``contains`` / ``matches`` over a value's JSON text."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptdsl import Runner, load_spec
from promptdsl.expect import check_expectation, run_tests, value_text

ROOT = Path(__file__).resolve().parent.parent


def test_a_json_value_is_searched_as_json_not_as_python() -> None:
    value = {"name": "Bob", "age": 42, "ok": True, "note": None}
    assert value_text(value) == '{"name": "Bob", "age": 42, "ok": true, "note": null}'
    assert value_text("as is") == "as is" and value_text([1.5, "é"]) == '[1.5, "é"]'
    assert check_expectation({"contains": '"name": "bob"'}, value) is None  # ignoring case, as for text
    assert check_expectation({"matches": r'"age": ?42\b'}, value) is None
    assert check_expectation({"matches": r'"ok": true'}, value) is None
    problem = check_expectation({"contains": "'name'"}, value)
    assert problem is not None and "got '{\"name\": \"Bob\"" in problem  # the failure shows the JSON searched


@pytest.mark.parametrize(("expect", "value", "passes"), [
    (1, True, False), (True, 1, False), ({"equals": {"a": 1}}, {"a": True}, False),
    ({"in": [0, 1]}, False, False), ({"in": [0, 1]}, 1.0, True), (1, 1.0, True),
    ({"equals": [1, {"b": None}]}, [1, {"b": None}], True), ("Positive", "Positive", True),
])
def test_equality_is_jsons(expect: object, value: object, passes: bool) -> None:
    assert (check_expectation(expect, value) is None) is passes


def test_a_failure_shows_values_as_the_spec_writes_them() -> None:
    assert check_expectation({"equals": {"a": True}}, {"a": None}) == 'expected {"a": true}, got {"a": null}'


@pytest.mark.model
def test_contains_passes_on_the_json_the_model_answered(llamacpp_backend: object) -> None:
    spec = load_spec(ROOT / "specs" / "extract-json.yaml")
    runner = Runner(spec, llamacpp_backend)  # type: ignore[arg-type]
    outcomes = list(run_tests(spec, runner))
    by_contains = [o for o in outcomes if isinstance(o.test.expect, dict) and "contains" in o.test.expect]
    assert by_contains, "specs/extract-json.yaml shows a contains test"
    for outcome in by_contains:
        assert isinstance(outcome.value, dict) and outcome.passed, outcome.detail
