"""gatelab.estimators.forecaster: Forecaster on a series and on windows, its rules from
the data, the linear part plus the gated network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import cross_val_score

from gatelab.errors import DataError, RunFolderError
from gatelab.estimators import Forecaster
from tests.helpers import (
    TOL,
    ar2,
    seasonal_trend,
    sine_series,
)

TINY_FORECAST = dict(history=12, highway=6, hidden_size=8, epochs=30, lr=1e-2, n_models=1)
FAST = dict(hidden_size=8, epochs=5, n_models=1)


@pytest.fixture(scope="module")
def forecaster():
    return Forecaster(**TINY_FORECAST).fit(sine_series(160))


def test_forecaster_predicts_the_next_values(forecaster):
    series = sine_series(200)
    truth = series[160]
    assert abs(forecaster.predict()[0] - truth) < 2.0  # amplitude 10, noise 0.2
    X = np.lib.stride_tricks.sliding_window_view(series[:-1], 12)[-30:]
    y = series[-30:]
    pred = forecaster.predict(X)
    assert pred.shape == (30,)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 2.0
    assert forecaster.score(X, y) > 0.9
    np.testing.assert_allclose(forecaster.predict(series[:170]), forecaster.predict(X[[0]]))


def _persistence_rmse(windows: np.ndarray, truth: np.ndarray) -> float:
    """The naive forecast: every future value equals the window's last one."""
    return float(np.sqrt(np.mean((windows[:, -1:] - truth) ** 2)))


def test_forecaster_multi_step_beats_persistence_on_held_out_steps(tmp_path):
    s = sine_series(220)  # fit on the first 160 values, forecast the next 60
    f = Forecaster(**{**TINY_FORECAST, "horizon": 3}).fit(s[:160])
    view = np.lib.stride_tricks.sliding_window_view
    X, Y = view(s[148:-3], 12), view(s[160:], 3)  # (N, 12) -> the next 3 values
    pred = f.predict(X).reshape(Y.shape)
    rmse = float(np.sqrt(np.mean((pred - Y) ** 2)))
    naive = _persistence_rmse(X, Y)  # 7.5 on this sine (amplitude 10, period 12); rmse 0.26
    assert rmse < 0.1 * naive, (rmse, naive)
    np.testing.assert_allclose(f.predict(), f.predict(s[148:160][None]).ravel())
    again = Forecaster.load(f.save(tmp_path / "run"))
    np.testing.assert_array_equal(again.predict(), f.predict())


def test_forecaster_fit_on_windows_beats_persistence():
    s = sine_series(220)
    X = np.lib.stride_tricks.sliding_window_view(s[:160], 12)[:-1]
    g = Forecaster(**TINY_FORECAST).fit(X, s[12:160])
    held_out = np.lib.stride_tricks.sliding_window_view(s[148:-1], 12)
    pred, truth = g.predict(held_out), s[160:]
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    assert rmse < 0.1 * _persistence_rmse(held_out, truth[:, None]), rmse  # 0.26 vs 3.7


def test_forecaster_in_cross_val_score():
    s = sine_series(120)
    X = np.lib.stride_tricks.sliding_window_view(s, 12)[:-1]
    scores = cross_val_score(Forecaster(**{**TINY_FORECAST, "epochs": 10}), X, s[12:], cv=2)
    # sklearn's R^2 of each fold, refitted by hand: the estimator scores what it predicts.
    from sklearn.metrics import r2_score

    y, half = s[12:], len(X) // 2  # fold 0 (KFold, no shuffle): test on the first half
    f = Forecaster(**{**TINY_FORECAST, "epochs": 10}).fit(X[half:], y[half:])
    assert scores[0] == pytest.approx(r2_score(y[:half], f.predict(X[:half])), abs=1e-6)
    assert scores.min() > 0.5, scores  # it does learn the sine in 10 epochs


