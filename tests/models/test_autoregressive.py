"""gatelab.models.autoregressive: AR by least squares (against statsmodels), the inverted
differences, the direct map, the season from the data."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.stattools import kpss

from gatelab.models.autoregressive import (
    KPSS_5_PERCENT,
    LinearForecast,
    find_season,
    fit_ar,
    fit_direct,
    kpss_statistic,
    needs_differences,
    select_linear,
)
from tests.helpers import (
    ar2,
    seasonal_trend,
)


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


def test_fit_ar_chooses_p_by_statsmodels_aicc_on_a_short_series():
    # random walks of 31 values: p_max 10 leaves 21 rows, where plain AIC takes up to
    # AR(10) and the small-sample correction does not
    chosen, by_aic = [], []
    for seed in range(12):
        x = np.random.default_rng(seed).normal(size=31).cumsum()
        fits = [AutoReg(x, lags=p, trend="c", hold_back=10).fit() for p in range(11)]
        model = fit_ar(x, log=False, d=0, D=0, season=0, p_max=10)
        assert model.p == int(np.argmin([f.aicc for f in fits]))
        chosen.append(model.p)
        by_aic.append(int(np.argmin([f.aic for f in fits])))
    assert chosen != by_aic and max(by_aic) == 10 and max(chosen) < 10


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.InterpolationWarning")
def test_kpss_statistic_equals_statsmodels_and_decides_the_differences():
    decisions = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        for n in (15, 24, 60, 300):
            x = rng.normal(size=n).cumsum() if seed % 2 else rng.normal(size=n)
            lags = int(4 * (n / 100) ** 0.25)
            want = kpss(x, regression="c", nlags=lags, result_object=False)[0]
            assert kpss_statistic(x) == pytest.approx(want, rel=1e-10)
            assert needs_differences(x) == (want > KPSS_5_PERCENT)
            decisions.append((seed % 2, needs_differences(x)))
    walks = [d for walk, d in decisions if walk]
    noise = [d for walk, d in decisions if not walk]
    assert sum(walks) > len(walks) / 2 and sum(noise) < len(noise) / 2
    assert kpss_statistic(np.full(20, 3.0)) == 0.0 and not needs_differences(np.full(20, 3.0))
    with pytest.raises(ValueError, match="at least 2 values, got shape"):
        kpss_statistic(np.array([1.0]))


def test_candidates_without_lags_are_fitted():
    """A window that leaves a transform no lag (here the seasonal difference of period 4
    with a window of 4) still offers its AR(0): the seasonal naive forecast; the old
    rules (criterion "aic") skipped it, as they always had."""
    x = 10 + 5 * np.tile([1.0, -1.0, 2.0, 0.0], 10) + np.random.default_rng(0).normal(0, 0.1, 40)
    windows = np.lib.stride_tricks.sliding_window_view(x[24:-1], 4)
    targets = x[28:, None]
    (_, _, D), table = select_linear(x[:28], windows, targets, season=4, max_window=4)
    assert "AR(0), seasonal differences (period 4)" in [r["name"] for r in table]
    assert D == 1  # the repeating pattern: the seasonal naive forecast wins
    _, old = select_linear(x[:28], windows, targets, season=4, max_window=4, criterion="aic")
    assert not any(r["name"].startswith("AR(0), seasonal") for r in old)
    assert fit_ar(x, log=False, d=1, D=0, season=0, p_max=0).p == 0


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
