"""gatelab.models.kernels: the random-kernel (MiniRocket) branch against a plain numpy loop,
its biases, its independence from padding, and its place beside the LSTM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gatelab.models.heads import ModelConfig, SequenceClassifier
from gatelab.models.kernels import (
    MIN_STD,
    RIDGE_ALPHAS,
    SNAP,
    TEMPERATURES,
    KernelBranch,
    base_kernels,
    dilations,
    temperature,
)
from tests.helpers import rocket_model


def _ppv_loop(branch: KernelBranch, x: np.ndarray, L: int) -> np.ndarray:
    """The features of one series ``x (T, C)`` with ``L`` real steps, step by step."""
    w, bias = branch.weight.numpy(), branch.bias.numpy()  # (K, C, 9), (K, nb)
    out = []
    for i, d in enumerate(branch.dilations):
        for k in range(84 * i, 84 * (i + 1)):
            conv = np.zeros(L)
            for t in range(L):
                for j in range(9):
                    s = t + (j - 4) * d
                    if 0 <= s < L:  # zeros outside the real steps
                        conv[t] += w[k, :, j] @ x[s]
            conv[np.abs(conv) < SNAP] = 0.0
            out.extend((conv > b).mean() for b in bias[k])
    return np.array([*out, *x[:L].mean(axis=0)])


def test_base_kernels_and_dilations():
    w = base_kernels()
    assert w.shape == (84, 9) and len({tuple(r.tolist()) for r in w}) == 84
    assert torch.equal(w.sum(1), torch.zeros(84)) and set(w.flatten().tolist()) == {-1.0, 2.0}
    assert dilations(20, 84 * 4) == [1, 2]  # (20 - 1) / 8 = 2.4: 2 ** (0, 0.42, 0.83, 1.25)
    d = dilations(1460, 10_000)
    assert d[0] == 1 and d[-1] == int((1460 - 1) / 8) and len(d) <= 32
    assert dilations(9, 10_000) == [1]


def test_features_match_a_numpy_loop_for_every_real_length():
    torch.manual_seed(0)
    branch = KernelBranch(input_size=2, features=84 * 2 * 2, length=20)
    assert branch.dilations == [1, 2] and branch.nb == 2 and branch.features == 336 + 2
    assert 0 < branch.weight.abs().sum(dim=(0, 2)).min()  # every channel is read somewhere
    x = torch.randn(3, 20, 2, dtype=torch.float64)
    lengths = torch.tensor([20, 13, 5])
    branch.fit_biases(x.float(), lengths)
    branch.double()
    x[1, 13:], x[2, 5:] = 7.0, -3.0  # padding values must not matter
    got = branch.ppv(x, lengths).numpy()
    for n in range(3):
        want = _ppv_loop(branch, x[n].numpy(), int(lengths[n]))
        np.testing.assert_allclose(got[n], want, rtol=0, atol=1e-12)  # the means round
    alone = branch.ppv(x[1:2, :13], None).numpy()  # the same series in a batch of its own
    np.testing.assert_array_equal(alone[0], got[1])
    flat = torch.full((1, 20, 2), 3.0, dtype=torch.float64)  # a zero-sum kernel gives 0
    inner = branch._convolve(flat.transpose(1, 2), slice(0, 84), 1)[0, :, 4:-4]
    assert bool((inner == 0).all())


def test_training_features_of_series_of_many_lengths_match_the_numpy_loop(monkeypatch):
    """fit_biases computes the training series' features in chunks of similar length cut
    to their longest: each series' features are still its own (the numpy loop), in the
    series' order, and memoised under its real steps."""
    import gatelab.models.kernels as kernels

    monkeypatch.setattr(kernels, "_CHUNK", 2)  # several chunks from 5 series
    torch.manual_seed(2)
    branch = KernelBranch(input_size=1, features=84 * 2, length=24)
    x = torch.randn(5, 24, 1, dtype=torch.float64)
    lengths = torch.tensor([24, 6, 17, 9, 11])  # chunks: (6, 9), (11, 17), (24)
    for n, L in enumerate(lengths.tolist()):
        x[n, L:] = 5.0  # padding values must not matter
    branch.fit_biases(x.float(), lengths)
    branch.double()
    branch._memo.clear()
    got = branch._training_features(x, lengths).numpy()
    assert len(branch._memo) == 5
    for n in range(5):
        want = _ppv_loop(branch, x[n].numpy(), int(lengths[n]))
        np.testing.assert_allclose(got[n], want, rtol=0, atol=1e-12)


