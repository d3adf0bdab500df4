"""Evaluation metrics against hand-computed values, and `promptdsl eval` end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from promptdsl.cli import main
from promptdsl.evaluate import ERROR, ChoiceMetrics, MatchMetrics, same_value

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DATA = ROOT / "tests" / "data" / "tweeteval-sentiment-val500.jsonl"  # source and licence: tests/data/README.md


def _metrics(gold: list[str], pred: list[str | None], choices: tuple[str, ...] = ("A", "B", "C")) -> ChoiceMetrics:
    m = ChoiceMetrics(choices)
    for g, p in zip(gold, pred, strict=True):
        m.add(g, p)
    return m


def test_accuracy_macro_f1_and_confusion_by_hand() -> None:
    # gold A A A B B C / pred A A B B C C
    # A: P=2/2 R=2/3 F1=0.8;  B: P=1/2 R=1/2 F1=0.5;  C: P=1/2 R=1/1 F1=2/3
    m = _metrics(["A", "A", "A", "B", "B", "C"], ["A", "A", "B", "B", "C", "C"])
    assert m.total == 6 and m.correct == 4
    assert m.accuracy == pytest.approx(4 / 6)
    scores = {c.label: c for c in m.classes()}
    assert scores["A"].precision == pytest.approx(1.0) and scores["A"].recall == pytest.approx(2 / 3)
    assert scores["A"].f1 == pytest.approx(0.8)
    assert scores["B"].f1 == pytest.approx(0.5)
    assert scores["C"].f1 == pytest.approx(2 / 3)
    assert [scores[k].support for k in "ABC"] == [3, 2, 1]
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m.majority == pytest.approx(3 / 6)
    d = m.to_dict()
    assert d["confusion"]["labels"] == ["A", "B", "C"]
    assert d["confusion"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_failed_rows_count_as_wrong_but_are_not_a_class() -> None:
    # gold A B / pred A (failed): A: F1 1; B: no predictions -> P 0, R 0, F1 0; macro 0.5
    m = _metrics(["A", "B"], ["A", None])
    assert m.accuracy == pytest.approx(0.5)
    assert m.errors == 1
    assert [c.label for c in m.classes()] == ["A", "B"]
    assert m.macro_f1 == pytest.approx(0.5)
    d = m.to_dict()
    assert d["confusion"]["columns"] == ["A", "B", "C", ERROR]
    assert d["confusion"]["matrix"][1] == [0, 0, 0, 1]


def test_classes_never_seen_are_left_out_of_macro_f1() -> None:
    m = _metrics(["A", "B"], ["A", "B"])  # C is neither gold nor predicted (as scikit-learn does)
    assert m.macro_f1 == pytest.approx(1.0)


def test_gold_labels_match_choices_ignoring_case_and_say_so() -> None:
    m = ChoiceMetrics(("Positive", "Negative", "Neutral"))
    assert m.add("negative", "Negative") is True
    assert m.add(" Positive ", "Positive") is True
    assert m.add("neutral", "Positive") is False
    assert m.accuracy == pytest.approx(2 / 3)
    assert m.folded == {("negative", "Negative"), ("neutral", "Neutral")}
    text = m.format()
    assert "ignoring case: negative -> Negative, neutral -> Neutral" in text
    assert "confusion matrix (rows: gold, columns: predicted)" in text


def test_unknown_gold_label_is_its_own_class_and_always_wrong() -> None:
    m = ChoiceMetrics(("A", "B"))
    m.add("A", "A")
    m.add("zzz", "A")
    assert m.accuracy == pytest.approx(0.5)
    assert m.labels() == ["A", "B", "zzz"]
    # A: P=1/2 R=1 F1=2/3; zzz: P=0 R=0 F1=0 -> macro 1/3
    assert m.macro_f1 == pytest.approx(1 / 3)
    assert "not choices (always wrong): 'zzz' (1)" in m.format()


def test_rows_without_a_label_are_left_out() -> None:
    m = ChoiceMetrics(("A",))
    assert m.add(None, "A") is False
    assert m.total == 0 and m.unlabelled == 1


def test_match_metrics_exact_and_schema_valid_rates() -> None:
    m = MatchMetrics("json")
    assert m.add({"a": 1}, {"a": 1}, True)
    assert m.add('{"a": 2}', {"a": 2}, True)  # JSON gold written as text
    assert not m.add({"a": 3}, {"a": 4}, True)
    assert not m.add({"a": 5}, None, False)  # failed to parse or validate
    d = m.to_dict()
    assert d["exact_match"] == pytest.approx(2 / 4)
    assert d["schema_valid"] == pytest.approx(3 / 4)
    assert same_value(" hello ", "hello") and not same_value("Hello", "hello")


def test_numeric_gold_labels_match_text_answers() -> None:
    """A JSONL label 42 is a number; a regex or text answer is always text."""
    m = MatchMetrics("regex")
    assert m.add(42, "42", True) and m.add(True, "true", True)
    assert not m.add(42, "43", True) and not m.add(42, "forty-two", True)
    assert same_value("42", 42) and same_value(42, "42")
    # JSON's equality, not Python's: true is not 1, 1 is 1.0
    assert not same_value(1, "true") and not same_value(0, "false") and not same_value(True, "1")
    assert same_value(1.0, "1") and same_value({"a": [1]}, {"a": [1.0]}) and not same_value({"a": 1}, {"a": True})


def test_gold_labels_python_json_cannot_hold_are_wrong_not_a_crash() -> None:
    for gold in ["1" * 5000, "[" * 2000]:
        assert same_value(gold, {"a": 1}) is False
        assert same_value({"a": 1}, gold) is False


def test_answers_that_are_not_choices_stay_in_the_confusion_matrix() -> None:
    """Results written by an older spec (``eval --resume``) can hold answers the choices lack."""
    m = ChoiceMetrics(("A", "B"))
    for gold, pred in [("A", "A"), ("A", "Z"), ("B", "B"), ("B", "Z")]:
        m.add(gold, pred)
    d = m.to_dict()["confusion"]
    assert d["labels"] == ["A", "B", "Z"]
    assert sum(map(sum, d["matrix"])) == m.total == 4
    assert d["matrix"][0] == [1, 0, 1]


@pytest.mark.model
def test_eval_cli_on_tweeteval_rows(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    llamacpp_backend: object) -> None:
    data = tmp_path / "val6.jsonl"
    with DATA.open(encoding="utf-8") as f:
        data.write_text("".join(itertools.islice(f, 6)), encoding="utf-8")
    out = tmp_path / "eval.jsonl"
    code = main(["eval", str(SPECS / "sentiment.yaml"), "--data", str(data), "--label", "label",
                 "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out)
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["index"] for x in lines] == list(range(6))
    # The figures agree with the per-row lines (gold lower-case, choices capitalised).
    correct = sum(x["correct"] for x in lines)
    assert all(x["correct"] == (x["value"] == x["label"].capitalize()) for x in lines)
    assert metrics["rows"] == 6 and metrics["correct"] == correct
    assert metrics["accuracy"] == pytest.approx(correct / 6)
    assert sum(map(sum, metrics["confusion"]["matrix"])) == 6
    assert metrics["labels_case_folded"]  # TweetEval labels are lower-case
    assert "6 rows" in captured.err


@pytest.mark.model
def test_eval_resume_counts_rows_already_in_out(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                llamacpp_backend: object) -> None:
    rows = [{"text": "I love it", "label": "positive"}, {"text": "Awful.", "label": "negative"}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "e.jsonl"
    # As if an earlier run had finished both rows: one right, one wrong.
    out.write_text(
        json.dumps({"index": 0, "value": "Positive", "input": rows[0], "label": "positive", "correct": True}) + "\n"
        + json.dumps({"index": 1, "value": "Neutral", "input": rows[1], "label": "negative", "correct": False})
        + "\n",
        encoding="utf-8",
    )
    code = main(["eval", str(SPECS / "sentiment.yaml"), "--data", str(data), "--label", "label",
                 "--out", str(out), "--resume", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out)
    assert metrics["rows"] == 2 and metrics["correct"] == 1
    assert metrics["confusion"]["matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert "2 done before" in captured.err


def test_resume_with_a_smaller_limit_scores_only_the_rows_within_it(tmp_path: Path) -> None:
    """Rows past --limit that an earlier, longer run wrote are not this evaluation's."""
    from test_runner import ALL, CHOICE_SPEC, Scripted

    from promptdsl import Runner, loads_spec
    from promptdsl.datafile import DataFile
    from promptdsl.dataset import DatasetRun
    from promptdsl.evaluate import Evaluation

    spec = loads_spec(CHOICE_SPEC)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"r{i}", "label": "Yes"}) + "\n" for i in range(6)), encoding="utf-8")
    out = tmp_path / "r.jsonl"

    def run(limit: int, resume: bool) -> tuple[Evaluation, int]:
        ev = Evaluation(spec, "label")
        job = DatasetRun(spec, DataFile(data), out, runner=Runner(spec, Scripted(caps=ALL, scores=[-0.1, -2.0])),
                         resume=resume, limit=limit, cache=False, on_resumed_line=ev.on_resumed_line)
        try:
            summary = job.execute(on_outcome=ev.on_outcome)
        finally:
            job.close()
        return ev, summary.resumed

    run(5, resume=False)
    ev, resumed = run(3, resume=True)
    assert ev.metrics.total == 3 and resumed == 3
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5  # the file keeps what it holds


