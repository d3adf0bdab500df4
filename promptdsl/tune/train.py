"""LoRA tuning of a GGUF model on a spec's compiled prompts, written back as a GGUF.

Token ids come from llama.cpp itself (the backend that will run the model), so training sees
exactly the tokens inference sees; transformers' tokenizer read from the same GGUF is checked
against them, and the torch model's logits against llama.cpp's, before any step is taken.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..export import InstructionRow
from ..prompt import Prompt
from .config import TuneConfig
from .errors import TuneError as TuneError
from .errors import TuneInterrupted as TuneInterrupted
from .errors import TuneStopped as TuneStopped
from .gguf_io import GGUFModel, GGUFModelError
from .loss import lm_align_loss, target_masks

#: Batches are formed by length within pools of this many batches (see :func:`batches`).
BUCKET_POOL = 16

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Sequence_:
    """One training sequence: prompt tokens then response tokens (answer + end of turn)."""

    tokens: tuple[int, ...]
    prompt_len: int

    @property
    def response_len(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)  # one per step
    seconds: float = 0.0
    resumed_at: int = 0
    #: Saves a checkpoint of the finished training (set by :func:`train`): when the GGUF cannot be
    #: written, ``--resume`` then only has to write it.
    save: Callable[[], None] | None = field(default=None, repr=False, compare=False)


# ============================================================================ llama.cpp side


class LlamaTokens:
    """The llamacpp backend's own tokenization of prompts and answers: the exact ids inference uses."""

    def __init__(self, model_path: Path, threads: int) -> None:
        from promptdsl_llamacpp import LlamaCppBackend

        self.backend = LlamaCppBackend(str(model_path), {"n_threads": threads})
        self.end_of_turn = self.backend.end_of_turn_id

    def sequence(self, prompt: Prompt, response: str) -> Sequence_:
        head = self.backend.prompt_ids(prompt)
        tail = self.backend.continuation_ids(response)
        return Sequence_((*head, *tail, self.end_of_turn), len(head))

    def text(self, prompt: Prompt, response: str) -> str:
        return self.backend.prompt_text(prompt) + response

    def tokenize_text(self, text: str) -> list[int]:
        return self.backend.text_ids(text)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        return self.backend.next_token_logits(tokens)


def encode(
    rows: Sequence[InstructionRow],
    tok: LlamaTokens,
    max_tokens: int,
    source: str,
    stop: threading.Event | None = None,
) -> list[Sequence_]:
    """Each row's tokens; a row longer than ``max_tokens`` stops with one line naming it in ``source``."""
    out = []
    for r in rows:
        if stop is not None and stop.is_set():
            raise TuneStopped("stopped before training started (while tokenizing); nothing was saved")
        seq = tok.sequence(r.prompt, r.response)
        if len(seq.tokens) > max_tokens:
            raise TuneError(
                f"{source}: {r.where()}: {len(seq.tokens)} tokens (prompt and answer), more than --max-tokens "
                f"{max_tokens}; shorten the row or raise --max-tokens"
            )
        out.append(seq)
    return out


@dataclass
class TokenizerCheck:
    texts: int
    mismatches: int
    first: str | None = None  # the first text that tokenizes differently


