"""Instruction tuning: the weighted objective (fast tier, needs torch) and an end-to-end run that
proves the model learns a task it could not do (model tier, needs the [tune] extra)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from promptdsl import load_spec

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason='torch is not installed (pip install -e ".[tune]")')


# ============================================================================ the objective


def _random_batch(lengths: list[tuple[int, int]], vocab: int = 11, seed: int = 0):  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(seed)
    width = max(p + r for p, r in lengths) + 2  # padding after every sequence
    ids = torch.randint(0, vocab, (len(lengths), width), generator=g)
    logits = torch.randn(len(lengths), width, vocab, generator=g)
    return ids, logits, width


@needs_torch
def test_alpha_zero_is_plain_lm_loss_over_the_real_tokens() -> None:
    import torch
    import torch.nn.functional as F

    from promptdsl.tune.loss import lm_align_loss, target_masks

    lengths = [(5, 2), (3, 4), (6, 1)]
    ids, logits, width = _random_batch(lengths)
    every, response = target_masks([p for p, _ in lengths], [r for _, r in lengths], width)
    got = lm_align_loss(logits, ids, every, response, alpha=0.0)
    # Reference: mean cross-entropy over every next-token target inside each sequence.
    terms = [F.cross_entropy(logits[i, t - 1], ids[i, t]) for i, (p, r) in enumerate(lengths) for t in range(1, p + r)]
    assert torch.allclose(got, torch.stack(terms).mean(), atol=1e-6)


@needs_torch
def test_loss_is_lm_loss_plus_alpha_times_response_loss() -> None:
    """L = L_LM + α·L_align, each a token mean over the batch; L/α tends to the response-only loss."""
    import torch
    import torch.nn.functional as F

    from promptdsl.tune.loss import lm_align_loss, target_masks

    lengths = [(5, 2), (3, 4), (6, 1)]
    ids, logits, width = _random_batch(lengths, seed=1)
    every, response = target_masks([p for p, _ in lengths], [r for _, r in lengths], width)
    resp = [F.cross_entropy(logits[i, t - 1], ids[i, t]) for i, (p, r) in enumerate(lengths) for t in range(p, p + r)]
    allt = [F.cross_entropy(logits[i, t - 1], ids[i, t]) for i, (p, r) in enumerate(lengths) for t in range(1, p + r)]
    l_align, l_lm = torch.stack(resp).mean(), torch.stack(allt).mean()
    for alpha in (0.5, 4.0, 1e4):
        got = lm_align_loss(logits, ids, every, response, alpha)
        assert torch.allclose(got, l_lm + alpha * l_align, rtol=1e-5)
    assert abs(float(lm_align_loss(logits, ids, every, response, 1e6) / 1e6 - l_align)) < 1e-4


@needs_torch
def test_masks_keep_end_of_turn_even_when_it_is_the_pad_id() -> None:
    from promptdsl.tune.train import Sequence_, collate

    eot = 2
    seqs = [Sequence_((1, 7, 8, 9, eot), 3), Sequence_((1, 7, eot), 2)]
    ids, mask, every, response = collate(seqs, pad=eot)
    assert ids.tolist() == [[1, 7, 8, 9, 2], [1, 7, 2, 2, 2]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # targets are tokens 1..: every real token is an L_LM target, answer + end of turn L_align ones
    assert every.tolist() == [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]]
    assert response.tolist() == [[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]]


@needs_torch
def test_negative_alpha_is_refused() -> None:
    import torch

    from promptdsl.tune.loss import lm_align_loss, target_masks

    every, response = target_masks([2], [1], 3)
    for alpha in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            lm_align_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), every, response, alpha=alpha)


@needs_torch
def test_batches_see_every_row_once_per_epoch_with_little_padding() -> None:
    from promptdsl.tune.config import TuneConfig
    from promptdsl.tune.train import batches

    rng = random.Random(1)
    lengths = [rng.randint(20, 120) for _ in range(1000)]
    config = TuneConfig(batch=8, epochs=1)
    plan = batches(lengths, config, 2 * config.total_steps(len(lengths)))
    first, second = plan[:125], plan[125:]
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(1000))  # each row exactly once
    assert first != second and plan == batches(lengths, config, 250)  # reshuffled; the same on a resume
    padded = sum(max(lengths[i] for i in b) * len(b) for b in first)
    assert padded < 1.1 * sum(lengths)  # random batches of 8 would pad these lengths by ~60%
    assert len(plan) == 250 and all(1 <= len(b) <= 8 for b in plan)


@needs_torch
def test_qk_permutation_round_trips() -> None:
    import numpy as np

    from promptdsl.tune.gguf_io import permute, unpermute

    w = np.arange(12 * 4, dtype=np.float32).reshape(12, 4)  # 3 heads of 4 rows
    p = permute(w, 3)
    assert not np.array_equal(p, w)
    assert np.array_equal(unpermute(p, 3), w)
    # llama.cpp interleaves each head's two rotary halves: rows 0,2,1,3 of head 0
    assert p[:4, 0].tolist() == [0.0, 8.0, 4.0, 12.0]


def test_tune_without_the_extra_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import promptdsl.tune as tune

    monkeypatch.setattr(tune, "missing_extra", lambda: ["peft"])
    from promptdsl.datafile import DataFile
    from promptdsl.errors import PromptDSLError

    spec = load_spec(Path("specs/emotion.yaml"))
    with pytest.raises(PromptDSLError, match=r"missing: peft .*\[tune\]"):
        tune.tune(spec, DataFile("tests/data/emotion/train.jsonl"), "label", Path("x.gguf"))


# ============================================================================ it learns


NOUNS = {
    "zorp": ["banana", "apple", "cherry", "mango", "peach", "grape", "lemon", "plum"],
    "blick": ["truck", "bicycle", "train", "boat", "tractor", "scooter", "bus", "airplane"],
}
TRAIN_FRAMES = ["I bought a {} yesterday.", "The {} was on the table.", "She painted a {} blue.", "We talked about the {}."]
TEST_FRAMES = ["Look, a {}!", "My uncle likes every {} he sees."]

SPEC = """\
version: 1
name: zorpblick
mode: completion
instruction: Answer zorp or blick.
inputs:
  text: {type: string}
