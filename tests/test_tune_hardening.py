"""Export and tune refuse what they cannot do before doing any of it: inputs never clobbered,
settings checked before a model loads, a diverging run never written, Ctrl+C honoured at every
stage, a checkpoint that only resumes the same run, and the loss as documented.

The fast tests replace llama.cpp and the torch model with tiny fakes (tune's set-up logic runs
for real, in a second); one model test runs the real thing for a few steps."""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import os
import signal
import threading
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from promptdsl import load_spec
from promptdsl.cli import main
from promptdsl.datafile import DataFile
from promptdsl.errors import InputError, PromptDSLError
from promptdsl.export import export
from promptdsl.loader import loads_spec

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason='torch is not installed (pip install -e ".[tune]")')
EXTRA = ("torch", "transformers", "peft", "gguf", "llama_cpp", "promptdsl_llamacpp")
needs_extra_reason = ""
if any(importlib.util.find_spec(m) is None for m in EXTRA):
    needs_extra_reason = 'the [tune] extra is not installed (pip install -e ".[tune]")'
needs_extra = pytest.mark.skipif(bool(needs_extra_reason), reason=needs_extra_reason or "-")

EMOTION = Path("specs/emotion.yaml").resolve()
ROWS = [
    {"text": "I can't stop smiling today", "label": "joy"},
    {"text": "This is the worst service ever", "label": "anger"},
    {"text": "Tomorrow will be better, I know it", "label": "optimism"},
    {"text": "I miss her so much", "label": "sadness"},
    {"text": "What a lovely surprise", "label": "joy"},
    {"text": "Stop lying to everyone", "label": "anger"},
]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [x for x in capsys.readouterr().err.splitlines() if x.strip()]


# ============================================================================ 1. export never clobbers its inputs


def test_export_force_never_overwrites_the_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_rows(tmp_path / "train.jsonl", ROWS)
    before = data.read_bytes()
    args = ["export", str(EMOTION), "--data", str(data), "--label", "label", "--out", str(tmp_path), "--force"]
    assert main(args) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "--out would overwrite the --data file" in err[0] and "train.jsonl" in err[0]
    assert data.read_bytes() == before and not (tmp_path / "meta.json").exists()


def test_export_force_never_deletes_the_eval_file(tmp_path: Path) -> None:
    """The reviewer's case: --eval val.jsonl in the --out folder, an earlier export with --split there."""
    spec = load_spec(EMOTION)
    data = DataFile(_write_rows(tmp_path / "rows.jsonl", ROWS))
    out = tmp_path / "proj"
    export(spec, data, "label", out, split=0.5)  # meta.json says it wrote val.jsonl
    evalf = _write_rows(out / "val.jsonl", ROWS[:2])  # ... which the user replaced by their eval set
    with pytest.raises(InputError, match=r"val.jsonl: --out would delete the --eval file"):
        export(spec, data, "label", out, eval_data=DataFile(evalf), force=True)
    assert evalf.exists() and len(evalf.read_text().splitlines()) == 2


def test_export_leaves_a_val_file_no_export_wrote(tmp_path: Path) -> None:
    spec = load_spec(EMOTION)
    data = DataFile(_write_rows(tmp_path / "rows.jsonl", ROWS))
    out = tmp_path / "proj"
    out.mkdir()
    theirs = _write_rows(out / "val.jsonl", ROWS[:1])  # the user's, no meta.json: not an earlier export's
    export(spec, data, "label", out, force=True)
    assert theirs.read_text() == json.dumps(ROWS[0]) + "\n"
    (out / "meta.json").write_text("{not json")  # an unreadable meta.json proves nothing either
    export(spec, data, "label", out, force=True)
    assert theirs.exists()


# ============================================================================ 8. text labels are strings


TEXT_SPEC = """\
version: 1
name: summ
mode: completion
inputs:
  text: {type: string}
template: |-
  Text: {{ text }}
  Summary:
output:
  type: text
"""

