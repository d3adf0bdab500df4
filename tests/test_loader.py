"""Spec loading and validation: every bad case has its expected error and position."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promptdsl import SpecError, load_spec
from promptdsl.spec import Method, OutputType

GOOD = """\
version: 1
name: good
mode: completion
instruction: Classify into {{ output.choices | join(', ') }}.
inputs:
  text: {type: string}
  lang: {type: string, enum: [en, fr], default: en}
template: "Text: {{ text }}\\nSentiment:"
examples:
  - input: {text: a}
    output: Positive
output:
  type: choice
  choices: [Positive, Negative]
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_spec_loads_typed(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.name == "good"
    assert spec.mode == "completion"
    assert spec.output.type is OutputType.CHOICE
    assert spec.output.method is Method.AUTO
    assert spec.output.choices == ("Positive", "Negative")
    assert spec.inputs["lang"]["default"] == "en"
    assert spec.examples[0].input == {"text": "a"}


# (yaml text, expected message fragment, expected "line:col" or None)
BAD_CASES = [
    ("version: 1\nname: x\n  bad: [\n", "(mapping values are not allowed here)", "3:6"),
    ("- a\n- b\n", "must be a YAML mapping", "1:1"),
    ("", "this file is empty", "1:1"),
    ("version: 1\nname: x\nfoo: !!python/object:os.system {}\n", "YAML tag '!!python/object:os.system' is not allowed", "3:6"),
    ("version: 1\nname: x\nnmae: y\n", "unknown key 'nmae' at the top level (did you mean 'name'?)", "3:1"),
    ("version: 1\nname: x\noutput: {type: choice, choise: [a]}\n", "unknown key 'choise' in 'output' (did you mean 'choices'?)", "3:24"),
    ("version: 1\nname: x\ntools: [{name: calculator, foo: 1}]\n", "unknown key 'foo' in 'tools[0]' (at $.tools[0].foo)", "3:28"),
    ("version: 1\nname: x\ninputs: {t: {type: string}}\ntests: [{input: {t: x}, expect: {foo: 1}}]\n",
     "unknown key 'foo' in 'expect' (at $.tests[0].expect.foo)", "4:34"),
    ("version: 1\nname: x\ntools: [3]\n", "3 is not of type 'string' (YAML read it as a number: put it in quotes) (at $.tools[0])", "3:9"),
    ("version: 1\nname: x\ninputs: {t: {type: string}}\ntests: [{input: {t: x}, expect: {in: 5}}]\n",
     "5 is not of type 'array' (at $.tests[0].expect.in)", "4:34"),
    ("version: 1\nname: x\ninputs: {t: {type: string}}\ntests: [{input: {t: x}, expect: {contains: 5}}]\n",
     "5 is not of type 'string' (YAML read it as a number: put it in quotes) (at $.tests[0].expect.contains)", "4:34"),
    ("version: 1\nname: x\ntools: [{name: 'Bad Name!'}]\n", "'Bad Name!' does not match", "3:10"),
    ("version: 1\n", "missing required key 'name'", "1:1"),
    ("version: 2\nname: x\n", "version must be the number 1 (the only version of the spec language), not 2", "1:1"),
    ("name: x\n", "missing required key 'version' (at $.version)", "1:1"),
    ("version: 1\nname: x\ninputs: {my-text: {type: string}}\n",
     "input name 'my-text' must be an identifier (letters, digits and '_', not starting with a digit) "
     "(at $.inputs.my-text)", "3:10"),
    ("version: 1\nname: x\nfewshot: {select: balance}\n", "(did you mean 'balanced'?)", None),
    ("version: 1\nname: Bad Name\n", "must match [a-z0-9][a-z0-9_-]*", "2:1"),
    ("version: 1\nname: x\nname: y\n", "duplicate key 'name' (first defined on line 2)", "3:1"),
    ("version: 1\nname: x\noutput: {type: choice}\n", "missing required key 'choices'", "3:1"),
    ("version: 1\nname: x\noutput: {type: json}\n", "missing required key 'schema'", "3:1"),
    ("version: 1\nname: x\noutput: {type: regex, pattern: '(unclosed'}\n", "invalid regular expression", "3:23"),
    ("version: 1\nname: x\noutput: {type: text, method: score}\n", "method 'score' does not apply to output type 'text'", "3:22"),
    ("version: 1\nname: x\noutput: {type: text, choices: [a]}\n", "'choices' only applies to output type 'choice'", "3:22"),
    ("version: 1\nname: x\ninstruction: '{% if %}'\n", "template syntax error", "3:1"),
    ("version: 1\nname: x\ninputs: {text: {type: string}}\ntemplate: '{{ txt }}'\n",
     "template 'template' uses undefined variable 'txt' (did you mean 'text'?)", "4:1"),
    ("version: 1\nname: x\ninputs: {t: {type: string}}\ninstruction: \"{{ ''.__class__ }}\"\n",
     "template 'instruction' reaches for the private attribute '__class__'", "4:1"),
    ("version: 1\nname: x\ninputs: {t: {type: string}}\ntemplate: \"{{ t['__init__'] }}\"\n",
     "private attribute '__init__'", "4:1"),
    ("version: 1\nname: x\ninputs: {n: {type: nonsense}}\n", "input 'n' has an invalid JSON Schema", "3:14"),
    ("version: 1\nname: x\ninputs: {n: {type: integer, default: a}}\n", "its default does not fit its own schema", None),
    ("version: 1\nname: x\ninputs: {n: {type: strin}}\n",
     "input 'n' has an invalid JSON Schema: type 'strin' is not a JSON type (did you mean 'string'?)", "3:14"),
    ("version: 1\nname: x\ninputs: {n: {type: [Integer, 'null']}}\n",
     "type 'Integer' is not a JSON type (did you mean 'integer'?)", "3:14"),
    ("version: 1\nname: x\ninputs:\n  text: {type: string, minlength: 1}\n",
     "input 'text': unknown keyword 'minlength' (did you mean 'minLength'?); JSON Schema ignores", "4:24"),
    ("version: 1\nname: x\noutput:\n  type: json\n  schema:\n    type: object\n    properties:\n"
     "      minlength: {type: integer}\n      n: {anyOf: [{type: integer, maximun: 3}]}\n    reqired: [n]\n",
     "output schema: unknown keyword 'maximun' (did you mean 'maximum'?)", "9:35"),
    ("version: 1\nname: x\ntests:\n  - input: {}\n    expect: {schema: {type: object, requried: [a]}}\n",
     "expected schema: unknown keyword 'requried' (did you mean 'required'?)", "5:37"),
    ("version: 1\nname: x\ninputs: {text: {type: string}}\nexamples:\n  - input: {text: a}\n    output: Maybe\n"
     "output: {type: choice, choices: [Yes, No]}\n", "example[0]: output 'Maybe' is not one of the choices", "6:5"),
    ("version: 1\nname: x\ninputs: {text: {type: string}}\nexamples:\n  - input: {txt: a}\n    output: a\n",
     "example[0]: unknown input 'txt' (did you mean 'text'?)", "5:13"),
    ("version: 1\nname: x\ninputs: {n: {type: integer}}\nexamples:\n  - input: {n: 'x'}\n    output: a\n",
     "example[0]: input 'n': 'x' is not of type 'integer'", None),
    ("version: 1\nname: x\ninputs: {text: {type: string}}\nexamples:\n  - input: {text: a}\n    output: a\nfewshot: {k: 3}\n",
     "fewshot.k is 3 but the spec has only 1 example(s)", "7:11"),
    ("version: 1\nname: x\nfewshot: {select: best}\n", "'best' is not one of ['first', 'random', 'balanced']", None),
    ("version: 1\nname: x\ntests:\n  - input: {}\n", "missing required key 'expect'", "4:5"),
    ("version: 1\nname: x\noutput: {type: choice, choices: [Positive, Negative]}\ntests:\n"
     "  - {input: {}, expect: Positive}\n  - {input: {}, expect: positive}\n",
     "test[1]: expects 'positive', which is not one of the choices ['Positive', 'Negative'] (tests compare exactly: "
     "did you mean 'Positive'?)", "6:17"),
    ("version: 1\nname: x\noutput: {type: choice, choices: [a, b]}\ntests:\n  - {input: {}, expect: {in: [a, c]}}\n",
     "test[0]: expects 'c', which is not one of the choices ['a', 'b'] (at $.tests[0].expect.in[1])", "5:34"),
    ("version: 1\nname: x\noutput: {type: json, schema: {type: integer}}\ntests:\n"
     "  - {input: {}, expect: {equals: '3'}}\n",
     "test[0]: expects '3', which does not fit the output schema: '3' is not of type 'integer'", "5:26"),
    ("version: 1\nname: x\nexamples: []\nexamples_file: e.jsonl\n", "use either 'examples' or 'examples_file'", None),
    ("version: 1\nname: x\noutput: {type: regex, pattern: '(\\d+)'}\ntests:\n  - {input: {}, expect: 5}\n",
     "test[0]: expects 5, which must be a string for output type 'regex' (YAML read it as a number: put it in quotes)",
     "5:17"),
    ("version: 1\nname: x\ntests:\n  - {input: {}, expect: {in: [yes, true]}}\n",
     "expects true, which must be a string for output type 'text' (YAML read it as a boolean: put it in quotes)",
     "4:36"),
    ("version: 1\nname: x\noutput: {type: choice, choices: ['1', '2']}\ntests:\n  - {input: {}, expect: 1}\n",
     "expects 1, which is not one of the choices ['1', '2'] (YAML read it as a number: put it in quotes)", "5:17"),
    ("version: 1\nname: x\ninputs: {p: {type: object, additionalProperties: false, properties: {a: {}}, "
     "required: [b]}}\n", "requires 'b', which is not among its properties and additionalProperties is false", None),
    ("version: 1\nname: x\ntests:\n  - {input: {}, expect: {contains: ''}}\n",
     "an empty 'contains' holds for every answer", "4:26"),
]


@pytest.mark.parametrize(("text", "message", "where"), BAD_CASES, ids=[c[1][:40] for c in BAD_CASES])
def test_bad_specs_fail_with_position(tmp_path: Path, text: str, message: str, where: str | None) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert message in str(err)
    assert str(err).startswith(str(path))
    assert err.exit_code == 2
    if where is not None:
        assert f"{err.line}:{err.col}" == where, str(err)
    assert "\n" not in str(err).split("\n")[0]


def test_custom_and_distant_schema_keywords_stay_allowed(tmp_path: Path) -> None:
    """JSON Schema allows keywords of one's own: only near-misses of real keywords are refused, and a
    property may be named anything (even "type" or "minlength")."""
    spec = load_spec(write(tmp_path, (
        "version: 1\nname: x\ninputs:\n  text: {type: string, x-minlength: 1, unit: cm, note: n, example: e, descripton: d,"
        " uiSchema: u, anchor: a, '@type': t, typeof: s}\n"
        "output:\n  type: json\n  schema:\n    type: object\n    properties:\n"
        "      type: {type: string}\n      minlength: {type: integer}\n    $defs: {requird: {type: string}}\n"
    )))
    assert spec.inputs["text"]["unit"] == "cm"
    assert spec.output.schema is not None and set(spec.output.schema["properties"]) == {"type", "minlength"}


def test_several_schema_problems_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nname: x\nfoo: 1\nbar: 2\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("'foo'" in line and ":3:1:" in line for line in lines)
    assert any("'bar'" in line and ":4:1:" in line for line in lines)


def test_missing_huge_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"a" * (2 << 20))
    with pytest.raises(SpecError, match="too large"):
        load_spec(huge)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"version: 1\x00\x01")
    with pytest.raises(SpecError, match="binary"):
        load_spec(binary)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(latin)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(SpecError, match="alias bomb"):
        load_spec(path)


