"""Tuning hyper-parameters, importable without torch (the CLI reads the defaults for its help)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import PromptDSLError

#: Steps when neither steps nor epochs is given: enough for a classification spec to learn its
#: labels (TweetEval emotion: macro-F1 0.19 -> 0.73), about 12 minutes on 2 CPU cores for tweets.
DEFAULT_STEPS = 200
#: More steps than this is a typo (a million steps of batch 8 is weeks of CPU time), and the
#: batch plan is built up front.
MAX_STEPS = 1_000_000
#: LoRA ranks and thread counts beyond these are typos, refused before anything is allocated.
MAX_RANK = 1024
MAX_THREADS = 1024
OUT_TYPES = ("q8_0", "f16")


@dataclass
class TuneConfig:
    """Hyper-parameters. The defaults took the emotion spec past macro-F1 0.68 (docs/tuning.md;
    measured with the earlier weighted-mean objective, not yet re-measured with this one).

    The objective is ``L = L_LM + alpha * L_align`` (:mod:`promptdsl.tune.loss`): ``alpha`` 4
    weighs the mean loss of the answer tokens four times the mean loss of the whole sequence,
    which is what a classification spec needs to learn its labels.

    Every value is checked when the config is made: a bad one raises :class:`PromptDSLError`
    (exit 2) naming the CLI flag, before any model is loaded.
    """

    alpha: float = 4.0  # weight of L_align (the answer tokens' mean loss) against L_LM
    steps: int | None = None  # default: `epochs` over the data when given, else DEFAULT_STEPS
    epochs: float | None = None
    lr: float = 1e-3
    rank: int = 16
    batch: int = 8
    warmup: float = 0.05  # fraction of the steps with a linearly rising learning rate
    seed: int = 0
    max_tokens: int = 512  # longer training sequences (prompt + answer + end of turn) are refused
    out_type: str = "q8_0"  # type of the changed tensors in the written GGUF

    def __post_init__(self) -> None:
        _number("--alpha", self.alpha, low=0.0)
        if self.steps is not None:
            _whole("--steps", self.steps, low=1, high=MAX_STEPS)
        if self.epochs is not None:
            _number("--epochs", self.epochs, low=0.0, strict=True)
        _number("--lr", self.lr, low=0.0, strict=True)
        _whole("--rank", self.rank, low=1, high=MAX_RANK)
        _whole("--batch", self.batch, low=1)
        _number("warmup", self.warmup, low=0.0)
        if self.warmup > 1:
            raise PromptDSLError(f"warmup must be a fraction of the steps, at most 1, not {self.warmup:g}")
        _whole("--seed", self.seed, low=0, high=2**32 - 1)
        _whole("--max-tokens", self.max_tokens, low=1)
        if self.out_type not in OUT_TYPES:
            raise PromptDSLError(f"--out-type must be one of {', '.join(OUT_TYPES)}, not {self.out_type!r}")

    def total_steps(self, rows: int) -> int:
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * rows / self.batch))
        return DEFAULT_STEPS


def _number(flag: str, value: Any, *, low: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PromptDSLError(f"{flag} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise PromptDSLError(f"{flag} must be a finite number, not {value}")
    if value < low or (strict and value == low):
        raise PromptDSLError(f"{flag} must be {'more than' if strict else 'at least'} {low:g}, not {value:g}")


def _whole(flag: str, value: Any, *, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptDSLError(f"{flag} must be a whole number, not {value!r}")
    if value < low:
        raise PromptDSLError(f"{flag} must be at least {low}, not {value}")
    if high is not None and value > high:
        raise PromptDSLError(f"{flag} must be at most {high:,}, not {value:,}")


def check_threads(threads: int | None) -> None:
    """``--threads``: None (the default choice) or a whole number from 1 to :data:`MAX_THREADS`."""
    if threads is not None:
        _whole("--threads", threads, low=1, high=MAX_THREADS)


__all__ = ["DEFAULT_STEPS", "MAX_STEPS", "OUT_TYPES", "TuneConfig", "check_threads"]