JSON_SPEC = """\
version: 1
name: extract
mode: completion
inputs:
  text: {type: string}
template: "Text: {{ text }}\\nJSON:"
output:
  type: json
  schema: {type: object, properties: {k: {type: integer}}, required: [k]}
"""


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ({"k": 1}, "must be text, not an object"),
        (["x", "y"], "must be text, not an array"),
        (True, "must be text, not a boolean"),
        (3, "must be text, not a number"),
        ("", "the label is empty"),
        ("   ", "the label is empty"),
    ],
)
def test_a_text_output_s_label_must_be_a_non_empty_string(tmp_path: Path, label: Any, why: str) -> None:
    spec = loads_spec(TEXT_SPEC, file=str(tmp_path / "summ.yaml"))
    data = _write_rows(tmp_path / "rows.jsonl", [{"text": "fine", "label": "ok"}, {"text": "a", "label": label}])
    with pytest.raises(InputError, match=rf"rows.jsonl: line 2 \(row 1\): .*{why}"):
        export(spec, DataFile(data), "label", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_json_output_s_label_keeps_its_json_encoding(tmp_path: Path) -> None:
    spec = loads_spec(JSON_SPEC, file=str(tmp_path / "extract.yaml"))
    data = _write_rows(tmp_path / "rows.jsonl", [{"text": "a", "label": {"k": 1}}, {"text": "b", "label": '{"k": 2}'}])
    result = export(spec, DataFile(data), "label", tmp_path / "out", fmt="prompt-completion")
    completions = [json.loads(x)["completion"] for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert completions == [' {"k":1}', ' {"k":2}'] or completions == ['{"k":1}', '{"k":2}']
    assert set(result.meta["labels"]) == {'{"k":1}', '{"k":2}'}  # compact JSON, not Python's repr


# ============================================================================ 3. settings checked up front


BAD_SETTINGS = [
    (["--alpha", "-1"], "--alpha must be at least 0, not -1"),
    (["--alpha", "inf"], "--alpha must be a finite number, not inf"),
    (["--alpha", "nan"], "--alpha must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "-1"], "--lr must be more than 0, not -1"),
    (["--lr", "0"], "--lr must be more than 0"),
    (["--batch", "0"], "--batch must be at least 1, not 0"),
    (["--rank", "0"], "--rank must be at least 1, not 0"),
    (["--rank", "100000"], "--rank must be at most 1,024"),
    (["--epochs", "nan"], "--epochs must be a finite number"),
    (["--epochs", "0"], "--epochs must be more than 0"),
    (["--steps", "0"], "--steps must be at least 1, not 0"),
    (["--steps", "-3"], "--steps must be at least 1, not -3"),
    (["--steps", "10000000000"], "--steps must be at most 1,000,000"),
    (["--threads", "-1"], "--threads must be at least 1, not -1"),
    (["--threads", "0"], "--threads must be at least 1, not 0"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1, not 0"),
    (["--seed", "-1"], "--seed must be at least 0"),
]


@pytest.mark.parametrize(("flag", "message"), BAD_SETTINGS)
def test_a_bad_setting_is_one_line_and_exit_2_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, flag: list[str], message: str
) -> None:
    import promptdsl.tune as tune_pkg

    monkeypatch.setattr(tune_pkg, "tune", lambda *a, **k: pytest.fail("tune() ran with a bad setting"))
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    args = ["tune", str(EMOTION), "--data", str(data), "--label", "label", "--out", str(tmp_path / "x.gguf"), *flag]
    assert main(args) == 2
    err = _err_lines(capsys)
    assert err == [f"promptdsl: error: {err[0].removeprefix('promptdsl: error: ')}"] and message in err[0]


def test_library_callers_get_the_same_checks() -> None:
    from promptdsl.tune.config import TuneConfig, check_threads

    with pytest.raises(PromptDSLError, match="--alpha must be a finite number, not inf") as e:
        TuneConfig(alpha=math.inf)
    assert e.value.exit_code == 2
    with pytest.raises(PromptDSLError, match="--batch must be a whole number"):
        TuneConfig(batch=2.5)  # type: ignore[arg-type]
    with pytest.raises(PromptDSLError, match="--out-type must be one of q8_0, f16"):
        TuneConfig(out_type="q4_0")
    with pytest.raises(PromptDSLError, match="--threads must be at least 1"):
        check_threads(0)
    assert TuneConfig(steps=1, max_tokens=2048).max_tokens == 2048


def test_max_tokens_is_a_flag_passed_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import promptdsl.tune as tune_pkg

    seen: dict[str, Any] = {}

    def fake_tune(spec: Any, data: Any, label: str, out: Path, config: Any, **kw: Any) -> Any:
        seen["config"] = config
        raise PromptDSLError("stop here")

    monkeypatch.setattr(tune_pkg, "tune", fake_tune)
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    base = ["tune", str(EMOTION), "--data", str(data), "--label", "label", "--out", str(tmp_path / "x.gguf")]
    assert main([*base, "--max-tokens", "1024"]) == 2
    assert seen["config"].max_tokens == 1024
    assert main(base) == 2
    assert seen["config"].max_tokens == 512
    capsys.readouterr()


# ============================================================================ 9. the loss, by hand


@needs_torch
def test_loss_matches_a_hand_computed_value() -> None:
    """Two sequences, vocabulary 2, logits chosen so each target's loss is ln 2, ln(4/3) or ln 4.

    Row 0: 3 tokens, prompt 2 (targets: t1 prompt, t2 response). Row 1: 4 tokens, prompt 1
    (targets t1..t3 all response), padded to width 5 (t4 is padding and must not count).
    L_LM = mean over the 5 real targets; L_align = mean over the 4 response targets.
    """
    import torch

    from promptdsl.tune.loss import lm_align_loss, target_masks

    ln2, ln43, ln4 = math.log(2), math.log(4 / 3), math.log(4)
    third = math.log(3)
    ids = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]])  # every real target is token 0; padding 1
    logits = torch.zeros(2, 5, 2)
    # p(token 0) after position t: logit a for token 0, 0 for token 1 -> p = e^a / (e^a + 1)
    logits[0, 0, 0] = 0.0  # t1 (prompt): p = 1/2, loss ln 2
    logits[0, 1, 0] = third  # t2 (response): p = 3/4, loss ln(4/3)
    logits[1, 0, 0] = -third  # t1 (response): p = 1/4, loss ln 4
    logits[1, 1, 0] = 0.0  # t2 (response): ln 2
    logits[1, 2, 0] = third  # t3 (response): ln(4/3)
    logits[1, 3, 0] = 50.0  # t4 is padding (token 1, given p = e^-50): a huge loss that must not count
    every, response = target_masks([2, 1], [1, 3], 5)
    assert every.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert response.tolist() == [[0, 1, 0, 0], [1, 1, 1, 0]]
    l_lm = (ln2 + ln43 + ln4 + ln2 + ln43) / 5  # (0.6931 + 0.2877 + 1.3863 + 0.6931 + 0.2877) / 5
    l_align = (ln43 + ln4 + ln2 + ln43) / 4
    assert l_lm == pytest.approx(0.669591, abs=1e-6) and l_align == pytest.approx(0.663701, abs=1e-6)
    for alpha, expected in ((0.0, l_lm), (1.0, l_lm + l_align), (4.0, l_lm + 4 * l_align)):
        got = float(lm_align_loss(logits, ids, every, response, alpha))
        assert got == pytest.approx(expected, abs=1e-5), alpha
    assert float(lm_align_loss(logits, ids, every, response, 4.0)) == pytest.approx(3.324396, abs=1e-5)  # 0.669591 + 4 · 0.663701