def test_forecaster_input_errors(forecaster):
    with pytest.raises(DataError, match="index"):
        Forecaster(**TINY_FORECAST).fit(np.array([1.0, np.nan] * 20))
    with pytest.raises(DataError, match="needs the last history=12"):
        forecaster.predict(np.arange(5.0))
    with pytest.raises(ValueError, match="highway"):
        Forecaster(history=4, highway=6).fit(sine_series(40))


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
    w = np.lib.stride_tricks.sliding_window_view(x, f.history_steps_)[-20:]
    # a network that can only hurt: the validation targets are the linear forecasts
    target = f.linear_.forecast(w, 1)
    assert f._gate(w, target, f.linear_) == 0.0
    np.testing.assert_allclose(f.predict(w), target[:, 0], atol=1e-9)


def test_a_series_too_short_to_validate_gets_the_linear_part_alone():
    """22 values: the default rule holds none out (16 must be left to fit), so nothing
    can show that the LSTM term helps: weight 0, the forecasts are the linear part's.
    validation_fraction=0 asks for no validation: the network's term is kept whole."""
    x = ar2(22, seed=6)
    f = Forecaster(**FAST).fit(x)
    assert f.validation_metrics_ is None and f.network_weight_ == 0.0
    w = np.lib.stride_tricks.sliding_window_view(x, f.history_steps_)
    np.testing.assert_allclose(f.predict(w), f.linear_.forecast(w, 1)[:, 0], atol=1e-9)
    g = Forecaster(**FAST, validation_fraction=0.0).fit(x)
    assert g.network_weight_ == 1.0
    assert np.abs(g.predict(w) - g.linear_.forecast(w, 1)[:, 0]).max() > 1e-3


def test_without_validation_kpss_decides_the_first_differences(tmp_path):
    """Nothing to validate the transform on: the values, or their first differences where a
    KPSS test rejects level stationarity (the AR(2) series: statistic 0.17; its running sum:
    0.82, above 0.463); forecast.json records the rules, and a run folder resumes with the
    rules it started with (the committed old folders: tests/test_run_folder_compat.py),
    never with rules this gatelab does not know."""
    level = Forecaster(**FAST).fit(ar2(22, seed=6))
    assert level.validation_metrics_ is None
    assert (level.linear_.log, level.linear_.d, level.linear_.D) == (False, 0, 0)
    x = ar2(22, seed=6).cumsum()
    f = Forecaster(**FAST).fit(x, run_dir=tmp_path / "run")
    assert f.validation_metrics_ is None
    assert (f.linear_.log, f.linear_.d, f.linear_.D) == (False, 1, 0)
    saved = json.loads((tmp_path / "run" / "forecast.json").read_text())
    assert saved["linear_rules"] == 2 and saved["linear"]["d"] == 1
    g = Forecaster(**FAST).fit(x, run_dir=tmp_path / "run", resume=True)
    assert g.linear_ == f.linear_
    saved["linear_rules"] = 3
    (tmp_path / "run" / "forecast.json").write_text(json.dumps(saved))
    with pytest.raises(RunFolderError, match="linear_rules=3; this gatelab knows 1 and 2"):
        Forecaster(**FAST).fit(x, run_dir=tmp_path / "run", resume=True)
    # history=1 leaves first differences no lag: AR(0) on them, persistence with a drift
    one = Forecaster(**FAST, history=1).fit(x)
    assert (one.linear_.d, one.linear_.p) == (1, 0)
    np.testing.assert_allclose(one.linear_.const, np.mean(np.diff(x)), rtol=1e-9)