def test_merge_keys_get_no_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``<<`` brings in data like any alias: counted against the bomb limit, tags checked."""
    monkeypatch.setattr("promptdsl.yamlsource.MAX_NODES", 5000)  # the same walk, found sooner
    lines = ["version: 1", "name: x", "inputs:", "  text:", "    type: string", "    examples:", "      - &a0 [x, x]"]
    lines += [f"      - &a{i} {{<<: {{p: *a{i - 1}, q: *a{i - 1}}}}}" for i in range(1, 40)]
    with pytest.raises(SpecError, match="alias bomb"):
        load_spec(write(tmp_path, "\n".join(lines) + "\n", "bomb.yaml"))
    tagged = "version: 1\nname: x\ntests:\n  - input: {text: a}\n    expect: {<<: {equals: !!binary aGVsbG8=}}\n"
    with pytest.raises(SpecError, match=r"'!!binary' is not allowed") as err:
        load_spec(write(tmp_path, tagged, "tagged.yaml"))
    assert (err.value.line, err.value.col) == (5, 27)
    merged = "version: 1\nname: x\ninputs: {text: {type: string}}\ntests:\n  - input: {<<: [{text: a}], text: b}\n"
    spec = load_spec(write(tmp_path, merged + "    expect: {equals: b}\n", "merged.yaml"))
    assert spec.tests[0].input == {"text": "b"}  # a key written here wins over a merged one


def test_dates_stay_strings(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "version: 1\nname: x\ndescription: 2024-01-01\n"))
    assert spec.description == "2024-01-01"


def test_extends_deep_merges_and_keeps_positions(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "base.yaml")
    child = write(
        tmp_path,
        "extends: base.yaml\nname: child\noutput: {choices: [Yes, No]}\nexamples: []\n",
        "child.yaml",
    )
    spec = load_spec(child)
    assert spec.name == "child"
    assert spec.output.type is OutputType.CHOICE  # merged from base
    assert spec.output.choices == ("Yes", "No")  # lists replace
    assert spec.examples == []
    assert spec.instruction is not None and spec.instruction.startswith("Classify")

    bad_child = write(tmp_path, "extends: base.yaml\noutput: {choices: [Yes, No], colour: red}\n", "bad.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(bad_child)
    assert str(info.value).startswith(f"{bad_child}:2:")


def test_extends_null_removes_an_inherited_key_but_not_inside_a_schema(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nname: base\nsystem: Be brief.\nmodel: {options: {temperature: 0.7, seed: 3}}\n"
                    "inputs:\n  text: {type: [string, 'null'], default: a}\n  lang: {type: string, default: en}\n"
                    "template: '{{ text }}'\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\nsystem: null\nmodel: {options: {temperature: null}}\n"
                            "inputs: {lang: null, text: {default: null}}\n", "child.yaml")
    spec = load_spec(child)
    assert spec.system is None and spec.model.options == {"seed": 3} and list(spec.inputs) == ["text"]
    assert spec.inputs["text"] == {"type": ["string", "null"], "default": None}  # in a schema, null is a value
    orphan = write(tmp_path, "extends: base.yaml\nname: child\nfewshot: null\n", "orphan.yaml")
    with pytest.raises(SpecError, match="null is not of type 'object'"):  # nothing to remove: the schema judges it
        load_spec(orphan)


def test_extends_cycle_and_missing_base(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nname: a\nextends: b.yaml\n", "a.yaml")
    write(tmp_path, "version: 1\nname: b\nextends: a.yaml\n", "b.yaml")
    with pytest.raises(SpecError, match="'extends' cycle"):
        load_spec(tmp_path / "a.yaml")
    write(tmp_path, "version: 1\nname: c\nextends: gone.yaml\n", "c.yaml")
    with pytest.raises(SpecError, match="'extends' file not found") as info:
        load_spec(tmp_path / "c.yaml")
    assert info.value.line == 3


def test_a_base_specs_relative_paths_are_relative_to_the_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples_file, a model file and a tool's root written in lib/base.yaml are found next to it, not
    next to the spec you run (a same-named file there was silently used instead)."""
    from promptdsl.backend import Backend
    from promptdsl.runner import spec_model
    from promptdsl.tools.builtins import ReadFile

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "data").mkdir()
    (lib / "ex.jsonl").write_text('{"input": {"text": "right"}, "output": "Positive"}\n')
    (tmp_path / "ex.jsonl").write_text('{"input": {"text": "wrong"}, "output": "Negative"}\n')
    (lib / "m.gguf").write_bytes(b"GGUF")
    write(lib, "version: 1\nname: base\ninputs: {text: {type: string}}\nexamples_file: ex.jsonl\n"
               "model: {model: m.gguf}\ntools: [{name: read_file, options: {root: data}}]\n"
               "output: {type: choice, choices: [Positive, Negative]}\n", "base.yaml")
    write(tmp_path, "extends: lib/base.yaml\nname: top\n", "top.yaml")
    monkeypatch.chdir(tmp_path / "lib")  # neither folder is the current one's business
    spec = load_spec(Path("../top.yaml"))
    assert [e.input["text"] for e in spec.examples] == ["right"]

    class Files(Backend):
        name = "files"

        @classmethod
        def names_file(cls, model: str) -> bool:
            return True

    assert Path(str(spec_model(spec, Files))) == (lib / "m.gguf").resolve()
    from promptdsl.tools.check import tool_folder

    folder = tool_folder(spec, 0)
    assert folder is not None and folder.resolve() == lib.resolve()
    assert ReadFile.prepare_options({"root": "data"}, base_dir=folder, trusted=False)["root"] == str(
        (lib / "data").resolve())
    # a base from $PROMPTDSL_READ_DIRS may be read, but hands no folder of its own to a tool
    shared = tmp_path.parent / f"{tmp_path.name}-shared"
    shared.mkdir()
    write(shared, "version: 1\nname: sb\ninputs: {text: {type: string}}\ntools: [{name: read_file, options: {root: .}}]\n",
          "base.yaml")
    write(tmp_path, f"extends: {shared}/base.yaml\nname: far\n", "far.yaml")
    monkeypatch.setenv("PROMPTDSL_READ_DIRS", str(shared))
    far = load_spec(Path("../far.yaml"))
    assert tool_folder(far, 0) == far.path.parent if far.path else False
    monkeypatch.delenv("PROMPTDSL_READ_DIRS")
    # the spec you run still writes its own paths relative to itself
    write(tmp_path, "extends: lib/base.yaml\nname: own\nexamples_file: ex.jsonl\n", "own.yaml")
    assert [e.input["text"] for e in load_spec(Path("../own.yaml")).examples] == ["wrong"]


