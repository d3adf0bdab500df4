"""Tuning hyper-parameters, importable without torch (the CLI reads the defaults for its help)."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Steps when neither steps nor epochs is given: enough for a classification spec to learn its
#: labels (TweetEval emotion: macro-F1 0.19 -> 0.73), about 12 minutes on 2 CPU cores for tweets.
DEFAULT_STEPS = 200


@dataclass
class TuneConfig:
    """Hyper-parameters. The defaults take the emotion spec past macro-F1 0.68 (docs/tuning.md).

    ``alpha`` 4 puts most of the weight on the answer tokens, which is what a classification
    spec needs to learn: at the same budget it beats alpha 0 and 1 (see docs/tuning.md).
    """

    alpha: float = 4.0  # response tokens weigh 1 + alpha, prompt tokens 1
    steps: int | None = None  # default: `epochs` over the data when given, else DEFAULT_STEPS
    epochs: float | None = None
    lr: float = 1e-3
    rank: int = 16
    batch: int = 8
    warmup: float = 0.05  # fraction of the steps with a linearly rising learning rate
    seed: int = 0
    max_tokens: int = 512  # longer training sequences are refused
    out_type: str = "q8_0"  # type of the changed tensors in the written GGUF

    def total_steps(self, rows: int) -> int:
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * rows / self.batch))
        return DEFAULT_STEPS


__all__ = ["DEFAULT_STEPS", "TuneConfig"]