template: |-
  Text: {{ text }}
  Label:
output:
  type: choice
  choices: [zorp, blick]
"""


def _rows(frames: list[str]) -> list[dict[str, str]]:
    rows = [{"text": f.format(n), "label": label} for label, nouns in NOUNS.items() for n in nouns for f in frames]
    random.Random(0).shuffle(rows)
    return rows


needs_extra_reason = ""
if not HAS_TORCH or any(importlib.util.find_spec(m) is None for m in ("transformers", "peft", "gguf", "llama_cpp")):
    needs_extra_reason = 'the [tune] extra is not installed (pip install -e ".[tune]")'


@pytest.mark.model
@pytest.mark.skipif(bool(needs_extra_reason), reason=needs_extra_reason or "-")
def test_tuning_teaches_made_up_labels_through_the_llamacpp_backend(tmp_path: Path) -> None:
    """Made-up label words for fruit vs vehicles: the base model is at chance; a few dozen LoRA
    steps make it near perfect on sentences sharing no n-gram with the training ones."""
    from promptdsl.datafile import DataFile
    from promptdsl.evaluate import ChoiceMetrics
    from promptdsl.export import Reference, contamination
    from promptdsl.loader import loads_spec
    from promptdsl.tune import tune
    from promptdsl.tune.config import TuneConfig

    train, test = _rows(TRAIN_FRAMES), _rows(TEST_FRAMES)
    ref = Reference("train")
    for r in train:
        ref.add(r["text"])
    report = contamination([r["text"] for r in test], [ref])
    assert report.overlaps[0].exact == 0 and report.overlaps[0].ngram == {8: 0, 13: 0}
    for name, rows in (("train", train), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = loads_spec(SPEC, file=str(tmp_path / "zorpblick.yaml"))
    out = tmp_path / "tuned.gguf"
    result = tune(
        spec, DataFile(tmp_path / "train.jsonl"), "label", out,
        TuneConfig(steps=24, batch=8, lr=2e-3, rank=8, alpha=4.0),
        eval_data=DataFile(tmp_path / "test.jsonl"),
    )
    assert isinstance(result.before, ChoiceMetrics) and isinstance(result.after, ChoiceMetrics)
    assert result.before.accuracy <= 0.7, result.before.format()
    assert result.after.accuracy >= 0.95, result.after.format()
    assert result.losses[-1] < result.losses[0]
    assert result.tokenizer_mismatches == 0
    assert result.logits_correlation > 0.99
    assert out.is_file() and not out.with_name(out.name + ".ckpt").exists()


@pytest.mark.skipif(bool(needs_extra_reason), reason=needs_extra_reason or "-")
def test_tune_cli_refuses_to_clobber_and_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main

    out = tmp_path / "tuned.gguf"
    out.write_bytes(b"keep")
    args = ["tune", "specs/emotion.yaml", "--data", "tests/data/emotion/train.jsonl", "--label", "label", "--out", str(out)]
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep"
    out.unlink()
    assert main([*args, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.skipif(bool(needs_extra_reason), reason=needs_extra_reason or "-")
def test_tune_threads_default_to_the_llamacpp_choice_and_an_explicit_count_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread default is llama.cpp's (load average *and* other programs running now): the
    load average alone, left high by a run that just ended, used to give a quiet 2-core machine 1."""
    import promptdsl_llamacpp
    import torch

    from promptdsl.datafile import DataFile
    from promptdsl.tune import tune
    from promptdsl.tune.train import TuneError

    monkeypatch.setattr(promptdsl_llamacpp, "default_threads", lambda: 3)
    spec = load_spec("specs/emotion.yaml")
    data = DataFile(Path("tests/data/emotion/train.jsonl"))
    base = promptdsl_llamacpp.embedded_model_path()  # --out the model itself: refused after the threads are set
    before = torch.get_num_threads()
    try:
        for given, expected in ((None, 3), (2, 2)):
            with pytest.raises(TuneError, match="--out is the model being tuned"):
                tune(spec, data, "label", base, threads=given)
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