def test_switching_away_from_a_bases_choice_says_how(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nname: eb\ninputs: {text: {type: string}}\n"
                    "examples: [{input: {text: a}, output: x}]\noutput: {type: choice, choices: [x, y]}\n", "eb.yaml")
    (tmp_path / "ex.jsonl").write_text('{"input": {"text": "b"}, "output": "y"}\n')
    with pytest.raises(SpecError, match="'examples' comes from the spec this one extends: add 'examples: null'"):
        load_spec(write(tmp_path, "extends: eb.yaml\nname: ec\nexamples_file: ex.jsonl\n", "ec.yaml"))
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "extends: eb.yaml\nname: ed\nexamples: null\noutput: {type: text}\n", "ed.yaml"))
    assert "add 'choices: null' under 'output'" in info.value.message
    assert info.value.file.endswith("ed.yaml") and info.value.path == ("output", "type")  # where the type changed
    ok = load_spec(write(tmp_path, "extends: eb.yaml\nname: ee\nexamples: null\nexamples_file: ex.jsonl\n"
                                   "output: {type: text, choices: null}\n", "ee.yaml"))
    assert ok.output.type is OutputType.TEXT and [e.output for e in ok.examples] == ["y"]
    with pytest.raises(SpecError) as info:  # written in one file: no word about extends
        load_spec(write(tmp_path, "version: 1\nname: one\noutput: {type: text, choices: [a]}\n", "one.yaml"))
    assert info.value.message == "'choices' only applies to output type 'choice'"