def test_biases_are_quantiles_of_one_training_series():
    torch.manual_seed(1)
    branch = KernelBranch(input_size=1, features=84 * 3, length=30)
    x = torch.randn(4, 30, 1)
    lengths = torch.tensor([30, 30, 17, 9])
    branch.fit_biases(x, lengths)
    q = [((j + 1) * (math.sqrt(5) - 1) / 2) % 1.0 for j in range(branch.nb)]
    w, bias = branch.weight.numpy(), branch.bias.numpy()
    for k in range(len(bias)):
        d = branch.dilations[k // 84]
        options = []
        for n in range(4):
            L = int(lengths[n])
            xs = np.pad(x[n, :L, 0].numpy().astype(np.float64), 4 * d)
            conv = np.array([sum(w[k, 0, j] * xs[t + j * d] for j in range(9)) for t in range(L)])
            conv[np.abs(conv) < SNAP] = 0.0
            options.append(np.quantile(conv, q))
        assert min(np.abs(o - bias[k]).max() for o in options) < 1e-4, k
    feats = branch.ppv(x, lengths).numpy().astype(np.float64)  # (4, F)
    np.testing.assert_allclose(branch.shift.numpy(), feats.mean(0), rtol=1e-5, atol=1e-6)
    want = 1.0 / np.maximum(feats.std(0), MIN_STD)
    np.testing.assert_allclose(branch.scale.numpy(), want, rtol=1e-4)
    assert len(branch._memo) == 4  # the training series' features, kept for the first epoch
    z = branch(x, lengths).numpy()
    np.testing.assert_allclose(z, (feats - feats.mean(0)) * want, rtol=1e-4, atol=1e-4)


def test_kernel_branch_beside_the_lstm_is_fixed_and_memoised():
    torch.manual_seed(0)
    config = ModelConfig(
        input_size=1, hidden_size=4, output_size=3, kernel_features=200, kernel_length=12
    )
    model = SequenceClassifier(config)
    x, lengths = torch.randn(5, 12, 1), torch.tensor([12, 12, 9, 4, 12])
    model.kernels.fit_biases(x, lengths)
    F = model.kernels.features
    assert model.head.in_features == 2 * 4 + F and F == 84 * 2 * 1 + 1
    assert not any(p.requires_grad for p in model.kernels.parameters())
    model.kernels._memo.clear()
    first = model.kernels._cached_ppv(x, lengths)
    assert len(model.kernels._memo) == 5  # one entry per distinct series
    np.testing.assert_array_equal(first.numpy(), model.kernels.ppv(x, lengths).numpy())
    again = model.kernels._cached_ppv(x[[3, 0]], lengths[[3, 0]])
    np.testing.assert_array_equal(again.numpy(), first[[3, 0]].numpy())
    model.eval()
    with torch.no_grad():
        out = model(x, lengths)
        model(torch.randn(2, 12, 1))
    assert len(model.kernels._memo) == 5  # predictions keep nothing
    with torch.no_grad():
        state = {k: v.clone() for k, v in model.state_dict().items()}
        fresh = SequenceClassifier(config).eval()
        fresh.load_state_dict(state)  # the kernels and biases travel with the weights
        np.testing.assert_array_equal(fresh(x, lengths).numpy(), out.numpy())


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    logits = logits - logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("classes", [2, 3])
def test_ridge_is_sklearns_ridge_classifier_cv_and_training_series_get_leave_one_out(classes):
    """The ridge equals RidgeClassifierCV on the same standardised features (alpha, scores);
    its leave-one-out scores equal a ridge of that alpha refitted without each series
    (sklearn's Ridge); the temperature is the grid's least cross-entropy of those; the
    branch gives the full ridge's scores times it, while training and predicting alike."""
    from sklearn.linear_model import Ridge, RidgeClassifierCV

    torch.manual_seed(2)
    branch = KernelBranch(input_size=1, features=84 * 2, length=16, classes=classes)
    assert branch.out_features == classes
    N = 12
    x, lengths = torch.randn(N, 16, 1), torch.tensor([16] * 8 + [11, 9, 16, 13])
    y = torch.arange(N) % classes
    x[y == 1] += torch.linspace(0, 1, 16)[None, :, None]  # something to learn
    branch.fit_biases(x, lengths, y)
    z = ((branch.ppv(x, lengths) - branch.shift) * branch.scale).double().numpy()  # (N, F)
    ridge = RidgeClassifierCV(alphas=RIDGE_ALPHAS).fit(z, y.numpy())
    alpha = float(ridge.alpha_)
    assert float(branch.ridge_alpha) == pytest.approx(alpha)
    want = ridge.decision_function(z)
    want = np.stack([-want, want], 1) if classes == 2 else want  # (N, classes)
    Y = np.where(np.arange(classes)[None, :] == y.numpy()[:, None], 1.0, -1.0)  # (N, K)
    loo = np.stack(
        [
            Ridge(alpha=alpha).fit(np.delete(z, i, 0), np.delete(Y, i, 0)).predict(z[i : i + 1])[0]
            for i in range(N)
        ]
    )
    assert np.abs(loo - want).max() > 0.05  # leaving a series out matters here
    t = float(branch.ridge_temperature)
    losses = [_cross_entropy(c * loo, y.numpy()) for c in TEMPERATURES]
    assert t == pytest.approx(TEMPERATURES[int(np.argmin(losses))], rel=1e-6)
    assert temperature(torch.tensor(loo), y) == TEMPERATURES[int(np.argmin(losses))]
    feats = torch.as_tensor(z)
    np.testing.assert_allclose(branch.fit_ridge(feats, y).numpy(), loo, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        training = branch(x, lengths).double().numpy()
        branch.eval()
        full = branch(x, lengths).double().numpy()
    np.testing.assert_allclose(full, t * want, rtol=1e-4, atol=1e-4 * t)
    np.testing.assert_array_equal(training, full)
    with pytest.raises(ValueError, match="targets hold 1 class"):
        branch.fit_ridge(feats, torch.zeros(N, dtype=torch.long))


def test_ridge_scores_join_the_logits_of_the_lstm_head():
    with pytest.raises(ValueError, match="kernel_ridge needs a classifier"):
        ModelConfig(kind="regressor", output_size=1, kernel_features=200, kernel_ridge=True)
    model, x, lengths = rocket_model()
    assert model.head.in_features == 2 * 4  # the LSTM alone
    model.eval()
    with torch.no_grad():
        want = model.head(model.encode(x, lengths)) + model.kernels(x, lengths)
        np.testing.assert_array_equal(model(x, lengths).numpy(), want.numpy())
    assert float(model.kernels(x, lengths).abs().max()) > 0.1  # the ridge's scores count


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_head_weight_scales_the_lstm_head_before_the_ridge_scores_join(weight):
    model, x, lengths = rocket_model(head_weight=weight)
    model.eval()
    with torch.no_grad():
        head = model.head(model.encode(x, lengths))
        ridge = model.kernels(x, lengths)
        got = model(x, lengths)
    assert float(head.abs().max()) > 0.01  # the head has something to scale
    np.testing.assert_allclose(got.numpy(), (weight * head + ridge).numpy(), rtol=1e-6, atol=1e-6)
    if weight == 0.0:  # the ridge alone decides
        np.testing.assert_array_equal(got.numpy(), ridge.numpy())


@pytest.mark.parametrize("bad", [-0.5, 1.5, True, "0"])
def test_a_head_weight_outside_0_1_or_without_the_ridge_is_refused(bad):
    ridge = dict(input_size=1, kernel_features=200, kernel_length=12, kernel_ridge=True)
    with pytest.raises(ValueError, match=rf"head_weight={bad!r}; expected a number in \[0, 1\]"):
        ModelConfig(head_weight=bad, **ridge)
    with pytest.raises(ValueError, match=r"head_weight=0.5 needs kernel_ridge=True"):
        ModelConfig(input_size=1, head_weight=0.5)
