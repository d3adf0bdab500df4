"""Instruction-data export: rows rendered by the spec's compiler, formats, split, meta.json and
the contamination report (lm-evaluation-harness style word n-grams)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptdsl import load_spec
from promptdsl.compiler import compile_prompt
from promptdsl.datafile import DataFile
from promptdsl.errors import InputError
from promptdsl.export import RENDERERS, Reference, contamination, export, normalize

DATA = Path("tests/data/emotion")
EMOTION = Path("specs/emotion.yaml")
SENTIMENT = Path("specs/sentiment.yaml")


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_rows_are_the_spec_s_own_compiled_prompts(tmp_path: Path) -> None:
    spec = load_spec(EMOTION)
    export(spec, DataFile(DATA / "train.jsonl"), "label", tmp_path, fmt="prompt-completion")
    first_in = json.loads((DATA / "train.jsonl").read_text().splitlines()[0])
    first_out = _lines(tmp_path / "train.jsonl")[0]
    assert first_out["prompt"] == compile_prompt(spec, {"text": first_in["text"]}).text
    assert first_out["completion"] == " " + first_in["label"]  # the target delimiter, then the answer


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_every_format_carries_prompt_and_answer(tmp_path: Path, fmt: str) -> None:
    export(load_spec(EMOTION), DataFile(DATA / "val.jsonl"), "label", tmp_path, fmt=fmt)
    row = _lines(tmp_path / "train.jsonl")[0]
    text = json.dumps(row)
    gold = json.loads((DATA / "val.jsonl").read_text().splitlines()[0])
    assert gold["label"] in text and "Classify the emotion" in text


def test_openai_format_of_a_chat_spec_keeps_the_few_shot_turns(tmp_path: Path) -> None:
    spec = load_spec(Path("specs/translate-fr.yaml"))
    data = tmp_path / "fr.jsonl"
    name = next(iter(spec.inputs))
    data.write_text(json.dumps({name: "Good morning", "fr": "Bonjour"}) + "\n")
    export(spec, DataFile(data), "fr", tmp_path / "out", fmt="openai")
    messages = _lines(tmp_path / "out" / "train.jsonl")[0]["messages"]
    assert isinstance(messages, list)
    assert [m["role"] for m in messages][-2:] == ["user", "assistant"]
    assert messages[-1]["content"] == "Bonjour"
    assert len(messages) > 3  # the spec's examples are turns before the query


def test_zero_shot_drops_the_examples(tmp_path: Path) -> None:
    spec = load_spec(SENTIMENT)
    data = tmp_path / "s.jsonl"
    data.write_text(json.dumps({"text": "great", "label": "positive"}) + "\n")
    export(spec, DataFile(data), "label", tmp_path / "a", fmt="prompt-completion")
    export(spec, DataFile(data), "label", tmp_path / "b", fmt="prompt-completion", zero_shot_prompts=True)
    few = str(_lines(tmp_path / "a" / "train.jsonl")[0]["prompt"])
    zero = str(_lines(tmp_path / "b" / "train.jsonl")[0]["prompt"])
    assert "I absolutely love this movie" in few and "I absolutely love this movie" not in zero
    assert _lines(tmp_path / "b" / "train.jsonl")[0]["completion"] == " Positive"  # gold matched ignoring case


def test_split_is_seeded_and_meta_counts_labels(tmp_path: Path) -> None:
    spec = load_spec(EMOTION)
    r1 = export(spec, DataFile(DATA / "train.jsonl"), "label", tmp_path / "a", split=0.75, seed=3)
    export(spec, DataFile(DATA / "train.jsonl"), "label", tmp_path / "b", split=0.75, seed=3)
    assert (tmp_path / "a" / "val.jsonl").read_text() == (tmp_path / "b" / "val.jsonl").read_text()
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta == r1.meta
    assert meta["counts"] == {"rows": 40, "decontaminated": 0, "train": 30, "val": 10}
    gold = [json.loads(x)["label"] for x in (DATA / "train.jsonl").read_text().splitlines()]
    assert meta["labels"] == {k: gold.count(k) for k in meta["labels"]} and sum(meta["labels"].values()) == 40
    assert len(meta["spec_sha256"]) == 64


def test_existing_files_are_kept(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("keep me\n")
    with pytest.raises(InputError, match="exists"):
        export(load_spec(EMOTION), DataFile(DATA / "val.jsonl"), "label", tmp_path)
    assert (tmp_path / "train.jsonl").read_text() == "keep me\n"
    assert not (tmp_path / "meta.json").exists()


def test_a_split_that_leaves_a_set_empty_is_refused(tmp_path: Path) -> None:
    rows = tmp_path / "four.jsonl"
    rows.write_text("".join((DATA / "train.jsonl").read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(InputError, match=r"--split 0.1 of 4 rows leaves train.jsonl empty"):
        export(load_spec(EMOTION), DataFile(rows), "label", tmp_path / "out", split=0.1)
    assert not (tmp_path / "out").exists()


def test_a_new_export_without_split_removes_the_old_val_set(tmp_path: Path) -> None:
    """Its rows are all in the new train set: left in place, it would be evaluation data seen in training."""
    spec, data = load_spec(EMOTION), DataFile(DATA / "train.jsonl")
    export(spec, data, "label", tmp_path, split=0.75)
    with pytest.raises(InputError, match=r"exists \(use --force to overwrite\)"):
        export(spec, data, "label", tmp_path)
    result = export(spec, data, "label", tmp_path, force=True)
    assert not (tmp_path / "val.jsonl").exists() and result.foreign == []
    assert len(_lines(tmp_path / "train.jsonl")) == 40
    (tmp_path / "val.jsonl").write_text('{"mine": 1}\n', encoding="utf-8")  # no export wrote it: kept, and said
    result = export(spec, data, "label", tmp_path, force=True)
    assert result.foreign == [tmp_path / "val.jsonl"] and _lines(tmp_path / "val.jsonl") == [{"mine": 1}]


def test_a_label_outside_the_choices_names_its_row(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine", "label": "joy"}\n{"text": "hm", "label": "boredom"}\n')
    with pytest.raises(InputError, match=r"line 2 \(row 1\): the label does not fit.*'boredom'"):
        export(load_spec(EMOTION), DataFile(data), "label", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_label_and_bad_input_are_one_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n')
    with pytest.raises(InputError, match="no label field 'label'; the row has: 'text'"):
        export(load_spec(EMOTION), DataFile(data), "label", tmp_path / "out")
    data.write_text('{"text": "fine", "labels": "joy"}\n')
    with pytest.raises(InputError, match=r"no label field 'label' \(did you mean 'labels'\?\)"):
        export(load_spec(EMOTION), DataFile(data), "label", tmp_path / "out")
    data.write_text('{"text": "", "label": "joy"}\n')
    with pytest.raises(InputError, match="input 'text'"):
        export(load_spec(EMOTION), DataFile(data), "label", tmp_path / "out")


# ============================================================================ contamination


def test_normalisation_is_lowercase_without_punctuation() -> None:
    assert normalize("Hello, World!  It's #great...") == ["hello", "world", "its", "great"]


def test_ngram_overlap_exact_and_both_directions() -> None:
    ref = Reference("eval")
    ref.add("one two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    ref.add("Short tweet!")
    texts = [
        "zero one two three four five six seven eight",  # shares an 8-gram, no 13-gram
        "ONE two three four five six seven eight nine ten eleven twelve thirteen!",  # 8- and 13-grams
        "short tweet",  # exact after normalisation
        "nothing in common here at all with anything",
    ]
    report = contamination(texts, [ref])
    o = report.overlaps[0]
    assert (o.exact, o.ngram[8], o.ngram[13]) == (1, 2, 1)
    assert report.flagged == {0, 1, 2}
    assert o.reference_hit == {"exact": 1, "ngram_8": 1, "ngram_13": 1}


def test_decontaminate_drops_rows_overlapping_eval_and_tests(tmp_path: Path) -> None:
    tested = tmp_path / "emotion-tested.yaml"  # the shipped spec plus one test of its own
    tested.write_text(EMOTION.read_text(encoding="utf-8") + "tests:\n"
                      "  - input: {text: \"I am so happy today, everything is wonderful!\"}\n    expect: joy\n",
                      encoding="utf-8")
    spec = load_spec(tested)
    rows = [json.loads(x) for x in (DATA / "train.jsonl").read_text().splitlines()]
    evalf = tmp_path / "eval.jsonl"
    evalf.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"text": rows[1]["text"].upper(), "label": "joy"}) + "\n")
    train = tmp_path / "train.jsonl"
    test_text = spec.tests[0].input["text"]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"text": test_text, "label": "joy"}) + "\n")
    result = export(spec, DataFile(train), "label", tmp_path / "out", eval_data=DataFile(evalf), decontaminate=True)
    assert result.dropped == 3
    assert result.meta["counts"]["train"] == 38
    assert result.contamination is not None
    by_ref = result.contamination.to_dict()["by_reference"]
    assert [b["exact"] for b in by_ref] == [2, 1]
    texts = {str(r["prompt"]) for r in _lines(tmp_path / "out" / "train.jsonl")}  # a completion spec: prompt-completion
    assert not any(rows[0]["text"] in t for t in texts)


def test_an_input_with_a_default_still_finds_exact_duplicates(tmp_path: Path) -> None:
    """Training rows get the default filled in; eval rows and tests must count it the same way."""
    spec_file = tmp_path / "dflt.yaml"
    spec_file.write_text("version: 1\nname: dflt\nmode: completion\n"
                         "inputs: {text: {type: string}, lang: {type: string, default: en}}\n"
                         "template: 'Text ({{ lang }}): {{ text }}'\n"
                         "output: {type: choice, choices: [joy, anger]}\n"
                         "tests:\n  - input: {text: I love it}\n    expect: joy\n", encoding="utf-8")
    rows = ['{"text": "I love it", "label": "joy"}\n', '{"text": "awful", "lang": "en", "label": "anger"}\n',
            '{"text": "awful", "lang": "fr", "label": "anger"}\n', '{"text": "fine", "label": "joy"}\n']
    (tmp_path / "train.jsonl").write_text("".join(rows), encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text(rows[0] + '{"text": "awful", "label": "anger"}\n', encoding="utf-8")
    result = export(load_spec(spec_file), DataFile(tmp_path / "train.jsonl"), "label", tmp_path / "out",
                    eval_data=DataFile(tmp_path / "eval.jsonl"), decontaminate=True)
    assert result.contamination is not None
    assert [b["exact"] for b in result.contamination.to_dict()["by_reference"]] == [2, 1]  # lang fr is another text
    assert result.dropped == 2
    # a long default is no n-gram that every row shares (it made --decontaminate drop every row)
    long = tmp_path / "long.yaml"
    long.write_text(spec_file.read_text(encoding="utf-8").replace(
        "default: en", "default: answer in one short and friendly sentence for a general reader"), encoding="utf-8")
    result = export(load_spec(long), DataFile(tmp_path / "train.jsonl"), "label", tmp_path / "out2",
                    eval_data=DataFile(tmp_path / "eval.jsonl"), decontaminate=True)
    assert result.contamination is not None and result.dropped == 1  # "I love it" (in eval and in the tests)


# ============================================================================ the CLI


def test_export_cli_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main

    code = main(["export", str(EMOTION), "--data", str(DATA / "train.jsonl"), "--label", "label",
                 "--out", str(tmp_path), "--split", "0.5", "--eval", str(DATA / "val.jsonl"), "--decontaminate"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "train.jsonl (20 rows)" in out and "val.jsonl (20 rows)" in out
    assert "contamination (40 rows" in out and "8-gram: 0" in out
    assert "--decontaminate dropped 0 of 40 rows" in err


def test_export_cli_writes_to_name_export_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main

    spec, data = EMOTION.resolve(), (DATA / "train.jsonl").resolve()
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(spec), "--data", str(data), "--label", "label"]) == 0
    assert "wrote emotion-export/train.jsonl (40 rows)" in capsys.readouterr().out
    assert len(_lines(tmp_path / "emotion-export" / "train.jsonl")) == 40
    assert main(["export", str(spec), "--data", str(data), "--label", "label"]) == 2  # kept without --force


def test_the_default_format_follows_the_spec_s_mode(tmp_path: Path) -> None:
    """A completion spec's rows are its exact prompt and the answer after the target delimiter, as it
    runs; a chat spec's are its messages."""
    data = DataFile(DATA / "train.jsonl")
    completion = export(load_spec(EMOTION), data, "label", tmp_path / "c")
    assert completion.meta["format"] == "prompt-completion"
    row = _lines(tmp_path / "c" / "train.jsonl")[0]
    assert str(row["completion"]).startswith(" ") and str(row["prompt"]).endswith("Emotion:")
    chat = tmp_path / "chat.yaml"
    chat.write_text(EMOTION.read_text(encoding="utf-8").replace("mode: completion", "mode: chat"), encoding="utf-8")
    assert export(load_spec(chat), data, "label", tmp_path / "m").meta["format"] == "openai"
    assert "messages" in _lines(tmp_path / "m" / "train.jsonl")[0]


def test_export_cli_bad_label_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main

    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "hm", "label": "boredom"}\n')
    code = main(["export", str(EMOTION), "--data", str(data), "--label", "label", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "boredom" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