def test_an_error_in_a_base_names_the_spec_being_loaded(tmp_path: Path) -> None:
    """The base validates alone; the child's new choices break its example: say which spec was loaded."""
    base = write(tmp_path, "version: 1\nname: eb\ninputs: {text: {type: string}}\n"
                           "examples: [{input: {text: a}, output: x}]\noutput: {type: choice, choices: [x, y]}\n",
                 "eb.yaml")
    load_spec(base)
    child = write(tmp_path, "extends: eb.yaml\nname: ef\noutput: {choices: [A, B]}\n", "ef.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(child)
    assert str(info.value).startswith(f"{base}:4:") and str(info.value).endswith(f"(loading {child}, which extends it)")
    with pytest.raises(SpecError) as info:  # an error in the file loaded itself: nothing to add
        load_spec(write(tmp_path, "extends: eb.yaml\nname: eg\nfoo: 1\n", "eg.yaml"))
    assert "which extends it" not in str(info.value)
    (tmp_path / "ex.jsonl").write_text('{"input": {"text": "b"}, "outpt": "x"}\n')
    with pytest.raises(SpecError) as info:  # its own examples file is no base
        load_spec(write(tmp_path, "extends: eb.yaml\nname: eh\nexamples: null\nexamples_file: ex.jsonl\n", "eh.yaml"))
    assert "outpt" in str(info.value) and "which extends it" not in str(info.value)
    write(tmp_path, "version: 1\n\tname: broken\n", "tab.yaml")  # a YAML error in a base names the spec too
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "extends: tab.yaml\nname: ei\n", "ei.yaml"))
    assert "a tab" in str(info.value) and str(info.value).endswith(f"(loading {tmp_path / 'ei.yaml'}, which extends it)")


