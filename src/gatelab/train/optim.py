"""The optimizer and the learning-rate schedule of :func:`gatelab.train.fit.fit`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from gatelab.train.config import TrainConfig

__all__ = ["adamw", "lr_factor"]


def lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of step ``step`` (for ``LambdaLR``): a linear warmup over
    ``config.warmup`` of the steps, then ``config.schedule`` down to ``config.min_lr``."""
    warm = int(config.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if config.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        decay = (
            0.5 * (1.0 + math.cos(math.pi * progress))
            if config.schedule == "cosine"
            else 1.0 - progress
        )
        return config.min_lr + (1.0 - config.min_lr) * decay

    return factor


def adamw(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW on ``model``'s trainable parameters: decoupled weight decay on matrices and
    embeddings (2-D and up), none on biases and gains."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    # The fused kernel updates all parameters in one pass: on CPU it takes the optimizer
    # step of an embedding model (most parameters, every step) from ~30% to ~10% of the
    # step time. Same update rule; it needs floating-point CPU/CUDA parameters.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)