# ============================================================================ fakes for train() and tune()


def _tiny_model(vocab: int = 16, nan: bool = False) -> Any:
    import torch

    class TinyLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lora_emb = torch.nn.Embedding(vocab, vocab)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            logits = self.lora_emb(input_ids)
            return types.SimpleNamespace(logits=logits * float("nan") if nan else logits)

    torch.manual_seed(0)
    return TinyLM()


def _seqs(n: int = 6) -> list[Any]:
    from promptdsl.tune.train import Sequence_

    return [Sequence_((*((i + k) % 15 for k in range(5 + i % 3)), 15), 4) for i in range(n)]


class FakeTokens:
    """llama.cpp's tokenizer, faked: a token per word of the prompt and of the answer."""

    made = 0

    def __init__(self, model_path: Path, threads: int) -> None:
        FakeTokens.made += 1
        self.end_of_turn = 15
        self.backend = types.SimpleNamespace(context_length=lambda: 4096)

    def sequence(self, prompt: Any, response: str) -> Any:
        from promptdsl.tune.train import Sequence_

        head = tuple(len(w) % 15 for w in prompt.text.split())
        tail = tuple(len(w) % 15 for w in response.split())
        return Sequence_((*head, *tail, self.end_of_turn), len(head))

    def text(self, prompt: Any, response: str) -> str:
        return str(prompt.text) + response


@pytest.fixture
def fake_tune(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """tune() with llama.cpp, transformers and the GGUF replaced by fakes; train() is the real one."""
    import torch

    import promptdsl.tune.train as train_mod
    from promptdsl.tune.train import TokenizerCheck

    FakeTokens.made = 0
    state: dict[str, Any] = {"written": []}

    def write(gg: Any, out: Path, deltas: Any, out_type: str, meta: Any) -> None:
        if state.get("write_fails"):
            raise train_mod.TuneError(f"cannot write {out}: No space left on device", exit_code=1)
        out.write_bytes(b"GGUF")
        state["written"].append(out)

    monkeypatch.setattr(train_mod, "LlamaTokens", FakeTokens)
    monkeypatch.setattr(train_mod, "check_tokenizer", lambda base, texts, tok, stop=None: TokenizerCheck(len(texts), 0))
    monkeypatch.setattr(train_mod, "load_torch_model", lambda base: (object(), _tiny_model()))
    monkeypatch.setattr(train_mod, "logits_agree", lambda model, tok, tokens: 1.0)
    monkeypatch.setattr(train_mod, "add_lora", lambda model, cfg: model)
    monkeypatch.setattr(train_mod, "lora_deltas", lambda model, gg: {})
    monkeypatch.setattr(train_mod, "write_gguf", write)
    threads = torch.get_num_threads()
    yield state
    torch.set_num_threads(threads)


class Stages:
    """A listener that records the stages and can act on one (set stop, press Ctrl+C)."""

    def __init__(self, when: str = "", act: Any = None, at_step: int = 0, stop: threading.Event | None = None) -> None:
        self.stages: list[str] = []
        self.when, self.act, self.at_step, self.stop = when, act, at_step, stop
        self.active: list[bool] = []

    def stage(self, text: str) -> None:
        self.stages.append(text)
        if self.when and text.startswith(self.when):
            self.act()

    def step(self, step: int, total: int, loss: float) -> None:
        if self.at_step and step == self.at_step and self.stop is not None:
            self.stop.set()

    def training(self, active: bool) -> None:
        self.active.append(active)

    def eval_progress(self, label: str, total: int | None) -> Any:
        return None


def _tune(tmp_path: Path, data: Path, **kw: Any) -> Any:
    from promptdsl.tune import tune
    from promptdsl.tune.config import TuneConfig

    kw.setdefault("config", TuneConfig(steps=4, batch=2, lr=1e-2))
    config = kw.pop("config")
    out = kw.pop("out", tmp_path / "tuned.gguf")
    return tune(load_spec(EMOTION), DataFile(data), kw.pop("label", "label"), out, config, threads=1, **kw)


# ============================================================================ 2. divergence


@needs_torch
def test_a_nan_loss_stops_training_with_exit_1_and_no_checkpoint(tmp_path: Path) -> None:
    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.train import TuneError, train

    ckpt = tmp_path / "x.gguf.ckpt"
    with pytest.raises(TuneError, match=r"training diverged at step 1: the loss is nan; stopped, no model was written") as e:
        train(_tiny_model(nan=True), _seqs(), TuneConfig(steps=3, batch=2), pad=15, checkpoint=ckpt, ident={})
    assert e.value.exit_code == 1 and not ckpt.exists()


@needs_torch
def test_a_non_finite_gradient_stops_before_the_weights_take_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.train import TuneError, train

    model = _tiny_model()
    before = model.lora_emb.weight.detach().clone()
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, limit: torch.tensor(float("inf")))
    with pytest.raises(TuneError, match="diverged at step 1: the gradient is inf"):
        train(model, _seqs(), TuneConfig(steps=3, batch=2), pad=15, checkpoint=tmp_path / "c", ident={})
    assert torch.equal(model.lora_emb.weight, before)


