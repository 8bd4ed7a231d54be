"""Prefix masks of padded batches: which steps are real, and each sequence reversed within
its own length.

A batch of sequences of different lengths is time-major ``(T, B, *)`` with ``lengths
(B,)``: steps ``t >= lengths[b]`` are padding. The layers, every backend and the analyses
share these three helpers.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mask_padding", "reverse_padded", "step_mask"]


def step_mask(lengths: Tensor | None, T: int) -> Tensor | None:
    """``(T, B, 1)`` bool, True on real steps; None when every step is real."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=lengths.device)
    return (steps[:, None] < lengths[None, :]).unsqueeze(-1)


def mask_padding(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``x (T, B, I)`` with padded steps zeroed: what stands there (NaN, inf) then reaches
    neither the outputs nor any gradient, as with a PackedSequence."""
    mask = step_mask(lengths, x.shape[0])
    return x if mask is None else torch.where(mask, x, 0.0)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x (T, B, *)`` within its own length; padding stays put.

    Its own inverse. Padded steps keep their place, so a reversed batch is still
    prefix-masked, which is what every backend expects.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]  # (T, 1)
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    index = index.reshape(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)
