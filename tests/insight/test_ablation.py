"""Ablations (gatelab.insight.ablation): the statistics against scipy and by hand, and the
runner over variants x seeds on a synthetic task."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from gatelab.insight import ablation as A
from gatelab.insight.ablation import ablate

TINY = {"T": 10, "hidden_size": 4, "steps": 3, "batch_size": 8, "valid_size": 16}
TINY.update(test_size=16, eval_every=2)


def test_welch_t_test_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.91, 0.95, 0.97, 0.93], [0.5, 0.62, 0.41]
    t, p = A.welch_t_test(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert math.isclose(t, ref.statistic, rel_tol=1e-12)
    assert math.isclose(p, ref.pvalue, rel_tol=1e-12)
    # by hand: t = (ma - mb) / sqrt(va/na + vb/nb)
    ma, mb = sum(a) / 4, sum(b) / 3
    va = sum((v - ma) ** 2 for v in a) / 3
    vb = sum((v - mb) ** 2 for v in b) / 2
    assert math.isclose(t, (ma - mb) / math.sqrt(va / 4 + vb / 3), rel_tol=1e-12)


def test_welch_t_test_undefined_cases_are_nan():
    assert all(math.isnan(v) for v in A.welch_t_test([1.0], [0.5, 0.6]))
    assert all(math.isnan(v) for v in A.welch_t_test([1.0, 1.0], [1.0, 1.0]))


def test_ablation_table_and_markdown():
    rows = A.ablation_table({"standard": [0.9, 0.95, 1.0], "nfg": [0.2, 0.3, 0.25], "nog": [0.9]})
    assert [r.variant for r in rows] == ["standard", "nfg", "nog"]
    std, nfg, nog = rows
    assert math.isnan(std.t) and math.isclose(std.mean, 0.95)
    assert math.isclose(std.std, 0.05, rel_tol=1e-9)  # sample std (n - 1)
    t, p = A.welch_t_test(nfg.values, std.values)
    assert (nfg.t, nfg.p) == (t, p) and nfg.t < 0
    assert math.isnan(nog.std) and math.isnan(nog.p)
    md = A.ablation_markdown(rows, metric="solved")
    lines = md.strip().splitlines()
    assert lines[0].startswith("| variant | solved mean")
    assert lines[2].startswith("| standard | 0.950 | 0.050 | 3 | – | – |")
    assert lines[3].startswith("| nfg | 0.250 | 0.050 | 3 |")
    assert nog.to_dict()["std"] is None
    with pytest.raises(ValueError, match="no results"):
        A.ablation_table({"standard": []})


def test_ablate_builds_the_table():
    progress = []
    result = ablate(
        "adding",
        ["standard", "nfg"],
        seeds=2,
        callback=lambda v, s, p: progress.append((v, s, p.step)),
        **dict(TINY, steps=2),
    )
    assert [r.variant for r in result.table] == ["standard", "nfg"]
    assert len(result.runs["nfg"]) == 2 and result.runs["nfg"][1]["seed"] == 1
    assert result.table[1].values == [r["solved"] for r in result.runs["nfg"]]
    assert progress[:2] == [("standard", 0, 1), ("standard", 0, 2)]
    assert len(progress) == 8
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["budget"]["steps"] == 2 and d["metric"] == "solved"


def test_ablate_errors():
    with pytest.raises(
        ValueError, match=r"unknown LSTM variant.*'lstm2'.*expected some of standard"
    ):
        ablate("adding", ["standard", "lstm2"], 1)
    with pytest.raises(ValueError, match="unknown task"):
        ablate("sorting", ["standard"], 1)
    with pytest.raises(ValueError, match="at least one seed"):
        ablate("adding", ["standard"], 0)


def test_ablate_runs_gru_rnn_and_slstm_with_scaled_accuracy():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "gatelab.LSTM", RuntimeWarning)
        result = ablate(
            "parity",
            ["standard", "slstm", "gru", "rnn"],
            seeds=1,
            steps=2,
            hidden_size=4,
            batch_size=4,
            valid_size=10,
            test_size=20,
        )
    assert [r.variant for r in result.table] == ["standard", "slstm", "gru", "rnn"]
    for row in result.table:
        assert row.extra["scaled_accuracy"] == pytest.approx((row.mean - 0.5) / 0.5)
        run = result.runs[row.variant][0]
        assert run["scaled_accuracy"] == pytest.approx((run["accuracy"] - 0.5) / 0.5)
        assert row.extra["valid"] == run["valid"]
    with pytest.raises(ValueError, match=r"expected some of .*slstm.*gru, rnn"):
        ablate("parity", ["lstm"], seeds=1, steps=1)