def test_a_long_extends_chain_is_named_as_such(tmp_path: Path) -> None:
    """Hundreds of files deep it ran out of Python's stack and said "YAML nesting is too deep" of a 2-line file."""
    for i in range(40):
        write(tmp_path, f"extends: s{i + 1}.yaml\n", f"s{i}.yaml")
    write(tmp_path, "version: 1\nname: base\n", "s40.yaml")
    with pytest.raises(SpecError, match="'extends' chain is longer than 32 files") as info:
        load_spec(tmp_path / "s0.yaml")
    assert info.value.path == ("extends",)
    assert load_spec(tmp_path / "s10.yaml").name == "base"  # 30 files deep: fine


def test_examples_file_jsonl_and_yaml(tmp_path: Path) -> None:
    rows = [{"input": {"text": "good"}, "output": "Positive"}, {"input": {"text": "bad"}, "output": "Negative"}]
    (tmp_path / "ex.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "ex.yaml").write_text("- input: {text: good}\n  output: Positive\n")
    base = GOOD.split("examples:")[0] + "output:\n  type: choice\n  choices: [Positive, Negative]\n"
    spec = load_spec(write(tmp_path, base + "examples_file: ex.jsonl\n"))
    assert [e.output for e in spec.examples] == ["Positive", "Negative"]
    spec = load_spec(write(tmp_path, base + "examples_file: ex.yaml\n"))
    assert [e.input for e in spec.examples] == [{"text": "good"}]

    (tmp_path / "broken.jsonl").write_text('{"input": {"text": "a"}, "output": "Positive"}\n{oops\n')
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, base + "examples_file: broken.jsonl\n"))
    assert info.value.file == str(tmp_path / "broken.jsonl") and info.value.line == 2

    # an example that parses but does not fit the spec is found in its own file, at its line
    (tmp_path / "bad-label.jsonl").write_text('{"input": {"text": "a"}, "output": "Positive"}\n\n'
                                              '{"input": {"text": "a"}, "output": "Meh"}\n')
    with pytest.raises(SpecError, match=r"example\[1\]: output 'Meh' is not one of the choices") as info:
        load_spec(write(tmp_path, base + "examples_file: bad-label.jsonl\n"))
    assert (info.value.file, info.value.line) == (str(tmp_path / "bad-label.jsonl"), 3)
    (tmp_path / "bad-input.yaml").write_text("- input: {text: good}\n  output: Positive\n"
                                             "- input: {txt: bad}\n  output: Negative\n")
    with pytest.raises(SpecError, match=r"example\[1\]: unknown input 'txt'") as info:
        load_spec(write(tmp_path, base + "examples_file: bad-input.yaml\n"))
    assert (info.value.file, info.value.line, info.value.col) == (str(tmp_path / "bad-input.yaml"), 3, 11)
    # a misspelt key is worded as in an inline example (it said "bad example: Additional properties ...")
    (tmp_path / "typo.jsonl").write_text('{"input": {"text": "a"}, "output": "Positive"}\n'
                                         '{"input": {"text": "b"}, "outpt": "Negative"}\n')
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, base + "examples_file: typo.jsonl\n"))
    assert info.value.message == "unknown key 'outpt' in 'examples[1]' (did you mean 'output'?)"
    assert (info.value.file, info.value.line) == (str(tmp_path / "typo.jsonl"), 2) and "extends" not in str(info.value)
    (tmp_path / "typo.yaml").write_text("- input: {text: good}\n  output: Positive\n- inptu: {text: b}\n  output: x\n")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, base + "examples_file: typo.yaml\n"))
    assert info.value.message == "unknown key 'inptu' in 'examples[1]' (did you mean 'input'?)"
    assert (info.value.file, info.value.line) == (str(tmp_path / "typo.yaml"), 3)