def check_tokenizer(
    model_path: Path, texts: Sequence[str], tok: LlamaTokens, stop: threading.Event | None = None
) -> TokenizerCheck:
    """transformers' tokenizer (read from the GGUF, offline) against llama.cpp's ids, text by text."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        hf = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name, local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a file it cannot convert
        raise TuneError(f"transformers cannot read the tokenizer of {model_path.name}: {exc}") from None
    check = TokenizerCheck(len(texts), 0)
    for text in texts:
        if stop is not None and stop.is_set():
            raise TuneStopped("stopped before training started (while checking the tokenizer); nothing was saved")
        if list(hf.encode(text, add_special_tokens=False)) != tok.tokenize_text(text):
            check.mismatches += 1
            check.first = check.first or text
    return check


# ============================================================================ torch side


def load_torch_model(model_path: Path) -> tuple[GGUFModel, Any]:
    try:
        gg = GGUFModel(model_path)
        return gg, gg.torch_model()
    except GGUFModelError as exc:
        raise TuneError(str(exc)) from None


def logits_agree(model: Any, tok: LlamaTokens, tokens: Sequence[int]) -> float:
    """Correlation of torch's and llama.cpp's next-token logits after ``tokens`` (≈1 when the
    weights, their Q/K order and the architecture match)."""
    with torch.no_grad():
        mine = model(torch.tensor([list(tokens)])).logits[0, -1].double().numpy()
    theirs = tok.logits(tokens).astype(np.float64)
    return float(np.corrcoef(mine, theirs)[0, 1])


def add_lora(model: Any, config: TuneConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    lora = LoraConfig(r=config.rank, lora_alpha=2 * config.rank, lora_dropout=0.0, target_modules=list(TARGETS))
    with warnings.catch_warnings():  # peft calls a transformers name deprecated in v5: not the user's concern
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*gradient_checkpointing.*")
        return get_peft_model(model, lora)


def batches(lengths: Sequence[int], config: TuneConfig, total: int) -> list[list[int]]:
    """The row indices of every step: the same for a seed on every resume.

    Each epoch is shuffled, cut into pools of ``BUCKET_POOL`` batches, and each pool is sorted by
    length before it is cut into batches (whose order is shuffled again): a batch holds rows of
    similar length, so little of each step is spent on padding (a third fewer tokens on tweets),
    while every row is still seen once per epoch in a random context.
    """
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < total:
        rng = random.Random(config.seed * 1_000_003 + epoch)
        idx = list(range(len(lengths)))
        rng.shuffle(idx)
        pool = BUCKET_POOL * config.batch
        chunks: list[list[int]] = []
        for start in range(0, len(idx), pool):
            part = sorted(idx[start : start + pool], key=lambda i: lengths[i])
            chunks += [part[j : j + config.batch] for j in range(0, len(part), config.batch)]
        rng.shuffle(chunks)  # the one short batch of an epoch (rows % batch) may come anywhere
        plan += chunks
        epoch += 1
    return plan[:total]


def collate(
    seqs: Sequence[Sequence_], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and the target masks (every target, response targets) of
    :func:`~promptdsl.tune.loss.target_masks`; padding is known by length, not id."""
    width = max(len(s.tokens) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s.tokens)] = torch.tensor(s.tokens)
        mask[i, : len(s.tokens)] = 1
    every, response = target_masks([s.prompt_len for s in seqs], [s.response_len for s in seqs], width)
    return ids, mask, every, response


def _schedule(config: TuneConfig, total: int) -> Callable[[int], float]:
    warm = max(1, round(config.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))

    return factor


def sequences_hash(seqs: Sequence[Sequence_]) -> str:
    """sha256 of the training sequences (every token and where each answer starts): what is trained."""
    h = hashlib.sha256()
    for s in seqs:
        h.update(np.asarray([s.prompt_len, len(s.tokens), *s.tokens], dtype=np.int64).tobytes())
    return h.hexdigest()


#: What each part of a run's identity (see :func:`promptdsl.tune.tune`) is called when it changed.
IDENT_NAMES = {
    "spec": "the spec",
    "data": "the --data content",
    "label": "--label",
    "model": "the model",
    "rows": "the number of training rows",
    "sequences": "the training rows' tokens",
}