@needs_torch
def test_a_non_finite_change_is_never_written(tmp_path: Path) -> None:
    import numpy as np

    from promptdsl.tune.train import TuneError, check_finite

    check_finite({"blk.0.attn_q.weight": np.zeros((2, 2), dtype=np.float32)})
    with pytest.raises(TuneError, match=r"blk\.0\.attn_q\.weight is not finite; no model was written") as e:
        check_finite({"blk.0.attn_q.weight": np.array([[0.0, np.nan]], dtype=np.float32)})
    assert e.value.exit_code == 1


# ============================================================================ 4. --out checked first, writes kept


@needs_extra
@pytest.mark.parametrize("where", ["missing", "file"])
def test_a_bad_out_folder_is_refused_before_any_model_work(
    tmp_path: Path, fake_tune: dict[str, Any], where: str
) -> None:
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    if where == "missing":
        out, message = tmp_path / "nodir" / "x.gguf", "folder .*nodir does not exist"
    else:
        (tmp_path / "afile").write_text("")
        out, message = tmp_path / "afile" / "x.gguf", ".*afile is not a folder"
    listener = Stages()
    with pytest.raises(PromptDSLError, match=f"--out: {message}") as e:
        _tune(tmp_path, data, out=out, listener=listener)
    assert e.value.exit_code == 2 and listener.stages == [] and FakeTokens.made == 0
    assert not any(p.name.endswith(".probe") for p in tmp_path.iterdir())


@needs_torch
def test_a_checkpoint_that_cannot_be_saved_is_one_line(tmp_path: Path) -> None:
    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.train import TuneError, train

    stop = threading.Event()
    with pytest.raises(TuneError, match=r"cannot save checkpoint .*nodir.*x.ckpt at step 1: ") as e:
        train(_tiny_model(), _seqs(), TuneConfig(steps=3, batch=2), pad=15, checkpoint=tmp_path / "nodir" / "x.ckpt",
              ident={}, stop=stop, on_step=lambda s, t, loss: stop.set())
    assert e.value.exit_code == 1


@needs_extra
def test_a_failed_write_keeps_the_training_and_resume_only_writes(tmp_path: Path, fake_tune: dict[str, Any]) -> None:
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    fake_tune["write_fails"] = True
    with pytest.raises(PromptDSLError, match=r"No space left on device; the training is saved in .*tuned.gguf.ckpt.*--resume") as e:
        _tune(tmp_path, data)
    assert e.value.exit_code == 1
    assert (tmp_path / "tuned.gguf.ckpt").is_file()
    fake_tune["write_fails"] = False
    report = _tune(tmp_path, data, resume=True)
    assert report.resumed_at == 4 and report.steps == 4 and fake_tune["written"] == [tmp_path / "tuned.gguf"]
    assert not (tmp_path / "tuned.gguf.ckpt").exists()


# ============================================================================ 5. --resume only resumes the same run


@needs_extra
def test_resume_refuses_other_data_content_or_label_and_says_so(tmp_path: Path, fake_tune: dict[str, Any]) -> None:
    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.train import TuneError, TuneInterrupted

    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    stop = threading.Event()
    with pytest.raises(TuneInterrupted, match="stopped at step 2"):
        _tune(tmp_path, data, stop=stop, listener=Stages(at_step=2, stop=stop))
    # every label changed, the file name the same: refused before anything loads
    _write_rows(data, [{**r, "label": "sadness"} for r in ROWS])
    made = FakeTokens.made
    with pytest.raises(TuneError, match=r"changed: the --data content\); run with the same ones, or drop --resume"):
        _tune(tmp_path, data, resume=True)
    assert FakeTokens.made == made
    # the same data under another field name: the --label differs, the tokens do not
    _write_rows(data, [{"text": r["text"], "gold": r["label"]} for r in ROWS])
    with pytest.raises(TuneError, match=r"changed: the --data content, --label\)"):
        _tune(tmp_path, data, resume=True, label="gold")
    _write_rows(data, ROWS)
    with pytest.raises(TuneError, match=r"changed: --lr 0.01 -> 0.02\)"):
        _tune(tmp_path, data, resume=True, config=TuneConfig(steps=4, batch=2, lr=2e-2))
    report = _tune(tmp_path, data, resume=True, config=TuneConfig(steps=4, batch=2, lr=1e-2, out_type="f16"))
    assert report.resumed_at == 2 and report.steps == 4


@needs_torch
def test_a_checkpoint_from_an_older_version_is_refused_by_name(tmp_path: Path) -> None:
    import torch

    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.train import TuneError, train

    ckpt = tmp_path / "x.ckpt"
    torch.save({"ident": "0123456789abcdef", "step": 1}, ckpt)
    with pytest.raises(TuneError, match=r"changed: the promptdsl version that wrote it\)"):
        train(_tiny_model(), _seqs(), TuneConfig(steps=2, batch=2), pad=15, checkpoint=ckpt, ident={"a": 1}, resume=True)


# ============================================================================ 6. --eval checked up front, failures told