def test_all_shipped_specs_load() -> None:
    root = Path(__file__).resolve().parent.parent / "specs"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {"sentiment.yaml", "translate-fr.yaml", "qa.yaml", "extract-json.yaml", "summarize.yaml"} <= set(names)
    for path in root.glob("*.yaml"):
        assert load_spec(path).name


@pytest.mark.parametrize(("text", "value"), [
    ("010", 10), ("0o17", 15), ("0x1F", 31), ("-5", -5), ("+3", 3), ("1e3", 1000.0), ("+3.5", 3.5), (".5", 0.5),
    ("12:30", "12:30"), ("1_000", "1_000"), ("Yes", "Yes"), ("off", "off"), ("2024-01-01", "2024-01-01"),
    ("True", True), ("false", False), ("~", None), ("null", None), ("'010'", "010"),
])
def test_scalars_are_yaml_1_2s_core_schema(text: str, value: object) -> None:
    """YAML 1.1 read 010 as 8, 12:30 as 750 and left 1e3 a string, where the docs promised JSON's scalars."""
    from promptdsl.yamlsource import parse_yaml

    got = parse_yaml(f"v: {text}\n", "x.yaml").data["v"]
    assert got == value and type(got) is type(value)


def test_an_explicit_int_tag_that_is_no_number_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "version: !!int abc\nname: x\n"))
    assert info.value.line == 1 and "Traceback" not in str(info.value)


