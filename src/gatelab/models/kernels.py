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

With ``classes > 0`` the branch is MiniRocket's whole classifier: a ridge regression of the
classes' +-1 indicators on the standardised features, its strength chosen by leave-one-out
error over ``RIDGE_ALPHAS`` (scikit-learn's ``RidgeClassifierCV``, as the paper), solved in
closed form on the training series by :meth:`KernelBranch.fit_biases` and fixed; the branch
then gives the ``classes`` ridge scores times a temperature (logits), which the model adds
to its Dense head's (the LSTM's) logits. A Dense layer trained by AdamW on ~10,000 features
and a few dozen series is no ridge: Adam's steps move every weight alike (its implicit bias
is the max-margin of the infinity norm, not the Euclidean one of gradient descent and
ridge; Zhang et al. 2024), and on Coffee such a head was confidently wrong on series the
closed-form ridge on the same features gets right. The temperature turns the ridge's
scores into calibrated logits: the one of least cross-entropy of its LEAVE-ONE-OUT scores
(exact, from the hat matrix; temperature scaling, Guo et al. 2017), since a ridge over more
features than series fits its own training series exactly. The LSTM then trains on what
the ridge leaves of the training targets, as a boosting stage fits the residuals of the
stage before (Friedman 2001).
"""

from __future__ import annotations

import hashlib
import itertools
import math

import torch
from torch import Tensor, nn

__all__ = [
    "KERNEL_LENGTH",
    "MIN_STD",
    "RIDGE_ALPHAS",
    "SNAP",
    "TEMPERATURES",
    "KernelBranch",
    "base_kernels",
    "dilations",
    "temperature",
]

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
RIDGE_ALPHAS = tuple(float(a) for a in 10.0 ** torch.linspace(-3, 3, 10))  # MiniRocket's


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
        classes: 0, or the number of classes of a closed-form ridge classifier over the
            features: the branch then gives its ``classes`` scores (:attr:`out_features`).

    Buffers (saved with the weights): ``weight (K, C, 9)`` for the ``K = 84 * D`` (kernel,
    dilation) pairs, dilation-major, each kernel times its channel subset; ``bias (K, nb)``.
    ``shift (F,)``, ``scale (F,)``: the standardisation. The biases are zero and the
    standardisation the identity until :meth:`fit_biases` sets them from training series.
    With ``classes``: ``ridge_weight (classes, F)``, ``ridge_bias (classes,)`` (zero until
    :meth:`fit_biases` is given the training targets), ``ridge_alpha ()``, the strength
    chosen, and ``ridge_temperature ()``, the scores' factor.
    """

    def __init__(self, input_size: int, features: int, length: int, classes: int = 0) -> None:
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
        self.classes = classes
        self.out_features = classes or self.features
        if classes:
            self.register_buffer("ridge_weight", torch.zeros(classes, self.features))
            self.register_buffer("ridge_bias", torch.zeros(classes))
            self.register_buffer("ridge_alpha", torch.tensor(0.0))
            self.register_buffer("ridge_temperature", torch.tensor(1.0))
        self._memo: dict[bytes, Tensor] = {}

    def _convolve(self, x: Tensor, k: slice, d: int) -> Tensor:
        """The pairs ``k`` (one dilation ``d``) over ``x (B, C, T)``: ``(B, len(k), T)``."""
        pad = (KERNEL_LENGTH - 1) // 2 * d
        out = torch.nn.functional.conv1d(x, self.weight[k], padding=pad, dilation=d)
        return out.masked_fill(out.abs() < SNAP, 0.0)

    @torch.no_grad()
    def fit_biases(
        self, x: Tensor, lengths: Tensor | None = None, targets: Tensor | None = None
    ) -> None:
        """Set the biases from training series ``x (N, T, C)``: for each (kernel, dilation)
        pair, the quantiles ``frac((j + 1) * 0.618...)`` of its output over the real steps
        of one series drawn with the global RNG; then the standardisation of the features
        of all ``N`` series; then, with ``classes`` and ``targets (N,)`` (class ids), the
        ridge (:meth:`fit_ridge`)."""
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
        feats = self._training_features(x, lengths)
        self.shift.copy_(feats.mean(dim=0))
        self.scale.copy_(1.0 / feats.std(dim=0, unbiased=False).clamp_min(MIN_STD))
        if self.classes and targets is not None:
            loo = self.fit_ridge((feats - self.shift) * self.scale, targets)  # (N, classes)
            self.ridge_temperature.fill_(temperature(loo, targets.cpu()))

    def _training_features(self, x: Tensor, lengths: Tensor) -> Tensor:
        """:meth:`ppv` of the training series ``x (N, T, C)``, memoised (the first epoch
        reads them back), ``(N, F)`` in their order. Computed in chunks of series of
        similar length, each cut to its longest: the work follows the real steps, not
        ``N T_max`` (PLAID, lengths 100 to 1,344, mean 324: 0.28 of it)."""
        order = torch.argsort(lengths.cpu(), stable=True)
        lengths = lengths.to(x.device)  # indexed by idx, on x's device
        feats = torch.empty(len(x), self.features, dtype=x.dtype, device=x.device)
        for i in range(0, len(x), _CHUNK):
            idx = order[i : i + _CHUNK].to(x.device)
            T = int(lengths[idx].max())
            feats[idx] = self._cached_ppv(x[idx, :T], lengths[idx])
        return feats

    @torch.no_grad()
    def fit_ridge(self, feats: Tensor, targets: Tensor) -> Tensor:
        """The ridge over standardised features ``feats (N, F)`` of the training series with
        class ids ``targets (N,)`` in ``[0, classes)``: scikit-learn's
        ``RidgeClassifierCV(alphas=RIDGE_ALPHAS)`` (intercept, +-1 indicators, the alpha
        of least leave-one-out squared error). Two classes give one score ``s``; the
        branch gives ``(-s, s)``, what a ridge of each class's indicator gives.

        Returns ``(N, classes)``: each series' leave-one-out scores, the ridge of the
        chosen alpha fitted without it, in closed form: with ``H`` the hat matrix
        ``1 1^T / N + Z (Z^T Z + alpha I)^-1 Z^T`` of the centred features ``Z``, the
        score without series ``i`` is ``(s_i - H_ii y_i) / (1 - H_ii)``."""
        from sklearn.linear_model import RidgeClassifierCV

        y = targets.cpu().numpy()
        if len(set(y.tolist())) < 2:
            raise ValueError(f"targets hold {len(set(y.tolist()))} class; the ridge needs >= 2")
        feats = feats.detach().double().cpu()  # solved on the CPU, in float64
        ridge = RidgeClassifierCV(alphas=RIDGE_ALPHAS).fit(feats.numpy(), y)
        w = torch.as_tensor(ridge.coef_, dtype=torch.float64).reshape(-1, self.features)
        b = torch.as_tensor(ridge.intercept_, dtype=torch.float64).reshape(-1)  # (K or 1,)
        present = torch.as_tensor(ridge.classes_, dtype=torch.long)
        weight = torch.zeros(self.classes, self.features, dtype=torch.float64)
        bias = torch.full((self.classes,), -1.0, dtype=torch.float64)  # absent: "not it"
        if len(present) == 2:
            w, b = torch.cat([-w, w]), torch.cat([-b, b])
        weight[present] = w
        bias[present] = b
        self.ridge_weight.copy_(weight)
        self.ridge_bias.copy_(bias)
        self.ridge_alpha.fill_(float(ridge.alpha_))
        Z = feats - feats.mean(dim=0)  # (N, F)
        G = Z @ Z.T  # (N, N)
        N = len(G)
        eye = torch.eye(N, dtype=G.dtype)
        H = torch.linalg.solve(G + float(ridge.alpha_) * eye, G).T + 1.0 / N  # (N, N) hat
        Y = torch.full((N, self.classes), -1.0, dtype=torch.float64)
        Y[torch.arange(N), torch.as_tensor(y, dtype=torch.long)] = 1.0  # (N, classes)
        fitted = feats @ weight.T + bias  # (N, classes)
        h = H.diagonal()[:, None]  # (N, 1)
        return (fitted - h * Y) / (1.0 - h).clamp_min(1e-12)

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
        z = (self._cached_ppv(x, lengths) - self.shift) * self.scale  # (B, F)
        if not self.classes:
            return z
        return (z @ self.ridge_weight.T + self.ridge_bias) * self.ridge_temperature  # (B, K)

    def __getstate__(self) -> dict:  # copies (deepcopy, pickle) carry no memo
        return {**self.__dict__, "_memo": {}}


TEMPERATURES = tuple(2.0 ** (k / 4) for k in range(-16, 49))  # 1/16 .. 4096


def temperature(scores: Tensor, targets: Tensor) -> float:
    """The factor ``t`` of ``TEMPERATURES`` whose ``softmax(t * scores)`` has the least mean
    cross-entropy against class ids ``targets (N,)``; ``scores (N, K)``."""
    y = targets.to(torch.long)
    loss = [float(torch.nn.functional.cross_entropy(t * scores.double(), y)) for t in TEMPERATURES]
    return TEMPERATURES[min(range(len(loss)), key=loss.__getitem__)]


def _masked(x: Tensor, lengths: Tensor) -> Tensor:
    """``x (B, T, C)`` with the steps past each series' length set to 0."""
    T = x.shape[1]
    mask = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * mask[:, :, None].to(x.dtype)
