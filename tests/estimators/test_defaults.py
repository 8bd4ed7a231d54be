"""The data-derived defaults of the estimators (issue 11): the forecaster's linear part,
season, gate and window rules."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.ar_model import AutoReg

from gatelab.estimators import Forecaster
from gatelab.models.autoregressive import LinearForecast, find_season, fit_ar, fit_direct

FAST = dict(hidden_size=8, epochs=5, n_models=1)


def ar2(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(2, n):
        x[t] = 1.0 + 0.6 * x[t - 1] - 0.3 * x[t - 2] + rng.normal()
    return x


def seasonal_trend(n: int, period: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100 + 2.0 * t + 15 * np.sin(2 * np.pi * t / period) + rng.normal(scale=1.0, size=n)


# ----------------------------------------------------------------- the linear part


def test_fit_ar_equals_statsmodels_autoreg():
    x = ar2(300)
    model = fit_ar(x, log=False, d=0, D=0, season=0, p_max=8)
    assert model.p >= 2
    # the same rows (every p is fitted after the first p_max values): AutoReg's hold_back
    ref = AutoReg(x, lags=model.p, trend="c", hold_back=8).fit().params
    np.testing.assert_allclose([model.const, *model.coef], ref, rtol=0, atol=1e-9)
    windows = np.lib.stride_tricks.sliding_window_view(x, model.p)[:-1]
    want = ref[0] + windows[:, ::-1] @ ref[1:]
    np.testing.assert_allclose(model.forecast(windows, 1)[:, 0], want, atol=1e-9)


def test_recursive_forecast_inverts_first_and_seasonal_differences():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 20)).cumsum(axis=1)
    persistence = LinearForecast(d=1)
    np.testing.assert_allclose(persistence.forecast(w, 3), np.repeat(w[:, -1:], 3, axis=1))
    naive = LinearForecast(D=1, season=5)
    np.testing.assert_allclose(naive.forecast(w, 7), np.concatenate([w[:, -5:], w[:, -5:-3]], 1))
    # both differences and AR(1) on them, two steps by hand
    m = LinearForecast(d=1, D=1, season=4, p=1, const=0.5, coef=[0.3])
    z = w[:, -6:]
    u_t = (z[:, -1] - z[:, -2]) - (z[:, -5] - z[:, -6])
    z1 = 0.5 + 0.3 * u_t + z[:, -1] + z[:, -4] - z[:, -5]
    u1 = 0.5 + 0.3 * u_t
    z2 = 0.5 + 0.3 * u1 + z1 + z[:, -3] - z[:, -4]
    np.testing.assert_allclose(m.forecast(z, 2), np.stack([z1, z2], axis=1), atol=1e-12)
    assert LinearForecast.from_dict(m.to_dict()) == m


def test_fit_direct_recovers_a_linear_map():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 6))
    W = rng.normal(size=(6, 2))
    Y = X @ W + np.array([1.0, -2.0])
    model = fit_direct(X, Y)
    np.testing.assert_allclose(model.forecast(X, 2), Y, atol=1e-5)


def test_find_season():
    assert find_season(seasonal_trend(144, period=12)) == 12
    assert find_season(seasonal_trend(300, period=7, seed=3)) == 7
    assert find_season(np.random.default_rng(0).normal(size=300).cumsum()) == 0


# ----------------------------------------------------------------- the forecaster


@pytest.fixture(scope="module")
def trended():
    x = seasonal_trend(132)
    return x, Forecaster(**FAST).fit(x[:-12])


def test_forecaster_rules_come_from_the_data(trended):
    x, f = trended
    assert f.season_ == 12
    assert f.linear_.d + f.linear_.D >= 1  # a trend: the linear part differences
    assert f.input_["mode"] == "level"
    assert f.history_steps_ >= max(f.network_steps_, f.linear_.window)
    assert f.network_steps_ == 24  # two seasons
    metrics = f.validation_metrics_
    assert metrics["rmse"] <= metrics["linear_rmse"] + 1e-9  # the gate
    windows = np.stack([x[t - f.history_steps_ : t] for t in range(120, 132)])
    pred = f.predict(windows)
    persistence = x[119:131]
    rmse = np.sqrt(np.mean((pred - x[120:]) ** 2))
    assert rmse < np.sqrt(np.mean((persistence - x[120:]) ** 2)) / 2


def test_forecast_is_the_linear_part_plus_the_gated_network(trended, tmp_path):
    x, f = trended
    windows = np.stack([x[t - f.history_steps_ : t] for t in range(100, 110)])
    net = f.model_(f._windows_data(windows, None).inputs).detach().numpy()
    want = f.linear_.forecast(windows, 1)[:, 0] + net[:, 0] * f.scaler_.scale
    np.testing.assert_allclose(f.predict(windows), want, rtol=1e-6)
    again = Forecaster.load(f.save(tmp_path / "run"))
    np.testing.assert_array_equal(again.predict(windows), f.predict(windows))
    np.testing.assert_array_equal(again.predict(), f.predict())


def test_gate_weight_zero_leaves_the_linear_forecast():
    x = ar2(200, seed=4)
    f = Forecaster(**FAST).fit(x)
    f._gate(np.zeros((0, f.history_steps_)), np.zeros((0, 1)), f.linear_)  # no data: keeps
    w = np.lib.stride_tricks.sliding_window_view(x, f.history_steps_)[-20:]
    # a network that can only hurt: the validation targets are the linear forecasts
    target = f.linear_.forecast(w, 1)
    assert f._gate(w, target, f.linear_) == 0.0
    np.testing.assert_allclose(f.predict(w), target[:, 0], atol=1e-9)


def test_multi_step_and_short_series():
    x = ar2(60, seed=5)
    f = Forecaster(horizon=3, **FAST).fit(x)
    assert f.predict().shape == (3,)
    assert f.history_steps_ <= 60 // 4 + f.linear_.window
    with pytest.raises(ValueError, match="season=-1"):
        Forecaster(season=-1).fit(x)


# ----------------------------------------------------------------- text, > 2 classes


def test_logit_adjustment_for_more_than_two_classes():
    import copy

    import torch

    from gatelab.estimators import TextClassifier
    from gatelab.train.metrics import classification_metrics

    rng = np.random.default_rng(0)
    words = {"a": ["good", "great"], "b": ["bad", "awful"], "c": ["odd", "plain"]}
    labels = list(rng.choice(["a", "a", "a", "b", "c"], size=150))
    texts = [f"the {rng.choice(words[y])} film {rng.choice(['x', 'y'])}" for y in labels]
    tiny = dict(embedding_dim=8, hidden_size=8, epochs=2, n_models=2, nb_features=False)
    clf = TextClassifier(**tiny).fit(
        texts[:120], labels[:120], validation_data=(texts[120:], labels[120:])
    )
    assert clf.prior_adjustment_ in (0.0, 0.25, 0.5, 0.75, 1.0)
    two = TextClassifier(**tiny).fit(texts[:120], ["a" if y == "a" else "z" for y in labels[:120]])
    assert two.prior_adjustment_ == 0.0  # binary tasks are left alone

    before = copy.deepcopy(clf)
    valid = clf._tensor_data(
        texts[120:], torch.as_tensor(np.searchsorted(clf.classes_, labels[120:]))
    )
    counts = np.array([90, 20, 10])
    tau = clf._adjust_for_priors(valid, counts)
    logits = torch.stack([m(valid.inputs, valid.lengths) for m in before.model_.members]).detach()
    log_prior = np.log(counts / counts.sum())
    want = (logits.numpy() - tau * log_prior).astype(np.float64)
    proba = np.exp(want - want.max(-1, keepdims=True))
    proba = (proba / proba.sum(-1, keepdims=True)).mean(0)
    np.testing.assert_allclose(clf.predict_proba(texts[120:]), proba, rtol=1e-4, atol=1e-6)
    got = classification_metrics(valid.targets.numpy(), proba.argmax(-1))
    assert clf.validation_metrics_ == got


# ----------------------------------------------------------------- series classifier


def test_masked_batch_norm_uses_only_the_real_steps():
    import torch

    from gatelab.models.heads import _MaskedBatchNorm1d

    torch.manual_seed(0)
    x = torch.randn(3, 4, 10)
    lengths = torch.tensor([10, 6, 3])
    mask = torch.arange(10)[None, :] < lengths[:, None]
    ours, ref = _MaskedBatchNorm1d(4), torch.nn.BatchNorm1d(4)
    out = ours(x, mask)
    real = torch.cat([x[i, :, :n] for i, n in enumerate(lengths.tolist())], dim=1)[None]
    want = ref(real)[0]  # (C, sum of lengths)
    got = torch.cat([out[i, :, :n] for i, n in enumerate(lengths.tolist())], dim=1)
    torch.testing.assert_close(got, want)
    assert float(out.detach()[~mask[:, None, :].expand_as(out)].abs().max()) == 0.0
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x, None), ref(x))


def test_patches_and_conv_branch_do_not_depend_on_padding():
    import torch

    from gatelab.models.heads import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="classifier", output_size=3, input_size=2, embedding_dim=8, hidden_size=6,
        patch=4, conv_channels=[4, 8, 4], conv_pool=3, pooling="mean",
    )  # fmt: skip
    model = build_model(cfg).eval()
    x = torch.randn(3, 37, 2)
    lengths = torch.tensor([37, 20, 9])
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0
    out = model(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(model(x[i : i + 1, :n], lengths[i : i + 1])[0], out[i])
    # a patch is a linear map of its P x C values
    e = model.lstm_input(x[:, :36])  # (3, 9, 8)
    w = model.patch_projection.weight  # (E, C, P)
    patches = x[:, :36].reshape(3, 9, 4, 2).transpose(2, 3).reshape(3, 9, 8)  # (B, T/P, C*P)
    want = patches @ w.reshape(8, 8).T + model.patch_projection.bias
    torch.testing.assert_close(e, want)


def test_series_sizes_follow_the_length_and_the_choice_is_recorded(tmp_path):
    import json

    from gatelab.estimators import SeriesClassifier
    from tests.helpers import shape_series

    clf = SeriesClassifier()
    assert clf._sizes(24) == {"patch": 1, "embedding_dim": 0, "conv_pool": 1}
    assert clf._sizes(1460) == {"patch": 23, "embedding_dim": 32, "conv_pool": 12}
    X, y = shape_series(40, T=20)
    fast = dict(hidden_size=8, conv_width=4, epochs=3, n_models=1, selection_folds=2)
    clf = SeriesClassifier(**fast).fit(X, y, run_dir=tmp_path / "run")
    sel = clf.selection_
    assert sel["folds"] == 2 and set(sel["scores"]) == {"lstm-fcn", "lstm"}
    means = {a: float(np.mean(s)) for a, s in sel["scores"].items()}
    assert sel["chosen"] == max(["lstm-fcn", "lstm"], key=lambda a: (means[a], a == "lstm-fcn"))
    assert bool(clf.model_config_.conv_channels) == (sel["chosen"] == "lstm-fcn")
    assert json.loads((tmp_path / "run" / "selection.json").read_text()) == sel
    again = SeriesClassifier.load(tmp_path / "run")
    assert again.selection_ == sel and again.architecture_ == sel["chosen"]
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    with pytest.raises(ValueError, match="architecture='cnn'"):
        SeriesClassifier(architecture="cnn").fit(X, y)


def test_level_and_scale_are_kept_when_the_series_are_not_z_normalised(tmp_path):
    from gatelab.estimators import SeriesClassifier
    from tests.helpers import shape_series

    X, y = shape_series(30, T=12)
    fast = dict(hidden_size=4, conv_width=2, epochs=1, n_models=1, architecture="lstm")
    z = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True)
    plain = SeriesClassifier(**fast).fit(z, y)
    assert plain.level_scaler_ is None and plain.model_config_.input_size == 1
    scaled = X * np.linspace(0.1, 100, 30)[:, None, None] + 5.0  # amplitude and offset vary
    clf = SeriesClassifier(**fast).fit(scaled, y, run_dir=tmp_path / "run")
    assert clf.model_config_.input_size == 3
    data = clf._inputs(scaled[:4]).inputs.numpy()  # (4, T, 3)
    stats = np.stack([[s.mean(), np.log(s.std() + 1e-8)] for s in scaled[:, :, 0]])
    want = (stats[:4] - stats.mean(0)) / stats.std(0)
    np.testing.assert_allclose(data[:, 0, 1:], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data[:, :, 1:], np.repeat(data[:, :1, 1:], 12, axis=1))
    again = SeriesClassifier.load(tmp_path / "run")
    np.testing.assert_array_equal(again.predict_proba(scaled), clf.predict_proba(scaled))


def test_forecaster_without_its_linear_part_fits_a_series():
    """linear=False on a 1-D series: the network alone, and it beats persistence on a
    learnable series (it raised UnboundLocalError before)."""
    t = np.arange(240)
    series = 10 + 3 * np.sin(2 * np.pi * t / 12)
    est = Forecaster(linear=False, epochs=60, n_models=1, seed=0).fit(series[:200])
    assert est.linear_ is None
    preds = np.array([est.predict(series[: 200 + k])[0] for k in range(20)])
    rmse = float(np.sqrt(np.mean((preds.ravel() - series[200:220]) ** 2)))
    persistence = float(np.sqrt(np.mean((series[199:219] - series[200:220]) ** 2)))
    assert rmse < 0.5 * persistence, (rmse, persistence)