@pytest.mark.parametrize(("text", "hint", "where"), [
    ("version: 1\n\tname: x\n", "a tab; YAML indents with spaces only", (2, 1)),
    ("version: 1\nname: x\noutput:\n  type: text\n   max_tokens: 3\n", "quote text that holds ': '", (5, 14)),
    ('{"text": "a"}\n{"text": "b"}\n', "JSON lines of data go to --data", (2, 1)),
    ("version: 1\noutput:\n  type: text\n max_tokens: 2\n", "the indentation does not line up", (4, 2)),
    ('version: 1\nname: "x\n', "a quote that is never closed", (3, 1)),
])
def test_common_yaml_slips_say_what_to_fix(tmp_path: Path, text: str, hint: str, where: tuple[int, int]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    assert info.value.message.startswith(f"invalid YAML: {hint}" if hint.startswith("a ") or hint.startswith("the")
                                         else "invalid YAML: ") and hint in info.value.message
    assert (info.value.line, info.value.col) == where


def test_a_required_name_is_refused_only_when_no_value_can_have_it(tmp_path: Path) -> None:
    """A likely typo is a validate note (name2 next to name1 may be meant); patternProperties may allow it."""
    from promptdsl.validate import spec_notes

    typo = load_spec(write(tmp_path, "version: 1\nname: x\noutput: {type: json, schema: {type: object, "
                                     "properties: {name: {}}, required: [nmae]}}\n"))
    assert spec_notes(typo) == ["the output schema requires 'nmae', which is not among its properties "
                                "(did you mean 'name'?)"]
    pattern = load_spec(write(tmp_path, "version: 1\nname: x\noutput: {type: json, schema: {type: object, "
                                        "additionalProperties: false, properties: {name: {}}, "
                                        "patternProperties: {'^x_': {}}, required: [name, x_id]}}\n"))
    assert spec_notes(pattern) == []


def test_a_spec_of_thousands_of_bad_keys_costs_the_ten_shown_not_a_quadratic_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 unknown keys (3 KB) took 27 s and 2,000 never finished: every error was made (with a
    did-you-mean each) and compared as text against all the earlier ones, each str() scanning the
    environment for secrets. Only the errors shown are made now, each turned to text once."""
    import promptdsl.errors as errors_module
    import promptdsl.loader as loader_module

    made: list[str] = []
    real = loader_module.did_you_mean
    monkeypatch.setattr(loader_module, "did_you_mean", lambda word, *a, **k: made.append(word) or real(word, *a, **k))
    masked: list[int] = []
    real_mask = errors_module.mask_secrets
    monkeypatch.setattr(errors_module, "mask_secrets", lambda text, *a, **k: masked.append(1) or real_mask(text, *a, **k))
    spec = tmp_path / "many.yaml"
    spec.write_text("version: 1\nname: d\n" + "".join(f"k{i}: 1\n" for i in range(2000)), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    shown = [info.value, *info.value.also]
    assert len(shown) == loader_module.MAX_REPORTED and info.value.message == "unknown key 'k0' at the top level"
    assert len(made) == loader_module.MAX_REPORTED and len(masked) <= 3 * loader_module.MAX_REPORTED


@pytest.mark.parametrize("suffix", [".jsonl", ".yaml"])
def test_an_examples_file_past_ten_thousand_examples_is_refused_before_its_rows_are_checked(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1.7 million examples in a 64 MiB file (under the size limit) made each run take 208 s and 2.3 GB."""
    import promptdsl.loader as loader_module

    assert loader_module.MAX_EXAMPLES == 10_000
    monkeypatch.setattr(loader_module, "MAX_EXAMPLES", 5)  # 10,001 rows of YAML take seconds to parse
    row = {"input": {"text": "a"}, "output": "pos"}
    rows = [row] * 6
    path = tmp_path / f"pool{suffix}"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if suffix == ".jsonl" else
                    "".join(f"- {json.dumps(r)}\n" for r in rows), encoding="utf-8")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"version: 1\nname: e\ninputs: {{text: {{type: string}}}}\nexamples_file: pool{suffix}\n"
                    "output: {type: choice, choices: [pos, neg]}\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"holds 6 examples; the limit is 5 \(a prompt shows a few"):
        load_spec(spec)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]) if suffix == ".jsonl" else
                    "".join(f"- {json.dumps(r)}\n" for r in rows[:3]), encoding="utf-8")
    assert len(load_spec(spec).examples) == 3


