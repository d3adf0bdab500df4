"""A one-input run without jsonschema: the remembered spec check and the exact no-import shortcuts.

The shortcuts may only ever answer "surely valid"; every other answer goes to jsonschema,
so these tests hold each shortcut to jsonschema's verdict, and the remembered spec check to
"a changed spec is checked again, with the same message".
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from promptdsl import speccache
from promptdsl.cli import main
from promptdsl.errors import SpecError
from promptdsl.loader import load_spec
from promptdsl.schema import schema_problem
from promptdsl.schema.quick import surely_usable, surely_valid

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "specs" / "sentiment.yaml"

# Loads a spec, checks an input and an option, compiles the prompt; prints which heavy modules came in.
PROBE = r"""
import json, sys
from promptdsl.loader import load_spec
from promptdsl.compiler import Compiler
from promptdsl.inputs import validate_inputs
from promptdsl.runner import check_options
spec = load_spec(sys.argv[1])
check_options({"temperature": 0, "max_tokens": 5})
Compiler(spec).compile(validate_inputs(spec, {"text": "a fine day"}))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"jsonschema", "referencing", "regex"})))
"""


def _probe(spec: Path, home: Path) -> list[str]:
    env = {**os.environ, "PROMPTDSL_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(spec)], env=env, capture_output=True, text=True,
                          check=True, cwd=ROOT)
    loaded: list[str] = json.loads(proc.stdout)
    return loaded


def _markers(home: Path) -> list[Path]:
    folder = home / "cache" / speccache.FOLDER
    return sorted(folder.iterdir()) if folder.exists() else []


def test_second_load_of_a_valid_spec_imports_no_jsonschema(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "sentiment.yaml"
    spec.write_bytes(SENTIMENT.read_bytes())
    assert "jsonschema" in _probe(spec, home)  # first time: checked against the spec schema
    assert len(_markers(home)) == 1
    assert _probe(spec, home) == []  # unchanged: remembered, and nothing else needs jsonschema


def test_a_changed_spec_is_checked_again_with_the_same_error(home: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "sentiment.yaml"
    spec.write_bytes(SENTIMENT.read_bytes())
    load_spec(spec)
    assert len(_markers(home)) == 1
    text = SENTIMENT.read_text(encoding="utf-8")
    spec.write_text(text.replace("version: 1", "version: x"), encoding="utf-8")  # one byte
    assert main(["run", str(spec), "-i", "text=hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sentiment.yaml:3:1: version must be the number 1" in err[0], err
    spec.write_text(text.replace("type: choice", "type: choise"), encoding="utf-8")
    with pytest.raises(SpecError, match="choise"):
        load_spec(spec)
    assert len(_markers(home)) == 1  # invalid specs leave no marker


def test_extends_base_changes_are_seen(home: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_bytes(SENTIMENT.read_bytes())
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\n", encoding="utf-8")
    load_spec(child)
    base.write_text(SENTIMENT.read_text(encoding="utf-8").replace("method: auto", "method: guess"),
                    encoding="utf-8")
    with pytest.raises(SpecError, match="guess"):
        load_spec(child)


def test_a_corrupt_marker_means_checking_again(home: Path, tmp_path: Path) -> None:
    load_spec(SENTIMENT)
    (marker,) = _markers(home)
    marker.write_text("not the digest", encoding="ascii")
    assert not speccache.known_valid(marker.name)
    load_spec(SENTIMENT)  # checked again, and the marker written whole again
    assert marker.read_text(encoding="ascii") == marker.name


def test_an_unwritable_cache_is_silent(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "cache").write_text("a file where the cache folder should be", encoding="utf-8")
    assert load_spec(SENTIMENT).name == "sentiment"
    assert _markers(home) == []


def test_digest_only_for_plain_json() -> None:
    import datetime

    base = {"name": "x", "version": 1}
    assert speccache.digest(base) == speccache.digest({"version": 1, "name": "x"})
    assert speccache.digest(base) != speccache.digest({"name": "x", "version": 1.0})
    assert speccache.digest(base) != speccache.digest({"name": "x", "version": True})
    assert speccache.digest({"d": datetime.date(2020, 1, 1)}) is None  # YAML dates: never remembered
    assert speccache.digest({1: "a"}) is None  # a non-string key would collide with "1"


# ---------------------------------------------------------------------- the shortcuts agree with jsonschema

SCHEMAS = [
    {"type": "string"},
    {"type": "string", "minLength": 1, "description": "d"},
    {"type": "string", "maxLength": 3},
    {"type": "integer", "minimum": 1},
    {"type": ["integer", "null"], "minimum": 1},
    {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    {"type": "boolean", "default": False},
    {"enum": ["auto", True, False]},
    {"type": "array", "items": {"type": "string"}, "minItems": 1},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False},
    {"type": "object", "properties": {"stop": {"oneOf": [{"type": "string"}]}}},
    {"type": "string", "pattern": "^a"},
    {"type": "string", "format": "email"},
    {"type": "strin"},
    {"type": "string", "minLength": -1},
    {"type": "string", "minLength": True},
    {"type": ["string", "string"]},
    {"required": ["a", "a"]},
    {"$ref": "#/$defs/x"},
    True,
    {},
]
VALUES = ["", "ab", "abcd", 0, 1, 1.0, 0.5, 2, True, False, None, [], ["a"], [1], {"a": 1}, {"a": "1"},
          {"a": 1, "b": 2}, {}, {"stop": "x"}, "auto", float("nan")]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: json.dumps(s)[:40])
def test_surely_valid_never_disagrees_with_jsonschema(schema: object) -> None:
    usable = schema_problem(schema) is None
    assert not (surely_usable(schema) and not usable)
    if not usable:
        return
    for value in VALUES:
        if surely_valid(schema, value):
            assert Draft202012Validator(schema).is_valid(value), (schema, value)  # type: ignore[arg-type]


def test_shortcuts_cover_the_common_cases() -> None:
    spec = load_spec(SENTIMENT)
    assert all(surely_usable(s) for s in spec.inputs.values())
    assert surely_valid(spec.inputs["text"], "a tweet") and not surely_valid(spec.inputs["text"], "")
    assert surely_valid({"type": ["integer", "null"], "minimum": 1}, 2)
    assert not surely_valid({"type": "integer"}, True)  # bool is not a number in JSON Schema
    pairs = list(itertools.product(["n_threads", "n_ctx"], [1, 4096]))
    assert all(surely_valid({"type": "object", "properties": {k: {"type": "integer", "minimum": 1}}}, {k: v})
               for k, v in pairs)


CLI_PROBE = r"""
import sys
from promptdsl.cli import main
code = main(sys.argv[1:])
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"jsonschema", "referencing", "regex"})
print("loaded:", ",".join(loaded) or "none", file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.model
def test_promptdsl_run_of_one_input_imports_no_jsonschema_once_the_spec_is_known(tmp_path: Path) -> None:
    env = {**os.environ, "PROMPTDSL_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-c", CLI_PROBE, "run", str(SENTIMENT), "-i", "text=I love this city!",
           "-o", "n_threads=1", "--no-cache"]
    runs = [subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=ROOT) for _ in range(2)]
    assert [(r.returncode, r.stdout.strip()) for r in runs] == [(0, "Positive")] * 2, [r.stderr for r in runs]
    assert "jsonschema" in runs[0].stderr.splitlines()[-1]
    assert runs[1].stderr.splitlines()[-1] == "loaded: none"


def test_a_named_command_registers_only_its_own_group() -> None:
    script = ("import sys; from promptdsl.cli import build_parser; build_parser(['--debug', 'run', 'x.yaml']); "
              "print(sorted(m for m in sys.modules if m.startswith('promptdsl.cli.')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    groups = json.loads(proc.stdout.replace("'", '"'))
    assert "promptdsl.cli.run" in groups
    assert not {"promptdsl.cli.export", "promptdsl.cli.tune", "promptdsl.cli.evaluate"} & set(groups)
    from promptdsl.cli import COMMANDS, build_parser

    help_text = build_parser(["--help"]).format_help() + build_parser(["rn"]).format_usage()
    every = build_parser([])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(every) == sorted(n for names in COMMANDS.values() for n in names)
    assert "COMMAND" in help_text