def test_a_run_folder_of_the_old_linear_rules_resumes_with_them(tmp_path, monkeypatch):
    """A folder started under rules 1 (no linear_rules in forecast.json) keeps AR on the
    values without validation when resumed; overwrite=True starts under today's rules."""
    import gatelab.estimators.forecaster as forecaster

    x = ar2(22, seed=6).cumsum()
    monkeypatch.setattr(forecaster, "LINEAR_RULES", 1)
    old = Forecaster(**FAST).fit(x, run_dir=tmp_path / "run")
    assert "linear_rules" not in json.loads((tmp_path / "run" / "forecast.json").read_text())
    monkeypatch.undo()
    again = Forecaster(**FAST).fit(x, run_dir=tmp_path / "run", resume=True)
    assert again.linear_rules_ == 1 and again.linear_ == old.linear_ and old.linear_.d == 0
    new = Forecaster(**FAST).fit(x, run_dir=tmp_path / "run", overwrite=True)
    assert new.linear_rules_ == 2 and new.linear_.d == 1


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 40),
    shape=st.sampled_from(["walk", "noise", "constant", "trend", "step", "huge"]),
    history=st.sampled_from([None, 1, 2, 5]),
    no_validation=st.booleans(),
)
def test_short_series_fit_or_refuse_clearly(n, shape, history, no_validation):
    """Any short series, window and validation setting: a fit whose forecasts are finite,
    or a DataError / ValueError that names the series' length or the setting."""
    rng = np.random.default_rng(n)
    x = {
        "walk": rng.normal(size=n).cumsum(),
        "noise": rng.normal(size=n),
        "constant": np.full(n, 2.5),
        "trend": 3.0 + 0.5 * np.arange(n),
        "step": np.where(np.arange(n) < n // 2, 0.0, 10.0),
        "huge": 1e150 * (1 + rng.normal(size=n).cumsum()),
    }[shape]
    kw = {**FAST, "epochs": 1, "history": history}
    if no_validation:
        kw["validation_fraction"] = 0.0
    try:
        f = Forecaster(**kw).fit(x)
    except (DataError, ValueError) as err:
        if shape == "huge":  # beyond float32, which the network reads
            assert isinstance(err, DataError) and "beyond float32's 3.4e38" in str(err), err
            return
        assert str(n) in str(err) or "history" in str(err) or "windows" in str(err), err
        return
    assert shape != "huge" and np.isfinite(f.predict()).all()


def test_large_values_are_not_rounded_to_float32():
    """A meter at 12 million rising by 1.5 a step: the linear part (persistence with a
    drift) forecasts it exactly, so its validation RMSE and evaluate's RMSE are ~0. The
    windows were float32 (spaced 1.0 apart at 12 million): 0.25 and 0.27."""
    from gatelab.tasks.estimator_kinds import forecast_metrics

    x = 12_345_678.9 + 1.5 * np.arange(120)
    f = Forecaster(**FAST).fit(x[:100])
    assert f.validation_metrics_["linear_rmse"] < 1e-3, f.validation_metrics_
    assert forecast_metrics(f, x, start=100)["rmse"] < 1e-3
    np.testing.assert_allclose(f.predict(), [x[100]], rtol=0, atol=1e-3)


def test_multi_step_and_short_series():
    x = ar2(60, seed=5)
    f = Forecaster(horizon=3, **FAST).fit(x)
    assert f.predict().shape == (3,)
    assert f.history_steps_ <= 60 // 4 + f.linear_.window
    with pytest.raises(ValueError, match="season=-1"):
        Forecaster(season=-1).fit(x)


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
    # no linear part, no gate: the validation metrics are the network's own, nothing more
    metrics = est.validation_metrics_
    assert set(metrics) == {"rmse", "mae"} and est.network_weight_ == 1.0
    windows = np.stack([series[t - est.history_steps_ : t] for t in range(160, 200)])
    want = np.sqrt(np.mean((est.predict(windows) - series[160:200]) ** 2))
    np.testing.assert_allclose(metrics["rmse"], want, **TOL[torch.float32])  # float32 network


def test_epochs_follow_the_windows_and_the_steps_the_network_reads():
    """epochs=None: about 1,500 optimizer steps of batch 32 for a network reading up to 24
    values, proportionally fewer beyond (the work per model stays bounded), 10..300."""
    f = Forecaster()
    f.network_steps_ = 24
    assert f._epochs(1750) == 28  # ceil(1500 / 55 batches)
    assert f._epochs(60) == 300  # 2 batches an epoch: capped
    f.network_steps_ = 48  # a weekly season read twice: half the steps
    assert f._epochs(1750) == 14  # ceil(750 / 55)
    assert f._epochs(100_000) == 10  # at least 10 passes
    f.network_steps_ = 12
    assert f._epochs(1750) == 28  # never more than 1,500 steps
    assert Forecaster(epochs=7)._epochs(1750) == 7