def test_the_spec_schema_is_read_once_per_process() -> None:
    """A helper inserted above it once took spec_schema's cache (and kept the last error alive)."""
    from promptdsl.schema import quoted_message, spec_schema

    assert spec_schema() is spec_schema() and not hasattr(quoted_message, "cache_info")


def test_yaml_nested_past_64_levels_is_refused_at_its_line_and_nodes_are_counted_as_they_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 levels of 200,000 nodes took 840 MB (a key path kept for every node); a flat 1 MiB file was
    parsed whole (24 s) before its node count was looked at."""
    import promptdsl.yamlsource as yamlsource

    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nname: d\ndescription: " + "[" * 70 + "x" + "]" * 70 + "\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"deep.yaml:3:\d+: YAML nests more than 64 levels deep"):
        load_spec(deep)
    made: list[int] = []
    real = yamlsource._Loader.compose_node

    def counting(self: Any, parent: Any, index: Any) -> Any:
        made.append(1)
        return real(self, parent, index)

    monkeypatch.setattr(yamlsource._Loader, "compose_node", counting)
    monkeypatch.setattr(yamlsource, "MAX_NODES", 50)
    flat = tmp_path / "flat.yaml"
    flat.write_text("version: 1\nname: f\ndescription: [" + ", ".join(["x"] * 5000) + "]\n", encoding="utf-8")
    with pytest.raises(SpecError, match="more than 50 nodes"):
        load_spec(flat)
    assert len(made) <= 52  # stopped while composing, not after 5,000 nodes


def test_the_inline_examples_limit_of_the_schema_is_the_examples_file_limit() -> None:
    """Two spellings of one limit (the JSON Schema cannot read Python): they must not drift apart."""
    from promptdsl.loader import MAX_EXAMPLES
    from promptdsl.schema import spec_schema

    assert spec_schema()["properties"]["examples"]["maxItems"] == MAX_EXAMPLES
