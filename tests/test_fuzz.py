"""Property-based fuzzing of the CLI with mutated specs and inputs (issue 9: make it stay fixed).

The promise, for every mutation of the example specs in ``specs/`` and of the input values:
``promptdsl validate | compile | run | test`` exits 0, 1 or 2; a failure prints
``promptdsl: error: ...`` (one line per problem, no traceback); and each case stays within a
time and memory bound. ``run`` and ``test`` use a scripted in-process backend, so no model is
loaded.

The normal suite tries a few dozen cases. Run it long with::

    PROMPTDSL_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py -q

(``PROMPTDSL_FUZZ_SECONDS`` and ``PROMPTDSL_FUZZ_MB`` change the per-case bounds.)
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from promptdsl import registry
from promptdsl.backend import Backend, Capability, Constraint, GenerationOptions
from promptdsl.cli import main
from promptdsl.loader import load_spec
from promptdsl.prompt import Prompt

ROOT = Path(__file__).resolve().parent.parent
SPECS = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.yaml"))}
INPUTS = {p.name: list(load_spec(p).inputs) for p in sorted((ROOT / "specs").glob("*.yaml"))}
EXAMPLES = int(os.environ.get("PROMPTDSL_FUZZ_EXAMPLES", "30"))
CASE_SECONDS = float(os.environ.get("PROMPTDSL_FUZZ_SECONDS", "20"))
CASE_MB = int(os.environ.get("PROMPTDSL_FUZZ_MB", "600"))

#: Lines a hostile spec might hold: each once broke a promise (issue 9).
HOSTILE_LINES = [
    "extends: /dev/zero",
    "extends: \"a\\0b.yaml\"",
    "extends: missing.yaml",
    "extends: spec.yaml",
    "template: '{{ \"a\" * 10**10 }}'",
    "template: '{{ \"%999999999d\" % 1 }}'",
    "template: '{{ 2**100000 }}'",
    "template: '{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}'",
    "template: '{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}'",
    "template: '{{ text|center(1000000000) }}'",
    "template: '{{ text|truncate(1, leeway=-5) }}'",
    "template: '{{ ''.__class__ }}'",
    "template: \"\\ud800\"",
    "inputs: {output: {type: string}}",
    "inputs: {text: {$ref: 'http://127.0.0.1:9/x'}}",
    "inputs: {text: {$ref: '#/nope'}}",
    "inputs: {text: {type: string, pattern: '^(a|aa)*$'}}",
    "inputs: {true: {type: string}}",
    "inputs: {n: {type: integer}}",
    "output: {type: regex, pattern: '^(a|aa)*$'}",
    "output: {type: regex, pattern: '(('}",
    "output: {type: json, schema: {$ref: 'file:///dev/zero'}}",
    "output: {type: choice, choices: [a, b], method: score}",
    "tests: [{input: {text: a}, expect: {matches: '(('}}]",
    "tests: [{input: {text: a}, expect: {schema: {type: nonsense}}}]",
    "model: {backend: openai, options: {base_url: 'http://127.0.0.1:9/v1', api_key_env: HOME}}",
    "examples_file: /dev/zero.jsonl",
    "1: x",
    "x: !!binary aGVsbG8=",
    "x: !!set {a}",
    "x: !!python/object:os.system {}",
    "x: " + "9" * 5000,
    "x: &a [*a]",
    "description: \"\\e[31mred\\nline\"",
    "name: '" + "x" * 5000 + "'",
    "version: 2",
    "---",
    "- a list",
    "\x07",
    "\t",
]
#: Values put after a key's ``: `` (the structure stays, the value turns hostile).
HOSTILE_VALUES = [
    "'{{ \"a\" * 10**10 }}'", "'{{ text * 1000000000 }}'", "'{% for x in range(99999) %}{{ x }}{% endfor %}'",
    "\"\\ud800\"", "!!binary aGk=", "*nowhere", "{$ref: '#/x'}", "{$ref: 'http://127.0.0.1:9/'}", "[]", "{}", "null",
    "-1", "1e999", ".nan", "'%999999999d'", "'" + "y" * 3000 + "'", "[[[[[[[[[[]]]]]]]]]]", "'^(a|aa)*$'", "true",
    "{type: string, pattern: '^(a|aa)*$'}", "\"\\x1b[31m\\n\"", "/dev/zero", "'{{ output }}'", "'{{ self }}'",
]
HOSTILE_TEXT = st.sampled_from(["\x00", "\x07", "\x1b", "\n", "\r", "{", "}", "{{", "%", ":", "'", '"', "[", "]",
                                "*", "&", "!", "#", "-", "|", ">", "\\", "\u2028", "é", "\U0001f600", " "])
INPUT_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "9" * 5000, "NaN", "[" * 5000, "@/dev/zero", "@/nonexistent", "{\"a\": 1}", "-1", "1e999",
                     "a" * 60 + "b", "\x1b[2J", "{{ text }}", "\ud800"]),
)


class Scripted(Backend):
    """Answers from the prompt: echoes the last message, scores choices by length. Never fails on its own."""

    name = "fuzz"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.SCORE, Capability.GRAMMAR}
    )

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        if constraint is not None and constraint.choices:
            yield constraint.choices[0]
            return
        text = prompt.text if prompt.mode == "completion" else prompt.messages[-1].content
        yield text[-200:]

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        return [-float(len(c)) for c in continuations]


@st.composite
def mutated_spec(draw: st.DrawFn) -> tuple[str, bytes]:
    """One example spec with a few line- and character-level mutations (sometimes as raw bytes)."""
    name = draw(st.sampled_from(sorted(SPECS)))
    lines = SPECS[name].splitlines()
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["insert", "replace", "delete", "duplicate", "char", "indent", "value", "value"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "value" and lines and ": " in lines[i]:
            lines[i] = lines[i].split(": ", 1)[0] + ": " + draw(st.sampled_from(HOSTILE_VALUES))
        elif kind == "insert":
            lines.insert(i, draw(st.sampled_from(HOSTILE_LINES)))
        elif kind == "replace" and lines:
            lines[i] = draw(st.sampled_from(HOSTILE_LINES))
        elif kind == "delete" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif kind == "indent" and lines:
            lines[i] = draw(st.sampled_from(["  ", "    ", "\t"])) + lines[i]
        elif lines:
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(HOSTILE_TEXT) + line[at + draw(st.integers(0, 3)):]
    text = "\n".join(lines) + "\n"
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 19)) == 0:
        raw = raw[: len(raw) // 2] + b"\xff\xfe" + raw[len(raw) // 2:]
    return name, raw


@pytest.fixture
def scripted_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.backend_class

    def backend_class(name: str) -> type[Backend]:
        return Scripted if name == "fuzz" else real(name)

    monkeypatch.setattr(registry, "backend_class", backend_class)
    monkeypatch.setenv("PROMPTDSL_HOME", tempfile.mkdtemp(prefix="promptdsl-fuzz-"))
    for key in list(os.environ):
        if key.startswith("OPENAI_"):
            monkeypatch.delenv(key)


def _run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def _check_promise(argv: list[str], code: int, err: str, seconds: float, grown_mb: float) -> None:
    where = f"promptdsl {' '.join(a[:80] for a in argv)}"
    assert code in (0, 1, 2), f"{where}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{where}:\n{err}"
    lines = [ln for ln in err.splitlines() if ln]
    if code != 0 and lines:
        assert lines[0].startswith("promptdsl: "), f"{where}: stderr does not start with 'promptdsl: ':\n{err}"
    for line in lines:
        assert not _CONTROL.search(line), f"{where}: control characters in stderr: {line!r}"
    assert seconds < CASE_SECONDS, f"{where}: took {seconds:.1f} s"
    assert grown_mb < CASE_MB, f"{where}: peak memory grew by {grown_mb:.0f} MB"


#: What must never reach a terminal from an error line: C0/C1 controls (ESC, NUL, CR...) and bidi overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES <= 100)
@given(
    spec=mutated_spec(),
    command=st.sampled_from(["validate", "compile", "run", "test"]),
    values=st.lists(INPUT_VALUES, max_size=3),
    extra_names=st.one_of(st.just([]), st.just([]), st.just([]), st.lists(
        st.sampled_from(["output", "n", "txt", "", "a b", "\x1b"]), min_size=1, max_size=1)),
)
def test_cli_keeps_its_promise_on_mutated_specs(
    scripted_backend: None, spec: tuple[str, bytes], command: str, values: list[str], extra_names: list[str]
) -> None:
    name, raw = spec
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        (Path(tmp) / "spec.yaml").write_bytes(raw)
        names = [*INPUTS[name], *extra_names]
        argv = [command, str(path)]
        if command in ("compile", "run"):
            for i, input_name in enumerate(names):
                default = "3" if input_name == "max_words" else "Hello there."
                argv += ["-i", f"{input_name}={values[i] if i < len(values) else default}"]
        if command in ("run", "test"):
            argv += ["--backend", "fuzz"]
        before = _peak_mb()
        start = time.process_time()  # CPU time: a shared machine's load does not make a case "hang"
        code, _, err = _run(argv)
        event(f"{command}: exit {code}")
        _check_promise(argv, code, err, time.process_time() - start, _peak_mb() - before)
