"""A branch of random, fixed, dilated convolution kernels with PPV pooling (the features
of MiniRocket, Dempster et al. 2021), beside the LSTM of a series classifier.

Every kernel has length 9 and weights ``-1`` except three ``2`` (the 84 ways to place
them), so it sums to 0 and its output does not move with the series' level. Each kernel
runs at every dilation ``d`` of an exponential ladder ``1 .. (L - 1) / 8`` (``L`` =
``length``, the longest training series), with zero padding of ``4 d`` on each side, so
that every step has an output. Each (kernel, dilation) pair has ``nb`` biases, quantiles
of its output on one random training series (set by :meth:`KernelBranch.fit_biases`);
a feature is the proportion of positive values (PPV) of ``conv(x) - bias`` over the
series' real steps:

    ppv[k, d, j] = (1 / T_real) sum_t [ (w_k *_d x)[t] > b[k, d, j] ]

With several channels, each (kernel, dilation) pair reads the sum of a random subset of
them. Outputs within ``SNAP`` of 0 count as 0 (rounding of flat stretches). Nothing here
is trained: the features are a fixed function of the series, which
:class:`KernelBranch` computes once per distinct training series (a memo keyed by the
series' bytes), and standardised with the training series' mean and standard deviation
of each feature (at least ``MIN_STD``), fixed like the biases, for the Dense layer (a
ridge-like linear classifier when trained with weight decay). A batch norm would
standardise batches of 16 by their own statistics, which for the many rare features
differ from the running ones: a model trained so scored 71 % on its own training set.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import torch
from torch import Tensor, nn

__all__ = ["KERNEL_LENGTH", "MIN_STD", "SNAP", "KernelBranch", "base_kernels", "dilations"]

KERNEL_LENGTH = 9
_MAX_DILATIONS = 32
_MEMO_FLOATS = 2**25  # features kept for training series, at most (128 MiB of float32)
_GOLDEN = (math.sqrt(5) - 1) / 2  # low-discrepancy quantile positions, as MiniRocket
# A zero-sum kernel over a flat stretch (or a constant channel) gives 0 up to rounding,
# which differs between convolution implementations (torch, onnxruntime) and would flip
# "> bias" where a bias is such a 0: outputs this close to 0 count as exactly 0.
SNAP = 1e-4
MIN_STD = 1e-2  # a feature's standard deviation, at least (PPVs are multiples of 1 / T)
_CHUNK = 64  # series per feature computation while fitting


def base_kernels() -> Tensor:
    """``(84, 9)``: every length-9 kernel of six ``-1`` and three ``2``."""
    rows = []
    for ones in itertools.combinations(range(KERNEL_LENGTH), 3):
        w = torch.full((KERNEL_LENGTH,), -1.0)
        w[list(ones)] = 2.0
        rows.append(w)
    return torch.stack(rows)


def dilations(length: int, features: int) -> list[int]:
    """The distinct dilations ``floor(2 ** linspace(0, log2((length - 1) / 8), n))`` with
    ``n = min(32, features // 84)`` (at least 1), so the widest kernel spans the series."""
    n = max(1, min(_MAX_DILATIONS, features // 84))
    top = math.log2(max(1.0, (length - 1) / (KERNEL_LENGTH - 1)))
    values = [int(2 ** (top * i / max(1, n - 1))) for i in range(n)]
    return sorted(set(values))


class KernelBranch(nn.Module):
    """MiniRocket-style features of a series: ``forward(x (B, T, C), lengths) -> (B, F)``.

    Args:
        input_size: channels ``C``.
        features: the number of PPV features asked for; the branch gives
            ``F = 84 * D * nb + C`` with ``D = len(dilations)``, ``nb = max(1, features //
            (84 * D))`` (:attr:`features`): the PPVs, then each channel's mean over the
            real steps (the level channels of a series classifier reach the Dense layer).
        length: the series length the dilations are sized for.

    Buffers (saved with the weights): ``weight (K, C, 9)`` for the ``K = 84 * D`` (kernel,
    dilation) pairs, dilation-major, each kernel times its channel subset; ``bias (K, nb)``.
    ``shift (F,)``, ``scale (F,)``: the standardisation. The biases are zero and the
    standardisation the identity until :meth:`fit_biases` sets them from training series.
    """

    def __init__(self, input_size: int, features: int, length: int) -> None:
        super().__init__()
        self.dilations = dilations(length, features)
        D = len(self.dilations)
        self.nb = max(1, features // (84 * D))
        self.features = 84 * D * self.nb + input_size
        kernels = base_kernels().repeat(D, 1)  # (K, 9)
        K = len(kernels)
        if input_size == 1:
            channels = torch.ones(K, 1)
        else:  # a random non-empty subset of the channels per pair (global RNG)
            channels = (torch.rand(K, input_size) < 0.5).float()
            channels[torch.arange(K), torch.randint(input_size, (K,))] = 1.0
        self.register_buffer("weight", kernels[:, None, :] * channels[:, :, None])  # (K, C, 9)
        self.register_buffer("bias", torch.zeros(K, self.nb))
        self.register_buffer("shift", torch.zeros(self.features))  # (F,) training means
        self.register_buffer("scale", torch.ones(self.features))  # (F,) 1 / their std
        self._memo: dict[bytes, Tensor] = {}

    def _convolve(self, x: Tensor, k: slice, d: int) -> Tensor:
        """The pairs ``k`` (one dilation ``d``) over ``x (B, C, T)``: ``(B, len(k), T)``."""
        pad = (KERNEL_LENGTH - 1) // 2 * d
        out = torch.nn.functional.conv1d(x, self.weight[k], padding=pad, dilation=d)
        return out.masked_fill(out.abs() < SNAP, 0.0)

    @torch.no_grad()
    def fit_biases(self, x: Tensor, lengths: Tensor | None = None) -> None:
        """Set the biases from training series ``x (N, T, C)``: for each (kernel, dilation)
        pair, the quantiles ``frac((j + 1) * 0.618...)`` of its output over the real steps
        of one series drawn with the global RNG; then the standardisation of the features
        of all ``N`` series."""
        N, T = x.shape[0], x.shape[1]
        if lengths is None:
            lengths = torch.full((N,), T, dtype=torch.long)
        h = _masked(x, lengths).transpose(1, 2)  # (N, C, T)
        q = torch.tensor([((j + 1) * _GOLDEN) % 1.0 for j in range(self.nb)])
        pick = torch.randint(N, (len(self.bias),))  # one series per pair
        for i, d in enumerate(self.dilations):
            k = slice(84 * i, 84 * (i + 1))
            for j, n in enumerate(pick[k].tolist()):
                L = int(lengths[n])
                out = self._convolve(h[n : n + 1, :, :L], slice(k.start + j, k.start + j + 1), d)
                self.bias[k.start + j] = torch.quantile(out[0, 0], q)
        self._memo.clear()
        chunks = range(0, N, _CHUNK)  # memoised: the first epoch reads them back
        feats = torch.cat(
            [self._cached_ppv(x[i : i + _CHUNK], lengths[i : i + _CHUNK]) for i in chunks]
        )
        self.shift.copy_(feats.mean(dim=0))
        self.scale.copy_(1.0 / feats.std(dim=0, unbiased=False).clamp_min(MIN_STD))

    @torch.no_grad()
    def ppv(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The PPV features and channel means ``(B, F)`` of ``x (B, T, C)`` (before the
        batch norm)."""
        B, T = x.shape[0], x.shape[1]
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        mask = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        h = _masked(x, lengths).transpose(1, 2)  # (B, C, T)
        out = []
        for i, d in enumerate(self.dilations):
            k = slice(84 * i, 84 * (i + 1))
            conv = self._convolve(h, k, d).masked_fill(~mask[:, None, :], -math.inf)  # (B, 84, T)
            above = conv[:, :, None, :] > self.bias[k][None, :, :, None]  # (B, 84, nb, T)
            count = above.sum(dim=-1, dtype=torch.int32)  # (B, 84, nb)
            out.append(count.flatten(1).to(x.dtype))
        out.append(h.sum(dim=-1))  # (B, C)
        return torch.cat(out, dim=1) / lengths[:, None].to(x.dtype)  # (B, F)

    def _cached_ppv(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """:meth:`ppv`, each training series computed once (a fixed function of its real
        steps); in eval mode (predictions, validation) nothing is kept."""
        if not self.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.ppv(x, lengths)
        B, T = x.shape[0], x.shape[1]
        L = [T] * B if lengths is None else [int(v) for v in lengths]
        keys = [hashlib.blake2b(x[i, : L[i]].cpu().numpy().tobytes()).digest() for i in range(B)]
        todo = [i for i in range(B) if keys[i] not in self._memo]
        if todo:
            if (len(self._memo) + len(todo)) * self.features > _MEMO_FLOATS:
                self._memo.clear()
            idx = torch.tensor(todo, device=x.device)
            sub_len = None if lengths is None else lengths[idx]
            new = self.ppv(x[idx], sub_len)
            for i, row in zip(todo, new):
                self._memo[keys[i]] = row
        return torch.stack([self._memo[k] for k in keys])  # (B, F)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return (self._cached_ppv(x, lengths) - self.shift) * self.scale  # (B, F)

    def __getstate__(self) -> dict:  # copies (deepcopy, pickle) do not carry the memo
        return {**self.__dict__, "_memo": {}}


def _masked(x: Tensor, lengths: Tensor) -> Tensor:
    """``x (B, T, C)`` with the steps past each series' length set to 0."""
    T = x.shape[1]
    mask = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * mask[:, :, None].to(x.dtype)
