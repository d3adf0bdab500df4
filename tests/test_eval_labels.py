"""Labels and test names come from files: ``eval`` and ``test`` show them escaped and cut short, a
label that names no class is a bad row (named, left out, exit 1), and ``--field`` cannot feed the
gold label to the model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from promptdsl import Backend, Capability, Constraint, GenerationOptions, Prompt, loads_spec
from promptdsl.cli import main
from promptdsl.errors import InputError
from promptdsl.evaluate import LABEL_WIDTH, ChoiceMetrics, Evaluation
from promptdsl.expect import check_expectation

HOSTILE = "\x1b]0;pwned\x07\x1b[2J"
LONG = "x" * 500

SPEC = """\
version: 1
name: s
model: {backend: echo}
inputs:
  text: {type: string}
output: {type: choice, choices: [pos, neg], method: generate}
"""


class Echo(Backend):
    """Answers with the prompt's last user message (the row's text): no model, no plugin."""

    name = "echo"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.STREAM})

    def __init__(self, model: str | None = None, options: Any = None) -> None:
        super().__init__(model, options)

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        if prompt.mode == "chat":
            yield [m.content for m in prompt.messages if m.role == "user"][-1]
        else:
            yield prompt.text.rstrip().split("\n\n")[-1]


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``backend: echo`` answered by :class:`Echo`; returns the spec file."""
    from promptdsl import registry

    real = registry.backend_class
    monkeypatch.setattr(registry, "backend_class", lambda name: Echo if name == "echo" else real(name))
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "home"))
    spec = tmp_path / "c.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    return spec


def _rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ============================================================================ the text report


def test_labels_in_the_tables_are_escaped_and_cut_short() -> None:
    m = ChoiceMetrics(("pos", "neg"))
    m.add("pos", "pos")
    m.add(HOSTILE, "neg")
    m.add(LONG, "pos")
    m.add("Neg" + HOSTILE[:1], "neg")  # not a choice either (the ESC stays in the name)
    text = m.format()
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in text
    lines = text.splitlines()
    table = lines[lines.index("") + 1 : lines.index("confusion matrix (rows: gold, columns: predicted)") - 1]
    assert len({len(line) for line in table}) == 1  # one width for every row, the long label cut
    assert max(len(line) for line in lines) < 300  # was 4,516 characters
    assert "x" * (LABEL_WIDTH - 1) + "…" in text and "x" * LABEL_WIDTH not in text
    matrix = lines[lines.index("confusion matrix (rows: gold, columns: predicted)") + 1 :]
    assert len({len(line) for line in matrix}) == 1
    # the JSON report keeps every label whole (JSON escapes it)
    d = m.to_dict()
    assert HOSTILE in d["confusion"]["labels"] and LONG in d["per_class"]


def test_unknown_and_folded_labels_are_quoted_in_the_warnings() -> None:
    m = ChoiceMetrics(("pos", "neg"))
    m.add("POS", "pos")
    m.add(HOSTILE + LONG, "pos")
    text = m.format()
    assert "ignoring case: POS -> pos" in text
    warning = next(x for x in text.splitlines() if x.startswith("warning: gold labels that are not choices"))
    assert "\x1b" not in warning and len(warning) < 150


def test_numbers_and_booleans_are_their_json_text_lists_and_objects_no_class() -> None:
    m = ChoiceMetrics(("1", "2.5", "true", "pos"))
    assert m.add(1, "1") and m.add(2.5, "2.5") and m.add(True, "true")
    assert not m.add(False, "true") and "false" in m.unknown  # JSON's text, not Python's (False)
    assert m.total == 4 and not m.folded
    assert m.add(["pos"], "pos") is False and m.add({"a": 1}, "pos") is False
    assert m.total == 4 and m.bad_labels == 2 and m.unlabelled == 0  # left out, and counted
    assert "['pos']" not in m.labels() and "True" not in m.labels()
    assert "rows whose label is a list or an object, not a class name (left out): 2" in m.format()
    assert m.to_dict()["bad_labels"] == 2


