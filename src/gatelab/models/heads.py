"""LSTM -> Dense models: sequence classifier, sequence regressor, multi-step forecaster.

Every model is ``input layer -> gatelab.LSTM -> pooling -> dropout -> Dense``:

- the input layer is an embedding for token ids ``(B, T)`` (``vocab_size > 0``), or a
  linear projection for real-valued series ``(B, T, C)`` (``vocab_size == 0``;
  ``embedding_dim == 0`` feeds the raw channels to the LSTM);
- the LSTM is :class:`gatelab.LSTM`, so any variant and backend runs underneath;
- pooling (``last``, ``mean`` or ``max``) sees only the real steps of each sequence: a
  padded batch with ``lengths`` is packed before the LSTM, so the result does not depend
  on how much padding a batch carries.

One :class:`ModelConfig`, passed whole and JSON-serialisable, describes any of them;
:func:`build_model` makes the model a config names.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gatelab._config import config_fields
from gatelab.models.kernels import KernelBranch
from gatelab.nn.equations import PRESETS
from gatelab.nn.layers import BACKENDS, LSTM

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "POOLINGS",
    "ConvBranch",
    "ForecastNet",
    "ModelConfig",
    "SequenceClassifier",
    "SequenceRegressor",
    "build_model",
]

POOLINGS = ("last", "mean", "max")
KINDS = ("classifier", "regressor", "forecaster")
UNK_ID = 1  # gatelab.data.Vocabulary: pad = 0, unk = 1


def _one_of(default: str, choices) -> Any:
    """A config field holding one of ``choices`` (a tuple or a live registry)."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def _count(default: int, minimum: int = 0) -> Any:
    """A config field holding an int ``>= minimum`` (checked in ``__post_init__``)."""
    return dataclasses.field(default=default, metadata={"minimum": minimum})


def _probability(default: float = 0.0) -> Any:
    """A config field holding a probability in ``[0, 1)`` (a dropout rate)."""
    return dataclasses.field(default=default, metadata={"probability": True})


