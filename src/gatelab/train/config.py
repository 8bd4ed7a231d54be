"""The settings and the record of :func:`gatelab.train.fit.fit`, as JSON round-trips them:
:class:`TrainConfig` (the ``train`` section of a run folder's ``config.json``) and
:class:`History` (``metrics.json`` and every checkpoint)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gatelab._config import from_config
from gatelab.train import metrics as M

__all__ = ["SCHEDULES", "History", "TrainConfig"]

SCHEDULES = ("cosine", "constant", "linear")


@dataclass
class TrainConfig:
    """How :func:`fit` trains; JSON-serialisable.

    Attributes:
        epochs: passes over the training data (at most, with early stopping).
        batch_size: sequences per step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled decay, on weight matrices and embeddings only.
        clip_norm: clip the global gradient norm to this (None: no clipping).
        schedule: ``"cosine"`` (linear warmup, then cosine decay to ``min_lr`` x lr),
            ``"linear"`` (warmup, then linear decay) or ``"constant"`` (warmup, then flat).
        warmup: fraction of all steps spent warming up linearly from 0.
        min_lr: the final learning rate as a fraction of ``lr``.
        patience: stop after this many epochs without a better validation score (None:
            never stop early). The best weights are kept whenever there is validation data.
        monitor: the validation metric for early stopping and best weights: ``"accuracy"``,
            ``"macro_f1"``, ``"rmse"``, ``"mae"``, ``"loss"``; None picks accuracy for a
            classifier, rmse otherwise.
        seed: seeds the dropout RNG and each epoch's shuffle.
        bucket: group sequences of similar length into batches (less padding, faster).
        label_smoothing: of the cross-entropy loss (classifiers).
        loss: ``"auto"`` (cross-entropy for classifiers, MSE otherwise), ``"mse"``,
            ``"huber"`` (regression).
        eval_batch_size: sequences per step when predicting.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip_norm: float | None = 1.0
    schedule: str = "cosine"
    warmup: float = 0.05
    min_lr: float = 0.0
    patience: int | None = 3
    monitor: str | None = None
    seed: int = 0
    bucket: bool = True
    label_smoothing: float = 0.0
    loss: str = "auto"
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; expected an int >= 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r}; expected an int")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience={self.patience!r}; expected an int >= 1 or None")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr={self.lr!r}; expected a positive number")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r}; expected >= 0")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm={self.clip_norm!r}; expected a positive number or None")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup={self.warmup!r}; expected a fraction in [0, 1)")
        if not 0.0 <= self.min_lr <= 1.0:
            raise ValueError(f"min_lr={self.min_lr!r}; expected a fraction in [0, 1]")
        if self.monitor is not None and self.monitor not in M.GREATER_IS_BETTER:
            raise ValueError(
                f"monitor={self.monitor!r}; expected one of {', '.join(M.GREATER_IS_BETTER)}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing!r}; expected [0, 1)")
        if self.loss not in ("auto", "mse", "huber"):
            raise ValueError(f"loss={self.loss!r}; expected 'auto', 'mse' or 'huber'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config :meth:`to_dict` wrote (:func:`gatelab._config.from_config`: an
        unknown key is an error naming it, never dropped)."""
        return from_config(cls, d, "train config")


@dataclass
class History:
    """What :func:`fit` did: one dict of logs per epoch, and the best epoch."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    monitor: str | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return from_config(cls, d, "training history")
