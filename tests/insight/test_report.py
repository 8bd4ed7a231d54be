"""gatelab.insight.report and .explain: the report's data, escaping, explain, PNG figures."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
import torch

import gatelab
from gatelab.insight.explain import ExplainError, explain_run, parse_sequence
from gatelab.insight.report import json_for_html, render_html, report_data, write_pngs, write_report
from gatelab.tasks import synthetic as ex

PAYLOAD = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
DATA_RE = re.compile(r'<script type="application/json" id="gatelab-data">(.*?)</script>', re.S)


def small_data(labels=None, **kw):
    torch.manual_seed(0)
    lstm = gatelab.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 3)
    labels = labels or ["a", "b", "c", "d", "e"]
    return lstm, x, report_data(lstm, x, labels=labels, **kw)


def test_json_for_html_cannot_close_the_script_element():
    text = json_for_html({"t": PAYLOAD, "c": "<!-- & -->"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\\u003c/script\\u003e" in text
    assert json.loads(text) == {"t": PAYLOAD, "c": "<!-- & -->"}
    with pytest.raises(ValueError):
        json_for_html({"x": float("nan")})


def test_report_data_shapes():
    lstm, x, data = small_data(marks=[1, 3, 99])
    assert data["tokens"] == ["a", "b", "c", "d", "e"]
    assert data["marks"] == [1, 3]  # out-of-range marks are dropped
    assert [entry["name"] for entry in data["layers"]] == ["layer 0", "layer 1"]
    keys = [s["key"] for s in data["series"]]
    assert keys == ["input_gate", "forget_gate", "candidate", "output_gate", "cell", "hidden"]
    _, _, trace = lstm(x, return_trace=True)
    values = data["layers"][1]["values"]["forget_gate"]
    assert len(values) == 5 and len(values[0]) == 4
    torch.testing.assert_close(torch.tensor(values), trace.forget_gate[1], atol=1e-4, rtol=1e-3)
    flow = data["layers"][0]["flow"]
    assert len(flow["keep"]) == 5 and len(flow["keep_units"][0]) == 4
    assert {(s["layer"], s["gate"]) for s in data["saturation"]} == {
        (layer, gate) for layer in (0, 1) for gate in ("input_gate", "forget_gate", "output_gate")
    }
    assert data["series"][0]["range"] == [0.0, 1.0] and data["series"][2]["range"] == [-1.0, 1.0]
    assert data["gradient_flow"] is None
    json.dumps(data, allow_nan=False)


def test_report_data_for_gru_rnn_and_tanh_gates():
    torch.manual_seed(0)
    x = torch.randn(4, 2)
    gru = report_data(gatelab.GRU(2, 3), x, labels="wxyz")
    assert [s["key"] for s in gru["series"]] == ["candidate", "hidden", "reset_gate", "update_gate"]
    assert gru["layers"][0]["flow"] is None and len(gru["saturation"]) == 2
    rnn = report_data(gatelab.RNN(2, 3), x, labels="wxyz")
    assert rnn["saturation"] == [] and "no gates" in rnn["saturation_note"]
    tanh = report_data(gatelab.LSTM(2, 3, variant="tanh_gates"), x, labels="wxyz")
    assert tanh["series"][0]["range"] == [-1.0, 1.0]
    assert tanh["saturation"][0]["low"] == pytest.approx(-0.8)


def test_report_data_errors():
    lstm = gatelab.LSTM(3, 4)
    with pytest.raises(ValueError, match="got 2 labels for 5 steps"):
        report_data(lstm, torch.randn(5, 3), labels=["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        report_data(lstm, torch.randn(0, 3), labels=[])
    with pytest.raises(ValueError, match="one sequence"):
        report_data(lstm, torch.randn(5, 1, 3), labels="abcde")
    with pytest.raises(TypeError, match="gatelab LSTM"):
        report_data(torch.nn.LSTM(3, 4), torch.randn(5, 3), labels="abcde")


def test_every_piece_of_user_text_is_escaped():
    labels = [PAYLOAD, "<b>bold</b>", "&amp;", "ok", '"quote"']
    _, _, data = small_data(
        labels=labels,
        title=PAYLOAD,
        subtitle=PAYLOAD,
        results=[{"model<i>": PAYLOAD, "solved": 0.5}],
        notes=[PAYLOAD],
    )
    page = render_html(data)
    assert "__pwned" in page  # the text is there ...
    assert "<img" not in page and "<b>" not in page and "<i>" not in page  # ... inert
    assert page.count("<script") == 2  # the data element and the page's own script
    assert page.count("</script>") == 2
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1" in page  # title, escaped
    (blob,) = DATA_RE.findall(page)
    assert json.loads(blob)["tokens"] == labels  # the data survive intact


def test_content_security_policy_allows_only_the_pages_script():
    _, _, data = small_data()
    page = render_html(data)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    (csp,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_write_report_and_pngs(tmp_path):
    _, _, data = small_data(
        gradient_flow={"models": [{"name": "LSTM", "hidden": [1e-6, 1e-3, 0.1, 1, 1]}]},
        results=[{"model": "LSTM", "solved": 0.99}],
    )
    path = write_report(data, tmp_path / "sub" / "r.html")
    assert path.read_text(encoding="utf-8").startswith("<!doctype html>")
    files = write_pngs(data, tmp_path / "png")
    names = sorted(p.name for p in files)
    assert names == ["flow.png", "gates.png", "gradient_flow.png", "saturation.png", "units.png"]
    for p in files:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- explain

TINY = {"T": 10, "hidden_size": 4, "steps": 2, "batch_size": 8, "valid_size": 8}
TINY.update(test_size=8, eval_every=2)


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "adding"
    ex.save_run(ex.run_experiment(**TINY), path)
    return path


def test_explain_a_sampled_sequence_with_gradient_flow(adding_run):
    data = explain_run(adding_run, seed=3, gradient=True)
    assert len(data["marks"]) == 2 and len(data["tokens"]) >= 10
    assert sum(t.endswith("*") for t in data["tokens"]) == 2
    names = [m["name"] for m in data["gradient_flow"]["models"]]
    assert names == [
        "LSTM (this run)",
        "LSTM (init, forget bias 1)",
        "LSTM (chrono init)",
        "GRU (init)",
        "RNN (init)",
    ]
    assert "target" in data["subtitle"]
    assert data["results"][0]["model"] == "LSTM"


def test_explain_data_file_and_truncation(adding_run, tmp_path):
    rows = "\n".join(f"{0.1 * (t % 7):.2f},{1 if t in (2, 5) else 0}" for t in range(15))
    (tmp_path / "seq.csv").write_text("value,marker\n" + rows + "\n")
    warned = []
    data = explain_run(adding_run, data=tmp_path / "seq.csv", warn=warned.append)
    assert len(data["tokens"]) == 11  # T + T // 10 for T = 10
    assert warned and "15 steps, longer than the 11" in warned[0]
    assert data["marks"] == [2, 5]
    short = explain_run(adding_run, text="0.5,1 0.2,0; -0.3,1 0.1,0")
    assert short["tokens"] == ["+0.50*", "+0.20", "-0.30*", "+0.10"]


def test_explain_errors(adding_run, tmp_path):
    with pytest.raises(ExplainError, match="empty"):
        explain_run(adding_run, text="   ")
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(ExplainError, match="row 1 has 3 values; expected 2"):
        explain_run(adding_run, data=tmp_path / "bad.csv")
    (tmp_path / "words.csv").write_text("0.1,1\nhello,0\n")
    with pytest.raises(ExplainError, match="row 2"):
        explain_run(adding_run, data=tmp_path / "words.csv")
    with pytest.raises(ExplainError, match="cannot read --data"):
        explain_run(adding_run, data=tmp_path / "missing.csv")
    (tmp_path / "notrun").mkdir()
    with pytest.raises(ExplainError, match=r"config\.json' is missing"):
        explain_run(tmp_path / "notrun")


def test_parse_symbols_of_temporal_order_and_copy():
    temporal = ex.ExperimentConfig(task="temporal-order")
    x = parse_sequence(temporal, text="E a X b Y B", data=None)
    assert x.shape == (6, 8) and x.argmax(-1).tolist() == [4, 0, 6, 1, 7, 5]
    assert parse_sequence(temporal, text="EaXbYB", data=None).shape == (6, 8)
    with pytest.raises(ExplainError, match=r"symbol.*'Z'"):
        parse_sequence(temporal, text="E Z B", data=None)
    copy = ex.ExperimentConfig(task="copy")
    assert parse_sequence(copy, text="123__:__", data=None).argmax(-1).tolist() == [
        1,
        2,
        3,
        0,
        0,
        9,
        0,
        0,
    ]


# --------------------------------------------------------------------------- estimator runs


@pytest.fixture(scope="module")
def estimator_runs(tmp_path_factory):
    from gatelab.estimators import Forecaster, SeriesClassifier, TextClassifier

    root = tmp_path_factory.mktemp("estimators")
    texts = ["good film", "bad film", "a good plot", "a bad plot"] * 4
    labels = ["pos", "neg", "pos", "neg"] * 4
    tiny = dict(hidden_size=4, epochs=1, batch_size=8, validation_fraction=0.0)
    TextClassifier(embedding_dim=4, bidirectional=False, pooling="last", max_len=6, **tiny).fit(
        texts, labels
    ).save(root / "text")
    series = torch.randn(12, 9, 2).numpy()
    SeriesClassifier(n_models=2, **tiny).fit(series, [0, 1] * 6).save(root / "series")
    sine = torch.sin(torch.arange(60) / 3.0).numpy()
    Forecaster(history=8, highway=0, hidden_size=4, epochs=1, n_models=1).fit(sine).save(
        root / "forecast"
    )
    return root


def test_explain_a_text_classifier(estimator_runs):
    text = "a good film <script>window.__pwned=1</script> " + "plot " * 10
    warned = []
    data = explain_run(estimator_runs / "text", text=text, gradient=True, warn=warned.append)
    assert len(data["tokens"]) == 6 and data["tokens"][:3] == ["a", "good", "film"]
    assert warned and "more than the 6 the model saw in training" in warned[0]
    assert "Predicted class:" in data["subtitle"]
    assert data["gradient_flow"]["models"][0]["name"] == "this model"
    assert "</script>" not in json_for_html(data)
    with pytest.raises(ExplainError, match="empty"):
        explain_run(estimator_runs / "text", text="  ")
    with pytest.raises(ExplainError, match="on --text, not --data"):
        explain_run(estimator_runs / "text", data="x.csv")


def test_explain_a_patched_series_run_labels_each_lstm_step_by_its_patch(tmp_path):
    """Series cut into patches of 3: the LSTM reads ceil(7 / 3) = 3 steps, labelled by
    the series steps each holds. Two series per class: lstm-rocket's ridge alone decides,
    and the report says that the gates shown do not enter the prediction."""
    from gatelab.estimators import SeriesClassifier

    tiny = dict(hidden_size=4, epochs=1, batch_size=8, n_models=1, kernel_features=168)
    series = torch.randn(4, 9, 1).numpy()
    SeriesClassifier(patch=3, embedding_dim=4, **tiny).fit(series, [0, 1] * 2).save(
        tmp_path / "run"
    )
    (tmp_path / "s.csv").write_text("\n".join(f"{t / 10}" for t in range(7)))
    data = explain_run(tmp_path / "run", data=tmp_path / "s.csv")
    assert data["tokens"] == ["0-2", "3-5", "6-6"]
    assert "a patch of 3 steps" in " ".join(data["notes"])
    assert "do not enter it" in " ".join(data["notes"])


def test_explain_series_runs(estimator_runs, tmp_path):
    (tmp_path / "s.csv").write_text("\n".join(f"{t / 10},{-t / 10}" for t in range(7)))
    data = explain_run(estimator_runs / "series", data=tmp_path / "s.csv")
    assert len(data["tokens"]) == 7 and data["tokens"][1] == "0.1,-0.1"
    assert "ensemble of 2 models" in data["notes"][0]
    assert [entry["name"] for entry in data["layers"]] == ["layer 0", "layer 0 (reverse)"]
    with pytest.raises(ExplainError, match="bidirectional"):
        explain_run(estimator_runs / "series", data=tmp_path / "s.csv", gradient=True)
    (tmp_path / "f.csv").write_text("\n".join(f"{t / 10}" for t in range(20)))
    warned = []
    data = explain_run(estimator_runs / "forecast", data=tmp_path / "f.csv", warn=warned.append)
    assert len(data["tokens"]) == 8 and "last history=8" in warned[0]
    assert data["subtitle"].count("Forecast:") == 1
    (tmp_path / "short.csv").write_text("1\n2\n")
    with pytest.raises(ExplainError, match="needs its history of 8"):
        explain_run(estimator_runs / "forecast", data=tmp_path / "short.csv")
    with pytest.raises(ExplainError, match="not --text"):
        explain_run(estimator_runs / "forecast", text="1 2 3")