def test_a_list_label_is_a_bad_row_named_in_the_results_and_exit_1(
    echo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _rows(tmp_path / "l.jsonl", [{"text": "pos", "label": "pos"}, {"text": "pos", "label": ["pos"]},
                                        {"text": "neg", "label": {"a": 1}}, {"text": "neg", "label": "neg"}])
    out = tmp_path / "o.jsonl"
    code = main(["eval", str(echo), "--data", str(data), "--label", "label", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert code == 1 and metrics["rows"] == 2 and metrics["accuracy"] == 1.0 and metrics["bad_labels"] == 2
    assert ("promptdsl: error: 2 rows have a --label 'label' that is a list or an object, not a class name "
            "(line 2 (row 1), line 3 (row 2)), so the metrics leave them out") in captured.err
    assert [json.loads(x)["correct"] for x in out.read_text(encoding="utf-8").splitlines()] == [True, None, None, True]
    # read back by --resume: still counted (named by row)
    code = main(["eval", str(echo), "--data", str(data), "--label", "label", "--out", str(out), "--resume"])
    captured = capsys.readouterr()
    assert code == 1 and "2 rows have a --label 'label'" in captured.err and "(row 1, row 2)" in captured.err


def test_eval_cli_shows_hostile_labels_escaped(echo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _rows(tmp_path / "l.jsonl", [{"text": "pos", "label": "pos"}, {"text": "neg", "label": HOSTILE},
                                        {"text": "neg", "label": LONG}, {"text": "pos", "label": True}])
    assert main(["eval", str(echo), "--data", str(data), "--label", "label"]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out
    assert max(map(len, captured.out.splitlines())) < 300
    assert "'true' (1)" in captured.out and "True" not in captured.out


# ============================================================================ --field and --label


def test_field_that_reads_the_label_is_refused_before_any_row_runs(
    echo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import promptdsl.cli.dataset as cli_dataset

    data = _rows(tmp_path / "l.jsonl", [{"text": "neg", "label": "pos"}, {"text": "pos", "label": "neg"}])
    with monkeypatch.context() as m:
        m.setattr(cli_dataset, "runner_from_args", lambda *a: pytest.fail("the model was loaded"))
        code = main(["eval", str(echo), "--data", str(data), "--label", "label", "--field", "text=label"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("promptdsl: error: --field text=label reads the --label field 'label' into input 'text'; ")
    # --label naming an input's own field is still refused; once that input reads another field, it is free
    assert main(["eval", str(echo), "--data", str(data), "--label", "text"]) == 2
    assert "the label must be a separate field" in capsys.readouterr().err
    code = main(["eval", str(echo), "--data", str(data), "--label", "text", "--field", "text=label", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["accuracy"] == 0.0, captured.err  # the answers are the other field


def test_the_library_checks_the_fields_too() -> None:
    spec = loads_spec(SPEC)
    with pytest.raises(InputError, match="--field text=gold reads the --label field 'gold'"):
        Evaluation(spec, "gold", {"text": "gold"})
    Evaluation(spec, "text", {"text": "tweet"})
    with pytest.raises(InputError, match="one of the spec's inputs"):
        Evaluation(spec, "text", {})


# ============================================================================ promptdsl test


def test_a_test_name_is_escaped_and_cut_short(echo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tn.yaml"
    name = HOSTILE + "x" + "y" * 200
    spec.write_text(SPEC.replace("choice, choices: [pos, neg], method: generate", "text")
                    + "tests:\n  - name: " + json.dumps(name) + "\n    input: {text: a}\n    expect: b\n", encoding="utf-8")
    assert main(["test", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    first = out.splitlines()[0]
    assert first.startswith(f"FAIL {spec}::test[0] (\\x1b]0;pwned\\x07\\x1b[2Jxyyy") and "…): expected 'b', got 'a'" in first
    assert len(first) < len(str(spec)) + 120
    assert main(["test", str(spec), "--json"]) == 1  # JSON escapes it, whole
    assert json.loads(capsys.readouterr().out.splitlines()[0])["name"] == name


def test_a_matches_pattern_is_escaped_in_the_detail() -> None:
    detail = check_expectation({"matches": "\x1b]0;x\x07" + "z" * 300}, "a")
    assert detail is not None and "\x1b" not in detail and "\\x1b]0;x\\x07" in detail and len(detail) < 260


def test_distinct_gold_labels_past_fifty_share_one_class_so_the_report_stays_small() -> None:
    """4,000 rows of distinct labels made a 4,000 x 4,000 confusion matrix: 15 s, 477 MB, 160 MB printed."""
    from promptdsl.evaluate import MAX_UNKNOWN_CLASSES, OTHER, ChoiceMetrics

    metrics = ChoiceMetrics(("pos", "neg"))
    for i in range(2000):
        metrics.add(f"L{i}", "pos")
    metrics.add("L3", "pos")  # a label with its own class keeps it
    labels = metrics.labels()
    assert len(labels) == 2 + MAX_UNKNOWN_CLASSES + 1 and OTHER in labels
    assert metrics.confusion[("L3", "pos")] == 2 and metrics.confusion[(OTHER, "pos")] == 2000 - MAX_UNKNOWN_CLASSES
    assert metrics.total == 2001 and len(metrics.unknown) == 2000  # every label still counted by name
    text = metrics.format()
    assert len(text) < 100_000 and "and 1,980 more" in text
