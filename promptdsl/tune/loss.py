"""The tuning objective: L = L_LM + α · L_align as per-token weights on one cross-entropy.

Every target token of a sequence gets weight 1 (prompt), 1 + α (response, the end-of-turn token
included) or 0 (padding), and the loss is the weighted mean ``Σ w·ℓ / Σ w``. With α = 0 that is
plain language-model training over the whole sequence; as α grows the response tokens dominate
and it approaches response-only (instruction) training. Padding is found from the lengths, never
from the pad id: the pad token may be the end-of-turn token, which must keep its weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def token_weights(prompt_lens: Sequence[int], response_lens: Sequence[int], width: int, alpha: float) -> torch.Tensor:
    """Weights of the *target* positions 1..width-1 of each padded sequence: shape (batch, width-1).

    Target position ``t`` is token ``t`` predicted from tokens ``< t``; the first token (nothing
    before it) is never a target.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, not {alpha}")
    w = torch.zeros(len(prompt_lens), width)
    for i, (p, r) in enumerate(zip(prompt_lens, response_lens, strict=True)):
        w[i, :p] = 1.0
        w[i, p : p + r] = 1.0 + alpha
    return w[:, 1:]


def weighted_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ w·(−log p(x_t | x_<t)) / Σ w`` for logits (batch, width, vocab) of ``input_ids`` (batch, width)."""
    pred = logits[:, :-1, :].float()
    target = input_ids[:, 1:]
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    w = weights.reshape(-1).to(nll.dtype)
    return (nll * w).sum() / w.sum().clamp_min(1e-8)