@dataclass
class ModelConfig:
    """Everything that defines an LSTM -> Dense model; JSON-serialisable.

    Attributes:
        kind: ``"classifier"``, ``"regressor"`` or ``"forecaster"`` (see :func:`build_model`).
        output_size: classes (classifier), targets (regressor) or horizon (forecaster).
        vocab_size: ``> 0`` for token-id input ``(B, T)`` (id 0 is padding); ``0`` for
            real-valued input ``(B, T, input_size)``.
        input_size: channels of real-valued input (ignored for tokens).
        embedding_dim: embedding size for tokens; size of the linear input projection for
            real values (``0``: no projection, the LSTM sees the raw channels).
        hidden_size, num_layers, bidirectional, proj_size: of the :class:`gatelab.LSTM`.
        variant, forget_bias, backend: of the :class:`gatelab.LSTM` (a preset name).
        pooling: ``"last"`` (final state of each direction), ``"mean"`` or ``"max"`` over
            the real steps of each sequence.
        dropout: before the Dense head.
        embedding_dropout: element-wise dropout on the embedded / projected input.
        word_dropout: while training, replace each real token by the unknown id (1) with
            this probability (Iyyer et al. 2015; token input only).
        lstm_dropout: between stacked LSTM layers (needs ``num_layers > 1``).
        highway: forecaster only: a linear autoregressive skip from the last ``highway``
            values of channel 0 straight to the horizon (LSTNet's highway, Lai et al. 2018);
            0 turns it off.
        token_features: token input only: this many fixed (not trained) features per
            token id, appended to its embedding; the table ``token_feature_table
            (vocab_size, token_features)`` is a buffer, saved with the weights (e.g. the
            naive-Bayes log-count ratios of :class:`gatelab.TextClassifier`).
        token_feature_sets: how many versions of that table are stacked (``S``): the
            buffer is ``(S * vocab_size, token_features)`` and id ``s * vocab_size + w``
            means word ``w`` read with table ``s`` (its embedding is word ``w``'s). Ids
            below ``vocab_size`` read table 0. TextClassifier uses this for out-of-fold
            ratios: training texts read tables computed without them.
        patch: real-valued input only: the series is cut into non-overlapping patches of
            this many steps, each projected to ``embedding_dim`` (a strided convolution,
            kernel = stride = patch), so the LSTM reads ``ceil(T / patch)`` steps (1: off).
        conv_channels: real-valued input only: a fully convolutional branch beside the
            LSTM (LSTM-FCN, Karim et al. 2017): one block per entry (convolution with
            kernel 8, 5, 3, 3, ... and "same" zero padding, batch norm over the real
            steps, ReLU), global average pooling over the real steps, concatenated with
            the LSTM's pooled features before the Dense head. Empty: no branch.
        conv_pool: the convolutional branch reads the series averaged over windows of
            this many steps (non-overlapping; 1: every step), which bounds its cost on
            long series.
        kernel_features: real-valued input only: a branch of random, fixed, dilated
            kernels with PPV pooling over the real steps (MiniRocket's features, Dempster
            et al. 2021; :class:`gatelab.models.kernels.KernelBranch`) beside the LSTM,
            about this many features into the Dense head; 0: no branch. Its biases come
            from training series (``model.kernels.fit_biases``) before training.
        kernel_length: the series length the branch's dilations are sized for.
        kernel_ridge: classifier only: the branch is a ridge classifier over its features,
            solved in closed form (MiniRocket's ``RidgeClassifierCV``) when
            ``fit_biases`` is given the training targets; its ``output_size`` scores,
            times a temperature fitted to its leave-one-out scores, are ADDED to the
            Dense head's logits (which then reads the LSTM alone) instead of its features
            joining the Dense layer's input.
        head_weight: with ``kernel_ridge``, the Dense head's logits are multiplied by this
            before the ridge's scores are added; 0: the ridge alone decides (the LSTM and
            its head are kept, and train on nothing). A series classifier sets it to 0
            where the LSTM did not help in its inner cross-validation, or where its data
            are too few to run one.
    """

    kind: str = _one_of("classifier", KINDS)
    output_size: int = _count(2, minimum=1)
    vocab_size: int = _count(0)
    input_size: int = _count(1, minimum=1)
    embedding_dim: int = _count(128)
    hidden_size: int = _count(128, minimum=1)
    num_layers: int = _count(1, minimum=1)
    bidirectional: bool = True
    proj_size: int = _count(0)
    variant: str = _one_of("standard", PRESETS)
    forget_bias: float | None = None
    backend: str = _one_of("auto", BACKENDS)
    pooling: str = _one_of("max", POOLINGS)
    dropout: float = _probability(0.5)
    embedding_dropout: float = _probability()
    word_dropout: float = _probability()
    lstm_dropout: float = _probability()
    highway: int = _count(0)
    token_features: int = _count(0)
    token_feature_sets: int = _count(1, minimum=1)
    patch: int = _count(1, minimum=1)
    conv_channels: list[int] = dataclasses.field(default_factory=list)
    conv_pool: int = _count(1, minimum=1)
    kernel_features: int = _count(0)
    kernel_length: int = _count(9, minimum=1)
    kernel_ridge: bool = False
    head_weight: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # the rule each field carries
            value = getattr(self, f.name)
            if "choices" in f.metadata:
                choices = f.metadata["choices"]
                if value not in choices:
                    raise ValueError(f"{f.name}={value!r}; expected one of {', '.join(choices)}")
            elif "minimum" in f.metadata:
                minimum = f.metadata["minimum"]
                if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                    raise ValueError(f"{f.name}={value!r}; expected an int >= {minimum}")
            elif f.metadata.get("probability"):
                if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                    raise ValueError(f"{f.name}={value!r}; expected a probability in [0, 1)")
        if self.lstm_dropout > 0 and self.num_layers == 1:
            raise ValueError(
                f"lstm_dropout={self.lstm_dropout} acts between stacked LSTM layers and "
                "num_layers=1: it would have no effect (use dropout, or num_layers >= 2)"
            )
        if self.vocab_size > 0 and self.embedding_dim == 0:
            raise ValueError("embedding_dim=0 needs real-valued input (vocab_size=0)")
        if self.kind == "classifier" and self.output_size < 2:
            raise ValueError(f"output_size={self.output_size}; a classifier needs >= 2 classes")
        if self.token_features and not self.tokens:
            raise ValueError("token_features needs token input (vocab_size > 0)")
        if self.token_feature_sets > 1 and not self.token_features:
            raise ValueError(
                f"token_feature_sets={self.token_feature_sets} needs token_features > 0"
            )
        if not isinstance(self.conv_channels, (list, tuple)) or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.conv_channels
        ):
            raise ValueError(f"conv_channels={self.conv_channels!r}; expected a list of ints >= 1")
        self.conv_channels = list(self.conv_channels)
        if (self.patch > 1 or self.conv_channels or self.kernel_features) and self.tokens:
            raise ValueError(
                "patch, conv_channels and kernel_features are for real-valued input (vocab_size=0)"
            )
        if self.patch > 1 and self.embedding_dim == 0:
            raise ValueError(f"patch={self.patch} needs embedding_dim > 0 (the patch projection)")
        if self.kernel_ridge and (self.kind != "classifier" or not self.kernel_features):
            raise ValueError("kernel_ridge needs a classifier with kernel_features > 0")
        if isinstance(self.head_weight, bool) or not isinstance(self.head_weight, (int, float)):
            raise ValueError(f"head_weight={self.head_weight!r}; expected a number in [0, 1]")
        if not 0.0 <= self.head_weight <= 1.0:
            raise ValueError(f"head_weight={self.head_weight!r}; expected a number in [0, 1]")
        if self.head_weight != 1.0 and not self.kernel_ridge:
            raise ValueError(f"head_weight={self.head_weight!r} needs kernel_ridge=True")
        if self.highway and (self.kind != "forecaster" or self.vocab_size > 0):
            raise ValueError("highway is for a forecaster on real-valued input")

    @property
    def tokens(self) -> bool:
        """Whether the input is token ids (else real values)."""
        return self.vocab_size > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The config a :meth:`to_dict` wrote; unknown keys are an error.

        A saved ``lstm_dropout > 0`` with ``num_layers=1`` (older run folders; it had no
        effect) is read as 0 with a logged warning; a new config refuses it."""
        d = config_fields(cls, d, "model config")
        if d.get("lstm_dropout", 0.0) and d.get("num_layers", 1) == 1:
            # run folders written before one-layer lstm_dropout was refused: it had no
            # effect (zeroed), so it is read as 0
            logger.warning(
                "the model config has lstm_dropout=%r with num_layers=1, which has no effect "
                "(a run folder from an older gatelab); read as lstm_dropout=0",
                d["lstm_dropout"],
            )
            d["lstm_dropout"] = 0.0
        return cls(**d)


class _SequenceModel(nn.Module):
    """input layer -> LSTM -> pooling -> dropout -> Dense ``(B, D*P) -> (B, out)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.tokens:
            self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim, padding_idx=0)
            lstm_in = c.embedding_dim + c.token_features
            if c.token_features:
                table = torch.zeros(c.token_feature_sets * c.vocab_size, c.token_features)
                self.register_buffer("token_feature_table", table)
        elif c.patch > 1:
            self.patch_projection = nn.Conv1d(
                c.input_size, c.embedding_dim, kernel_size=c.patch, stride=c.patch
            )
            lstm_in = c.embedding_dim
        elif c.embedding_dim > 0:
            self.projection = nn.Linear(c.input_size, c.embedding_dim)
            lstm_in = c.embedding_dim
        else:
            lstm_in = c.input_size
        self.embedding_dropout = nn.Dropout(c.embedding_dropout)
        self.lstm = LSTM(
            lstm_in,
            c.hidden_size,
            c.num_layers,
            batch_first=True,
            dropout=c.lstm_dropout,
            bidirectional=c.bidirectional,
            proj_size=c.proj_size,
            variant=c.variant,
            forget_bias=c.forget_bias,
            backend=c.backend,
        )
        self.dropout = nn.Dropout(c.dropout)
        self.features = self.lstm.output_size * self.lstm.num_directions
        if c.conv_channels:
            self.conv = ConvBranch(c.input_size, c.conv_channels, pool=c.conv_pool)
            self.features += c.conv_channels[-1]
        if c.kernel_features:
            classes = c.output_size if c.kernel_ridge else 0
            self.kernels = KernelBranch(c.input_size, c.kernel_features, c.kernel_length, classes)
            if not c.kernel_ridge:  # else its scores join the logits (forward)
                self.features += self.kernels.features
        self.head = nn.Linear(self.features, c.output_size)

    def _check_input(self, x: Tensor, lengths: Tensor | None) -> None:
        c = self.config
        if c.tokens:
            if x.dim() != 2 or x.dtype not in (torch.int32, torch.int64):
                raise ValueError(
                    f"token input must be integer ids (B, T); got {x.dtype} {tuple(x.shape)}"
                )
        elif x.dim() != 3 or x.shape[-1] != c.input_size or not x.is_floating_point():
            raise ValueError(
                f"series input must be float (B, T, {c.input_size}); got {x.dtype} {tuple(x.shape)}"
            )
        if lengths is not None:
            if lengths.shape != (x.shape[0],):
                raise ValueError(
                    f"lengths has shape {tuple(lengths.shape)}; expected ({x.shape[0]},)"
                )
            if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]):
                raise ValueError(
                    f"lengths must lie in [1, T={x.shape[1]}]; got min {int(lengths.min())}, "
                    f"max {int(lengths.max())}"
                )

    def lstm_input(self, x: Tensor) -> Tensor:
        """What the LSTM reads for ``x``, before dropout: ``(B, T, E)`` embedded tokens (with
        their token features), projected series, or the raw channels."""
        c = self.config
        if c.tokens:
            e = self.embedding(x % c.vocab_size if c.token_feature_sets > 1 else x)  # (B, T, E)
            if c.token_features:
                e = torch.cat([e, self.token_feature_table[x]], dim=-1)  # (B, T, E + F)
            return e
        if c.patch > 1:
            T = x.shape[1]
            pad = (-T) % c.patch  # zeros complete the last patch
            x = F.pad(x.transpose(1, 2), (0, pad))  # (B, C, T + pad)
            return self.patch_projection(x).transpose(1, 2)  # (B, ceil(T / patch), E)
        if c.embedding_dim > 0:
            return self.projection(x)  # (B, T, E)
        return x

    def encode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Pooled LSTM features ``(B, D*P)`` of ``x`` (token ids ``(B, T)`` or ``(B, T, C)``).

        ``lengths (B,)`` gives each sequence's real steps (padding at the end); None means
        every step is real.
        """
        self._check_input(x, lengths)
        c = self.config
        if c.tokens and self.training and c.word_dropout > 0:
            drop = torch.rand(x.shape, device=x.device) < c.word_dropout
            x = torch.where(drop & (x != 0), torch.full_like(x, UNK_ID), x)
        e = self.embedding_dropout(self.lstm_input(x))
        extra = []
        if c.conv_channels:
            extra.append(self.conv(x, lengths))  # (B, F)
        if c.kernel_features and not c.kernel_ridge:
            extra.append(self.kernels(x, lengths))  # (B, F')
        if c.patch > 1:
            raw = lengths
            lengths = None if raw is None else (raw + c.patch - 1) // c.patch
        pooled = self._pool(e, lengths)
        return torch.cat([pooled, *extra], dim=-1) if extra else pooled

    def _pool(self, e: Tensor, lengths: Tensor | None) -> Tensor:
        """The LSTM over ``e (B, T, E)`` with ``lengths`` real steps, pooled: ``(B, D*P)``."""
        c = self.config
        x = e
        T = e.shape[1]
        if lengths is None or bool((lengths == T).all()):
            out, state = self.lstm(e)  # out (B, T, D*P), state[0] = h_n (L*D, B, P)
            h_n = state[0]  # (h, c), or the sLSTM's (h, c, n, m)
            mask = None
        else:
            # Packing keeps padded steps out of both directions and of the final state.
            packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, state = self.lstm(packed)
            h_n = state[0]
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D*P)
            steps = torch.arange(T, device=x.device)
            mask = steps[None, :] < lengths.to(x.device)[:, None]  # (B, T)
        if c.pooling == "last":
            D = self.lstm.num_directions
            # forward direction: state after the last real step; backward: after step 0.
            return torch.cat(list(h_n[-D:]), dim=-1)  # (B, D*P)
        if c.pooling == "mean":
            if mask is None:
                return out.mean(dim=1)
            return out.sum(dim=1) / lengths.to(out.device, out.dtype)[:, None]  # padded out = 0
        if mask is not None:
            out = out.masked_fill(~mask[..., None], float("-inf"))
        return out.amax(dim=1)  # (B, D*P)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        out = self.head(self.dropout(self.encode(x, lengths)))  # (B, out)
        if self.config.kernel_ridge:  # the ridge's calibrated scores, an offset to learn on
            if self.config.head_weight != 1.0:
                out = out * self.config.head_weight
            out = out + self.kernels(x, lengths)  # (B, out)
        return out


class _MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over the real steps only: ``(B, C, T)`` with a ``(B, T)`` mask (padding
    neither enters the statistics nor keeps a value: it is set to 0)."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return super().forward(x)
        m = mask[:, None, :].to(x.dtype)  # (B, 1, T)
        if self.training:
            n = m.sum()
            mean = (x * m).sum(dim=(0, 2)) / n  # (C,)
            var = (((x - mean[None, :, None]) * m) ** 2).sum(dim=(0, 2)) / n
            with torch.no_grad():
                k = self.momentum
                unbiased = var * n / max(float(n) - 1.0, 1.0)
                self.running_mean.mul_(1 - k).add_(k * mean)
                self.running_var.mul_(1 - k).add_(k * unbiased)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return (y * self.weight[None, :, None] + self.bias[None, :, None]) * m


class ConvBranch(nn.Module):
    """The fully convolutional branch of LSTM-FCN (Karim et al. 2017; Wang et al. 2017):
    blocks of convolution ("same" zero padding, kernels 8, 5, 3, 3, ...), batch norm over
    the real steps and ReLU, then the mean over the real steps.

    ``forward(x (B, T, C), lengths (B,) or None) -> (B, channels[-1])``. Padded steps are
    zeroed after every block, so a real step sees exactly what it would see in a batch
    of its own (zero padding at the sequence's end): in eval mode the output does not
    depend on the padding.
    """

    KERNELS = (8, 5, 3)

    def __init__(self, input_size: int, channels: list[int], pool: int = 1) -> None:
        super().__init__()
        self.pool = pool
        sizes = [input_size, *channels]
        kernels = [self.KERNELS[i] if i < len(self.KERNELS) else 3 for i in range(len(channels))]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, k) for a, b, k in zip(sizes, sizes[1:], kernels))
        self.norms = nn.ModuleList(_MaskedBatchNorm1d(b) for b in channels)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        h = x.transpose(1, 2)  # (B, C, T)
        if self.pool > 1:
            # the mean of each window of `pool` real steps (a last partial window too)
            T = h.shape[-1]
            pad = (-T) % self.pool
            h = F.pad(h, (0, pad))
            if lengths is None:
                lengths = torch.full((h.shape[0],), T, device=x.device, dtype=torch.long)
            steps = torch.arange(T + pad, device=x.device)
            real = (steps[None, :] < lengths.to(x.device)[:, None]).to(h.dtype)  # (B, T')
            h = F.avg_pool1d(h * real[:, None, :], self.pool) / F.avg_pool1d(
                real[:, None, :], self.pool
            ).clamp_min(1e-12)  # (B, C, ceil(T / pool))
            lengths = (lengths + self.pool - 1) // self.pool
        T = h.shape[-1]
        mask = None
        if lengths is not None and not bool((lengths == T).all()):
            mask = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
            h = h * mask[:, None, :].to(h.dtype)
        for conv, norm in zip(self.convs, self.norms):
            k = conv.kernel_size[0]
            h = F.pad(h, ((k - 1) // 2, k // 2))  # "same" length, as torch pads it
            h = torch.relu(norm(conv(h), mask))  # (B, F, T); padding stays 0
        if mask is None:
            return h.mean(dim=-1)
        return h.sum(dim=-1) / lengths.to(h.device, h.dtype)[:, None]  # (B, F)


class SequenceClassifier(_SequenceModel):
    """Classify a sequence: ``forward(x, lengths) -> logits (B, num_classes)``.

    Args:
        config: a :class:`ModelConfig` with ``kind="classifier"``, ``output_size`` classes.

    Shapes:
        ``x``: token ids ``(B, T)`` (int64, 0 = padding) when ``config.vocab_size > 0``,
        else real values ``(B, T, input_size)``; ``lengths``: ``(B,)`` real steps per
        sequence (padding at the end), or None when all ``T`` steps are real.

    Example::

        >>> cfg = ModelConfig(kind="classifier", output_size=2, vocab_size=100)
        >>> SequenceClassifier(cfg)(torch.randint(1, 100, (4, 7))).shape
        torch.Size([4, 2])
    """

    def predict_proba(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class probabilities ``(B, num_classes)`` (softmax of the logits)."""
        return F.softmax(self(x, lengths), dim=-1)


class SequenceRegressor(_SequenceModel):
    """Regress ``output_size`` real targets from a sequence: ``forward -> (B, output_size)``.

    Same input shapes as :class:`SequenceClassifier`.
    """


class ForecastNet(_SequenceModel):
    """Forecast the next ``horizon = config.output_size`` values of channel 0.

    ``forward(x (B, T, C), lengths=None) -> (B, horizon)``: an LSTM over the history
    window, its pooled features through dropout and a Dense horizon head, plus (when
    ``config.highway > 0``) a linear autoregressive skip from the last ``highway`` values
    of channel 0 (LSTNet, Lai et al. 2018), which keeps the linear part of the dynamics in
    reach of a small model and lets the LSTM learn the rest. Windows must be unpadded when
    the highway is on.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.tokens:
            raise ValueError("a forecaster takes real-valued input (vocab_size=0)")
        if config.highway:
            self.highway = nn.Linear(config.highway, config.output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        y = super().forward(x, lengths)  # (B, horizon)
        if self.config.highway:
            k = self.config.highway
            if x.shape[1] < k:
                raise ValueError(f"history of {x.shape[1]} steps is shorter than highway={k}")
            if lengths is not None and bool((lengths != x.shape[1]).any()):
                raise ValueError("the highway skip needs unpadded windows (all lengths == T)")
            y = y + self.highway(x[:, -k:, 0])  # (B, k) -> (B, horizon)
        return y


_MODELS: dict[str, type[_SequenceModel]] = {
    "classifier": SequenceClassifier,
    "regressor": SequenceRegressor,
    "forecaster": ForecastNet,
}


def build_model(config: ModelConfig | dict[str, Any]) -> _SequenceModel:
    """The model ``config.kind`` names, freshly initialised with the global torch RNG."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return _MODELS[config.kind](config)
