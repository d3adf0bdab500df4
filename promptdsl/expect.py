"""Run a spec's own ``tests`` (``promptdsl test``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import schema as schemas
from .backend import CUT_WORDS
from .errors import PromptDSLError, escape, quote
from .runner import Runner
from .schema import json_equal
from .spec import Spec, SpecTest


@dataclass
class TestOutcome:
    spec: Spec
    index: int
    test: SpecTest
    passed: bool
    detail: str
    value: Any = None

    @property
    def label(self) -> str:
        """How ``promptdsl test`` names the test: ``file::test[i] (name)``, the name (from the spec
        file) escaped and cut short, as every file-sourced string shown is."""
        name = f" ({quote(self.test.name)[1:-1]})" if self.test.name else ""
        return f"{escape(self.spec.label)}::test[{self.index}]{name}"


def value_text(value: Any) -> str:
    """The text ``contains`` and ``matches`` search: a string as it is, any other value as JSON
    (``{"name": "Bob", "age": 42}``, keys in the answer's order), never Python's repr."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def check_expectation(expect: Any, value: Any) -> str | None:
    """None when ``value`` meets ``expect``, else why not (one line). Equality is JSON's: 1 equals 1.0,
    but not true."""
    if not isinstance(expect, dict):
        return None if json_equal(value, expect) else f"expected {quote(expect, 200)}, got {quote(value, 200)}"
    problems = []
    if "equals" in expect and not json_equal(value, expect["equals"]):
        problems.append(f"expected {quote(expect['equals'], 200)}, got {quote(value, 200)}")
    if "in" in expect and not any(json_equal(value, item) for item in expect["in"]):
        problems.append(f"expected one of {quote(expect['in'], 200)}, got {quote(value, 200)}")
    text = value_text(value)
    if "contains" in expect and expect["contains"].lower() not in text.lower():
        problems.append(f"expected text containing {quote(expect['contains'], 200)}, got {quote(text, 200)}")
    if "matches" in expect:
        try:
            if not schemas.search(expect["matches"], text):
                problems.append(f"expected text matching /{quote(expect['matches'], 200)[1:-1]}/, "
                                f"got {quote(text, 200)}")
        except schemas.RegexProblem as exc:
            problems.append(str(exc))
    if "schema" in expect:
        errors = schemas.errors(expect["schema"], value, formats=True)
        if errors:
            problems.append(f"value does not fit the expected schema: {errors[0].message}")
    return "; ".join(problems) or None


def run_tests(spec: Spec, runner: Runner) -> Iterator[TestOutcome]:
    """Run each test of ``spec``; a failed parse is a failed test, not a crash."""
    for i, test in enumerate(spec.tests):
        try:
            result = runner.run(test.input)
        except PromptDSLError as exc:
            if exc.exit_code == 2:
                raise
            yield TestOutcome(spec, i, test, False, str(exc))
            continue
        problem = check_expectation(test.expect, result.value)
        detail = problem or f"got {quote(result.value, 200)}"
        if result.truncated:  # a pass or a fail on an answer a limit cut short: worth knowing which
            detail += f" ({CUT_WORDS[result.truncated]})"
        yield TestOutcome(spec, i, test, problem is None, detail, result.value)