@needs_extra
def test_eval_rows_are_checked_before_any_model_loads(tmp_path: Path, fake_tune: dict[str, Any]) -> None:
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    wrong = _write_rows(tmp_path / "v.jsonl", [{"tweet": r["text"], "label": r["label"]} for r in ROWS])
    with pytest.raises(InputError, match=r"v.jsonl: line 1 \(row 0\): no field for input 'text' \(did you mean 'tweet'\?\); the row has: 'tweet', 'label'"):
        _tune(tmp_path, data, eval_data=DataFile(wrong))
    empty_text = _write_rows(tmp_path / "e.jsonl", [ROWS[0], {"text": "", "label": "joy"}])
    with pytest.raises(InputError, match=r"e.jsonl: line 2 \(row 1\): input 'text'"):
        _tune(tmp_path, data, eval_data=DataFile(empty_text))
    nolabel = _write_rows(tmp_path / "n.jsonl", [{"text": r["text"], "lable": r["label"]} for r in ROWS])
    with pytest.raises(InputError, match=r"n.jsonl: --label 'label': none of the 6 rows has a value in this field \(did you mean 'lable'\?\)"):
        _tune(tmp_path, data, eval_data=DataFile(nolabel))
    csv = tmp_path / "v.csv"
    csv.write_text("text,emotion\nhello,joy\n")
    with pytest.raises(InputError, match=r"v.csv: --label 'label': no such column; the header has: text, emotion"):
        _tune(tmp_path, data, eval_data=DataFile(csv))
    with pytest.raises(InputError, match="--eval cannot be standard input"):
        _tune(tmp_path, data, eval_data=DataFile("-"))
    assert FakeTokens.made == 0 and not fake_tune["written"]


def _report(tmp_path: Path, **kw: Any) -> Any:
    from promptdsl.tune import TuneReport

    out = tmp_path / "tuned.gguf"
    out.write_bytes(b"GGUF")
    return TuneReport(out=out, steps=2, losses=[3.0, 2.0], train_seconds=1.0, rows=6, tokens=60,
                      tokenizer_mismatches=0, logits_correlation=0.999, out_bytes=4, peak_rss_mib=100.0, **kw)


def test_an_evaluation_where_every_row_failed_is_exit_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptdsl.cli.tune import print_report
    from promptdsl.dataset import Summary
    from promptdsl.evaluate import ChoiceMetrics

    failed = Summary(rows=4, errors=4, reasons=Counter({"llamacpp: score returned NaN for 4 choices": 4}))
    good = Summary(rows=4, ok=3, errors=1, reasons=Counter({"the prompt is 5000 tokens": 1}))
    metrics = ChoiceMetrics(["anger", "joy"])
    report = _report(tmp_path, before=metrics, after=metrics, evaluations={"before": good, "after": failed})
    assert print_report(report) == 1
    captured = capsys.readouterr()
    assert "wrote " in captured.out
    err = captured.err.splitlines()
    assert "promptdsl: before: 1 evaluation row failed: the prompt is 5000 tokens" in err
    assert "promptdsl: after: 4 evaluation rows failed: llamacpp: score returned NaN for 4 choices" in err
    assert "promptdsl: error: after: none of the 4 evaluation rows succeeded, so these metrics mean nothing" in err
    assert not any("before: none" in x for x in err)
    report = _report(tmp_path, before=metrics, after=metrics, evaluations={"before": good})
    assert print_report(report) == 0


# ============================================================================ 7. Ctrl+C at every stage


@needs_extra
@pytest.mark.parametrize("how", ["stop", "ctrl-c"])
@pytest.mark.parametrize("stage", ["tokenizing", "loading the model into torch", "training"])
def test_ctrl_c_before_training_stops_with_130_and_saves_nothing(
    tmp_path: Path, fake_tune: dict[str, Any], how: str, stage: str
) -> None:
    """A stop request (the library's Event) or a KeyboardInterrupt (the CLI's first Ctrl+C outside
    training) during set-up: exit 130, no checkpoint, no model, nothing trained."""
    from promptdsl.tune.train import TuneInterrupted, TuneStopped

    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    stop = threading.Event()

    def act() -> None:
        stop.set()
        if how == "ctrl-c":
            raise KeyboardInterrupt

    listener = Stages(when=stage, act=act)
    with pytest.raises(TuneStopped, match=r"stopped before training (started|step 1).*; nothing (new )?was saved") as e:
        _tune(tmp_path, data, stop=stop, listener=listener)
    assert e.value.exit_code == 130 and not isinstance(e.value, TuneInterrupted)
    assert not (tmp_path / "tuned.gguf.ckpt").exists() and not fake_tune["written"]
    assert listener.stages[-1].startswith(stage)