def ident_changes(saved: Any, current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's identity and this run's, in words."""
    if not isinstance(saved, dict):
        return ["the promptdsl version that wrote it"]
    changed = []
    for key, value in current.items():
        if key == "settings" and isinstance(saved.get(key), dict):
            old = saved[key]
            for name in value:
                if old.get(name) != value[name]:
                    flag = "--" + name.replace("_", "-")
                    changed.append(f"{flag} {old.get(name)} -> {value[name]}")
        elif saved.get(key) != value:
            changed.append(IDENT_NAMES.get(key, key))
    return changed


def train(
    model: Any,
    seqs: Sequence[Sequence_],
    config: TuneConfig,
    *,
    pad: int,
    checkpoint: Path,
    ident: dict[str, Any],
    resume: bool = False,
    stop: threading.Event | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainLog:
    """Run the steps; ``stop`` set (Ctrl+C) saves a checkpoint at the step boundary and raises.

    A non-finite loss or gradient stops with :class:`TuneError` (exit 1) before it reaches the
    weights. ``ident`` names what the run is made of (the spec, data, label, model, settings): a
    checkpoint made with another one is refused on ``--resume``, naming what changed.
    """
    total = config.total_steps(len(seqs))
    plan = batches([len(s.tokens) for s in seqs], config, total)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(config, total))
    log = TrainLog()
    start_step = 0
    if resume:
        start_step = _load_checkpoint(checkpoint, model, opt, sched, log, ident)
        log.resumed_at = start_step
    if on_step is not None and start_step:
        on_step(start_step, total, log.losses[-1] if log.losses else float("nan"))
    model.train()
    t0 = time.perf_counter()
    for step in range(start_step, total):
        if stop is not None and stop.is_set():
            log.seconds += time.perf_counter() - t0
            if step == start_step:  # nothing done since the start (or the checkpoint): nothing to save
                kept = f"; checkpoint {checkpoint} kept (run again with --resume)" if start_step else ""
                raise TuneStopped(f"stopped before training step {step + 1}; nothing new was saved{kept}")
            _save_checkpoint(checkpoint, step, model, opt, sched, log, ident)
            raise TuneInterrupted(step, checkpoint)
        ids, mask, every, response = collate([seqs[i] for i in plan[step]], pad)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = lm_align_loss(logits, ids, every, response, config.alpha)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise _diverged(step, f"the loss is {value}", config)
        loss.backward()  # type: ignore[no-untyped-call]
        norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        if not math.isfinite(norm):
            raise _diverged(step, f"the gradient is {norm}", config)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        log.losses.append(value)
        if on_step is not None:
            on_step(step + 1, total, value)
    log.seconds += time.perf_counter() - t0
    model.eval()
    log.save = lambda: _save_checkpoint(checkpoint, total, model, opt, sched, log, ident)
    return log


def _diverged(step: int, what: str, config: TuneConfig) -> TuneError:
    """Training went non-finite: stop before the weights take it (exit 1, nothing written)."""
    hint = "a lower --lr" + (" or --alpha" if config.alpha > 1 else "")
    return TuneError(
        f"training diverged at step {step + 1}: {what}; stopped, no model was written (try {hint})", exit_code=1
    )


def _lora_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _save_checkpoint(
    path: Path, step: int, model: Any, opt: Any, sched: Any, log: TrainLog, ident: dict[str, Any]
) -> None:
    state = {
        "ident": ident,
        "step": step,
        "lora": _lora_state(model),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "log": {"losses": list(log.losses), "seconds": log.seconds, "resumed_at": log.resumed_at},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:  # torch wraps a missing folder or a full disk in RuntimeError
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise TuneError(f"cannot save checkpoint {path} at step {step}: {why}", exit_code=1) from None
    finally:
        tmp.unlink(missing_ok=True)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TuneError(f"--resume: no checkpoint at {path}")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a damaged file can fail in many ways
        raise TuneError(f"--resume: cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict):
        raise TuneError(f"--resume: {path} is not a promptdsl tuning checkpoint")
    return state


def check_checkpoint(path: Path, ident: dict[str, Any]) -> None:
    """Refuse a checkpoint whose run differs from ``ident`` in any part ``ident`` holds (so far),
    naming what changed: --resume must continue the same run."""
    _check_ident(path, _read_checkpoint(path).get("ident"), ident)


def _check_ident(path: Path, saved: Any, ident: dict[str, Any]) -> None:
    changed = ident_changes(saved, ident)
    if changed:
        raise TuneError(
            f"--resume: checkpoint {path} was made with other arguments or inputs (changed: "
            f"{', '.join(changed)}); run with the same ones, or drop --resume"
        )


def _load_checkpoint(path: Path, model: Any, opt: Any, sched: Any, log: TrainLog, ident: dict[str, Any]) -> int:
    state = _read_checkpoint(path)
    _check_ident(path, state.get("ident"), ident)
    if state.get("ident") != ident:  # the same parts, but more of them: another version's checkpoint
        _check_ident(path, None, ident)
    model.load_state_dict(state["lora"], strict=False)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    log.losses = list(state["log"]["losses"])
    log.seconds = float(state["log"]["seconds"])
    return int(state["step"])


def lora_deltas(model: Any, gg: GGUFModel) -> dict[str, np.ndarray]:
    """Each LoRA-wrapped linear's change ``B·A·scale``, mapped to its GGUF tensor and layout."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            layer: Any = module  # every LoRA linear has get_delta_weight
            with torch.no_grad():
                delta = layer.get_delta_weight("default").float().numpy()
            gguf_name, arranged = gg.to_gguf_layout(name, delta)
            out[gguf_name] = arranged
    return out


def check_finite(deltas: dict[str, np.ndarray]) -> None:
    """A change holding NaN or infinity is refused (exit 1): such a model would only fail later,
    at its first answer."""
    for name, delta in deltas.items():
        if not np.isfinite(delta).all():
            raise TuneError(f"the tuned change of {name} is not finite; no model was written", exit_code=1)


def write_gguf(gg: GGUFModel, out: Path, deltas: dict[str, np.ndarray], out_type: str, meta: dict[str, str]) -> None:
    """Write to a temporary name and rename: an interrupted write never leaves a broken ``out``."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        gg.write(tmp, deltas, out_type=out_type, extra=meta)
        tmp.replace(out)
    except OSError as exc:
        raise TuneError(f"cannot write {out}: {exc.strerror or exc}", exit_code=1) from None
    finally:
        tmp.unlink(missing_ok=True)
