"""The tuning objective: ``L = L_LM + α · L_align``.

- ``L_LM`` is the mean next-token loss over every target token of the batch: the instruction
  (the compiled prompt) and the response (the answer and its end-of-turn token).
- ``L_align`` is the mean next-token loss over the response tokens only.

Both are token means over the whole batch (padding excluded), so α is the weight of the answer
tokens' mean loss against the whole sequence's, whatever the lengths: α = 0 is plain
language-model training; as α grows the response term dominates (``L / α → L_align``).
Padding is found from the lengths, never from the pad id: the pad token may be the end-of-turn
token, which is a response target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def target_masks(
    prompt_lens: Sequence[int], response_lens: Sequence[int], width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(every, response)``: 0/1 masks of the *target* positions 1..width-1, shape (batch, width-1).

    Target position ``t`` is token ``t`` predicted from tokens ``< t``; the first token (nothing
    before it) is never a target. ``every`` marks the prompt and response targets, ``response``
    the response ones; padding is 0 in both.
    """
    every = torch.zeros(len(prompt_lens), width)
    response = torch.zeros(len(prompt_lens), width)
    for i, (p, r) in enumerate(zip(prompt_lens, response_lens, strict=True)):
        every[i, : p + r] = 1.0
        response[i, p : p + r] = 1.0
    return every[:, 1:], response[:, 1:]


def lm_align_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, every: torch.Tensor, response: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``L_LM + α · L_align`` for logits (batch, width, vocab) of ``input_ids`` (batch, width),
    with the masks of :func:`target_masks`."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, not {alpha}")
    pred = logits[:, :-1, :].float()
    target = input_ids[:, 1:]
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    every_w = every.reshape(-1).to(nll.dtype)
    response_w = response.reshape(-1).to(nll.dtype)
    l_lm = (nll * every_w).sum() / every_w.sum().clamp_min(1.0)
    if alpha == 0:
        return l_lm
    l_align = (nll * response_w).sum() / response_w.sum().clamp_min(1.0)
    return l_lm + alpha * l_align