@needs_extra
def test_ctrl_c_during_the_evaluation_keeps_the_model_and_reports_it(
    tmp_path: Path, fake_tune: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import promptdsl.tune as tune_pkg
    from promptdsl.cli.tune import print_report

    calls: list[str] = []

    def evaluate(spec: Any, model: str, data: Any, label: str, **kw: Any) -> Any:
        calls.append(model)
        raise KeyboardInterrupt  # Ctrl+C while the model loads for the evaluation

    monkeypatch.setattr(tune_pkg, "evaluate_model", evaluate)
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    report = _tune(tmp_path, data, eval_data=DataFile(data))
    assert report.interrupted == "the evaluation of the base model was stopped" and len(calls) == 1
    assert fake_tune["written"] == [tmp_path / "tuned.gguf"] and report.before is None
    assert print_report(report) == 130
    captured = capsys.readouterr()
    assert "wrote " in captured.out
    assert "promptdsl: interrupted: the evaluation of the base model was stopped; " in captured.err


@needs_extra
def test_a_stop_during_training_skips_no_step_and_the_evaluation_does_not_start(
    tmp_path: Path, fake_tune: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop requested while the model is written: it is written, then the evaluation is skipped."""
    import promptdsl.tune as tune_pkg

    monkeypatch.setattr(tune_pkg, "evaluate_model", lambda *a, **k: pytest.fail("evaluation ran after a stop"))
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    stop = threading.Event()
    listener = Stages(when="writing", act=stop.set)
    report = _tune(tmp_path, data, eval_data=DataFile(data), stop=stop, listener=listener)
    assert report.interrupted == "the evaluation of the base model did not run"
    assert fake_tune["written"] and listener.active == [True, False]


def test_the_cli_handler_waits_for_the_step_only_while_training() -> None:
    from promptdsl.cli.tune import stop_on_ctrl_c

    # Python runs a signal handler at the next bytecode, which may be inside a gc callback
    # (hypothesis installs one): its KeyboardInterrupt would be printed and lost there.
    gc.disable()
    try:
        _handler_waits_only_while_training(stop_on_ctrl_c)
    finally:
        gc.enable()


def _handler_waits_only_while_training(stop_on_ctrl_c: Any) -> None:
    listener = types.SimpleNamespace(in_training=False)
    stop = threading.Event()
    with pytest.raises(KeyboardInterrupt), stop_on_ctrl_c(stop, listener):  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(2)
    assert stop.is_set()

    listener.in_training = True
    stop = threading.Event()
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    try:
        with stop_on_ctrl_c(stop, listener):  # type: ignore[arg-type]
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                if stop.is_set():
                    break
                threading.Event().wait(0.02)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(w)
    said = os.read(r, 4096).decode()
    os.close(r)
    assert stop.is_set()
    assert "stopping at the end of the current step (Ctrl+C again to stop at once)" in said
    assert "row in flight" not in said


# ============================================================================ 10. --max-tokens, rows named


@needs_extra
def test_a_row_over_max_tokens_names_its_file_and_line(tmp_path: Path, fake_tune: dict[str, Any]) -> None:
    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.train import TuneError

    data = _write_rows(tmp_path / "long.jsonl", [ROWS[0], {"text": "word " * 600, "label": "joy"}])
    with pytest.raises(TuneError, match=r"long.jsonl: line 2 \(row 1\): 6\d\d tokens \(prompt and answer\), more than "
                                        r"--max-tokens 512; shorten the row or raise --max-tokens") as e:
        _tune(tmp_path, data)
    assert e.value.exit_code == 2
    report = _tune(tmp_path, data, config=TuneConfig(steps=1, batch=2, max_tokens=1024))
    assert report.rows == 2
    with pytest.raises(TuneError, match=r"--max-tokens 5000 is more than the model's context \(4096 tokens\)"):
        _tune(tmp_path, data, config=TuneConfig(steps=1, max_tokens=5000))


@needs_extra
def test_no_training_rows_names_the_file(tmp_path: Path, fake_tune: dict[str, Any]) -> None:
    from promptdsl.tune.train import TuneError

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TuneError, match=r"empty.jsonl: no training rows") as e:
        _tune(tmp_path, empty)
    assert e.value.exit_code == 2


# ============================================================================ the real thing, a few steps


from test_tune import SPEC as ZB_SPEC  # noqa: E402 - the learning test's spec, reused


@pytest.mark.model
@needs_extra
def test_a_real_run_interrupted_resumes_only_with_the_same_data(tmp_path: Path) -> None:
    """Real llama.cpp tokens, torch model and GGUF: a checkpoint after step 1 is refused with other
    labels in the same file, then resumes with the original rows and writes a finite model."""
    import numpy as np

    from promptdsl.tune import tune
    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.gguf_io import GGUFModel
    from promptdsl.tune.train import TuneError, TuneInterrupted

    rows = [{"text": t, "label": lab} for t, lab in (("a banana", "zorp"), ("a truck", "blick"),
                                                     ("an apple", "zorp"), ("a boat", "blick"))]
    data = _write_rows(tmp_path / "train.jsonl", rows)
    spec = loads_spec(ZB_SPEC, file=str(tmp_path / "zb.yaml"))
    out = tmp_path / "tuned.gguf"
    config = TuneConfig(steps=2, batch=2, rank=2, lr=1e-3)
    stop = threading.Event()
    with pytest.raises(TuneInterrupted, match="stopped at step 1"):
        tune(spec, DataFile(data), "label", out, config, threads=1, stop=stop, listener=Stages(at_step=1, stop=stop))
    _write_rows(data, [{**r, "label": "zorp"} for r in rows])
    with pytest.raises(TuneError, match="changed: the --data content"):
        tune(spec, DataFile(data), "label", out, config, threads=1, resume=True)
    _write_rows(data, rows)
    report = tune(spec, DataFile(data), "label", out, config, threads=1, resume=True)
    assert report.resumed_at == 1 and report.steps == 2 and all(math.isfinite(x) for x in report.losses)
    assert np.isfinite(GGUFModel(out).array("blk.0.attn_q.weight")).all()
    assert not out.with_name(out.name + ".ckpt").exists()


@needs_torch
def test_a_spec_s_model_file_outside_its_folder_is_refused_before_training(
    tmp_path: Path, fake_tune: dict[str, Any]
) -> None:
    """tune resolved a spec's model.model from the working folder, past the folder rule run obeys."""
    from promptdsl.errors import SpecError

    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    folder = tmp_path / "specs"
    folder.mkdir()
    spec_path = folder / "emotion.yaml"
    spec_path.write_text(
        EMOTION.read_text(encoding="utf-8").replace("version: 1\n", "version: 1\nmodel: {model: ../other.gguf}\n", 1),
        encoding="utf-8",
    )
    from promptdsl.tune import tune
    from promptdsl.tune.config import TuneConfig

    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    with pytest.raises(SpecError, match=r"outside the spec's folder .*\(at \$\.model\.model\)") as e:
        tune(load_spec(spec_path), DataFile(data), "label", tmp_path / "x.gguf", TuneConfig(steps=2), threads=1)
    assert e.value.exit_code == 2 and FakeTokens.made == 0


# ============================================================================ 1b. nor the files the spec is built from


def _spec_folder(tmp_path: Path) -> Path:
    """A project folder: the spec (extending meta.json) with its examples in train.jsonl, the data beside."""
    proj = tmp_path / "proj"
    proj.mkdir()
    base = {
        "version": 1,
        "name": "base",
        "mode": "completion",
        "instruction": "Classify the emotion of the tweet as anger, joy, optimism or sadness.",
        "inputs": {"text": {"type": "string", "minLength": 1}},
        "template": "Tweet: {{ text }}\nEmotion:",
        "output": {"type": "choice", "choices": ["anger", "joy", "optimism", "sadness"]},
    }
    (proj / "meta.json").write_text(json.dumps(base), encoding="utf-8")  # JSON is YAML: a spec file
    (proj / "train.jsonl").write_text(
        "".join(json.dumps({"input": {"text": r["text"]}, "output": r["label"]}) + "\n" for r in ROWS[:2]),
        encoding="utf-8",
    )
    (proj / "emo.yaml").write_text(
        "extends: meta.json\nname: emo\nexamples_file: ./sub/../train.jsonl\n", encoding="utf-8"
    )
    (proj / "sub").mkdir()
    _write_rows(proj / "rows.jsonl", ROWS)
    return proj


def test_the_loader_records_every_file_a_spec_is_built_from(tmp_path: Path) -> None:
    import dataclasses

    proj = _spec_folder(tmp_path)
    spec = load_spec(proj / "emo.yaml")
    assert spec.files == tuple((proj / name).resolve() for name in ("emo.yaml", "meta.json", "train.jsonl"))
    assert "files" not in {f.name for f in dataclasses.fields(spec)}  # spec_sha256 and run digests unchanged
    text = (proj / "emo.yaml").read_text(encoding="utf-8")
    assert loads_spec(text, base_dir=proj).files == spec.files[1:]  # the text itself is no file
    assert load_spec(EMOTION).files == (EMOTION,)


@pytest.mark.parametrize("force", [True, False])
def test_export_never_overwrites_the_spec_s_examples_file_or_extends_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], force: bool
) -> None:
    """The reviewer's case: `examples_file: train.jsonl` next to the spec, --out the spec's folder."""
    proj = _spec_folder(tmp_path)
    before = {p.name: p.read_bytes() for p in proj.iterdir() if p.is_file()}
    args = ["export", str(proj / "emo.yaml"), "--data", str(proj / "rows.jsonl"), "--label", "label"]
    assert main([*args, "--out", str(proj), *(["--force"] if force else [])]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "train.jsonl: --out would overwrite a file the spec is built from" in err[0], err
    assert {p.name: p.read_bytes() for p in proj.iterdir() if p.is_file()} == before

    (proj / "train.jsonl").rename(proj / "examples.jsonl")  # now only meta.json, the 'extends' file, is in the way
    (proj / "emo.yaml").write_text("extends: meta.json\nname: emo\nexamples_file: examples.jsonl\n", encoding="utf-8")
    before = {p.name: p.read_bytes() for p in proj.iterdir() if p.is_file()}
    with pytest.raises(InputError, match=r"meta.json: --out would overwrite a file the spec is built from"):
        export(load_spec(proj / "emo.yaml"), DataFile(proj / "rows.jsonl"), "label", proj, force=force)
    assert {p.name: p.read_bytes() for p in proj.iterdir() if p.is_file()} == before
    out = tmp_path / "out"  # elsewhere, the export goes ahead
    export(load_spec(proj / "emo.yaml"), DataFile(proj / "rows.jsonl"), "label", out, force=force)
    assert (out / "train.jsonl").exists() and (out / "meta.json").exists()


# ============================================================================ 11. tune never clobbers its inputs


def _no_tune(monkeypatch: pytest.MonkeyPatch) -> None:
    import promptdsl.tune as tune_pkg

    monkeypatch.setattr(tune_pkg, "tune", lambda *a, **k: pytest.fail("tune() ran: --out was not refused"))


@pytest.mark.parametrize("force", [True, False])
def test_tune_out_is_never_the_data_eval_spec_or_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    """The reviewer's case: --out l2.jsonl --force overwrote the training rows with a 138 MiB GGUF."""
    _no_tune(monkeypatch)
    proj = _spec_folder(tmp_path)
    data = proj / "rows.jsonl"
    evalf = _write_rows(tmp_path / "val.jsonl", ROWS[:2])
    model = tmp_path / "base.gguf"
    model.write_bytes(b"GGUF base")
    (tmp_path / "data.gguf").symlink_to(data)
    os.link(evalf, tmp_path / "eval.gguf")
    (tmp_path / "model.gguf").symlink_to(model)
    before = {p: p.read_bytes() for p in (data, evalf, model, *proj.iterdir()) if p.is_file()}
    base = ["tune", str(proj / "emo.yaml"), "--data", str(data), "--label", "label", "--eval", str(evalf),
            "--model", str(model), "--steps", "1", *(["--force"] if force else [])]
    cases = [
        (data, "--out writes a GGUF model; give it a .gguf name, not 'rows.jsonl'"),
        (proj / "emo.yaml", "give it a .gguf name, not 'emo.yaml'"),
        (tmp_path / "tuned.bin", "give it a .gguf name, not 'tuned.bin'"),
        (tmp_path / "data.gguf", "data.gguf: --out would overwrite the --data file; choose another --out"),
        (tmp_path / "eval.gguf", "eval.gguf: --out would overwrite the --eval file"),
        (tmp_path / "sub" / ".." / "base.gguf", "--out is the model being tuned; give another file"),
        (tmp_path / "model.gguf", "--out is the model being tuned; give another file"),
    ]
    for out, message in cases:
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert main([*base, "--out", str(out)]) == 2, out
        err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith("promptdsl: error: ") and message in err[0], (out, err)
    # the spec's examples file and its 'extends' file, reached by links named .gguf
    for name in ("train.jsonl", "meta.json"):
        link = tmp_path / f"{name}.gguf"
        link.symlink_to(proj / name)
        assert main([*base, "--out", str(link)]) == 2
        err = _err_lines(capsys)
        assert len(err) == 1 and "--out would overwrite a file the spec is built from" in err[0], err
    assert {p: p.read_bytes() for p in before} == before


@needs_extra
def test_the_library_refuses_an_out_that_is_an_input_before_any_model_work(
    tmp_path: Path, fake_tune: dict[str, Any]
) -> None:
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    (tmp_path / "t.gguf").symlink_to(data)
    listener = Stages()
    with pytest.raises(InputError, match=r"t.gguf: --out would overwrite the --data file") as e:
        _tune(tmp_path, data, out=tmp_path / "t.gguf", listener=listener)
    with pytest.raises(InputError, match=r"--out writes a GGUF model; give it a .gguf name"):
        _tune(tmp_path, data, out=tmp_path / "t.jsonl", listener=listener)
    evalf = _write_rows(tmp_path / "v.jsonl", ROWS)
    (tmp_path / "v.gguf.ckpt").symlink_to(evalf)  # its checkpoint would be written over the --eval file
    with pytest.raises(InputError, match=r"v.gguf.ckpt: --out would overwrite the --eval file"):
        _tune(tmp_path, data, out=tmp_path / "v.gguf", eval_data=DataFile(evalf), listener=listener)
    assert e.value.exit_code == 2 and listener.stages == [] and FakeTokens.made == 0
    assert data.read_text() == "".join(json.dumps(r) + "\n" for r in ROWS) and not fake_tune["written"]


# ============================================================================ 12. SIGTERM and SIGHUP stop as Ctrl+C does


def _signal_at(monkeypatch: pytest.MonkeyPatch, sig: int, step: int = 0, stage: str = "") -> dict[str, bool]:
    """Send ``sig`` to this process at training step ``step`` (the step's callback), or when the CLI
    listener hears a stage starting with ``stage``; until ``armed["on"]`` is set False."""
    armed = {"on": True}
    import promptdsl.tune.train as train_mod
    from promptdsl.cli.tune_progress import CliListener

    real_train = train_mod.train

    def train(*a: Any, on_step: Any = None, **k: Any) -> Any:
        def hook(s: int, total: int, loss: float) -> None:
            if on_step is not None:
                on_step(s, total, loss)
            if s == step and armed["on"]:
                os.kill(os.getpid(), sig)
                threading.Event().wait(0.05)  # the handler runs in the main thread: this one

        return real_train(*a, on_step=hook, **k)

    monkeypatch.setattr(train_mod, "train", train)
    real_stage = CliListener.stage

    def on_stage(self: Any, text: str) -> None:
        real_stage(self, text)
        if stage and text.startswith(stage) and armed["on"]:
            os.kill(os.getpid(), sig)
            threading.Event().wait(0.05)

    monkeypatch.setattr(CliListener, "stage", on_stage)
    return armed


def _tune_cli(tmp_path: Path, *extra: str) -> list[str]:
    data = _write_rows(tmp_path / "t.jsonl", ROWS)
    return ["tune", str(EMOTION), "--data", str(data), "--label", "label", "--out", str(tmp_path / "tuned.gguf"),
            "--steps", "4", "--batch", "2", "--threads", "1", *extra]


@needs_extra
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_during_training_saves_a_checkpoint_like_ctrl_c(
    tmp_path: Path, fake_tune: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    sig: signal.Signals,
) -> None:
    """`kill PID` (a supervisor, timeout) killed tune silently (exit 143), losing the training."""
    armed = _signal_at(monkeypatch, sig, step=2)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main(_tune_cli(tmp_path)) == 128 + sig
    err = _err_lines(capsys)
    assert (f"promptdsl: interrupted by {sig.name}: stopped at step 2; checkpoint saved to "
            f"{tmp_path / 'tuned.gguf.ckpt'} (run again with --resume)") in err, err
    assert (tmp_path / "tuned.gguf.ckpt").is_file() and not fake_tune["written"]
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are put back
    armed["on"] = False
    assert main([*_tune_cli(tmp_path), "--resume"]) == 0  # ... and it resumes
    assert fake_tune["written"] == [tmp_path / "tuned.gguf"]


@needs_extra
def test_sigterm_before_training_stops_with_143_and_saves_nothing(
    tmp_path: Path, fake_tune: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _signal_at(monkeypatch, signal.SIGTERM, stage="loading the model into torch")
    gc.disable()  # the KeyboardInterrupt must not land in a gc callback (see the Ctrl+C handler test)
    try:
        code = main(_tune_cli(tmp_path))
    finally:
        gc.enable()
    err = _err_lines(capsys)
    assert code == 143 and any(x.startswith("promptdsl: interrupted by SIGTERM: stopped before training") for x in err)
    assert not (tmp_path / "tuned.gguf.ckpt").exists() and not fake_tune["written"]