def test_a_misspelt_label_column_fails_before_the_model_loads(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import promptdsl.cli.dataset as cli_dataset

    monkeypatch.setattr(cli_dataset, "runner_from_args", lambda *a: pytest.fail("the model was loaded"))
    data = tmp_path / "d.csv"
    data.write_text("text,label\nI love it,positive\n", encoding="utf-8")
    assert main(["eval", str(SPECS / "sentiment.yaml"), "--data", str(data), "--label", "lbl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"promptdsl: error: {data}: --label 'lbl': no such column (did you mean 'label'?); "
                   "the header has: text, label")
    jsonl = tmp_path / "d.jsonl"  # no header: the first rows are looked at instead
    jsonl.write_text('{"text": "I love it", "label": "positive"}\n{"text": "meh"}\n', encoding="utf-8")
    assert main(["eval", str(SPECS / "sentiment.yaml"), "--data", str(jsonl), "--label", "lbl"]) == 2
    assert capsys.readouterr().err.strip() == (f"promptdsl: error: {jsonl}: --label 'lbl': none of the first 2 rows "
                                               "has this field (did you mean 'label'?); their fields: label, text")


def _evaluate(tmp_path: Path, rows: list[dict[str, str]], label: str) -> tuple[object, list[dict[str, object]]]:
    from test_runner import ALL, CHOICE_SPEC, Scripted

    from promptdsl import Runner, loads_spec
    from promptdsl.datafile import DataFile
    from promptdsl.dataset import DatasetRun
    from promptdsl.evaluate import Evaluation

    spec = loads_spec(CHOICE_SPEC)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "r.jsonl"
    ev = Evaluation(spec, label)
    job = DatasetRun(spec, DataFile(data), out, runner=Runner(spec, Scripted(caps=ALL, scores=[-0.1, -2.0])),
                     cache=False)
    try:
        job.execute(on_outcome=ev.on_outcome)
    finally:
        job.close()
    return ev, [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]


def test_no_labelled_row_says_why_the_metrics_mean_nothing(tmp_path: Path) -> None:
    rows = [{"text": f"r{i}", "label": "Yes"} for i in range(3)]
    ev, _ = _evaluate(tmp_path, rows, "lable")
    assert ev.no_labels() == (  # type: ignore[attr-defined]
        "--label 'lable': none of the 3 rows has this field (did you mean 'label'?), so there is nothing to score"
    )
    ev, _ = _evaluate(tmp_path, [{"text": "r", "label": ""}], "label")
    assert ev.no_labels() == "--label 'label' is empty in all 1 rows, so there is nothing to score"  # type: ignore[attr-defined]
    ev, _ = _evaluate(tmp_path, rows, "label")
    assert ev.no_labels() is None  # type: ignore[attr-defined]


def test_unlabelled_rows_are_neither_correct_nor_wrong_in_the_results(tmp_path: Path) -> None:
    """The metrics leave them out, so the per-row file must not count them as wrong."""
    rows = [{"text": "a", "label": "Yes"}, {"text": "b"}, {"text": "c", "label": ""}, {"text": "d", "label": "No"}]
    ev, lines = _evaluate(tmp_path, rows, "label")
    assert [x["correct"] for x in lines] == [True, None, None, False]
    assert ev.metrics.unlabelled == 2 and ev.metrics.total == 2  # type: ignore[attr-defined]
