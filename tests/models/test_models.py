"""LSTM -> Dense models: pooling over real steps, padding independence, configs, heads."""

from __future__ import annotations

import json

import pytest
import torch

from gatelab.models.heads import (
    ForecastNet,
    ModelConfig,
    SequenceClassifier,
    SequenceRegressor,
    build_model,
)
from tests.helpers import TOL


def _classifier(pooling: str, bidirectional: bool, tokens: bool = True, **kw) -> SequenceClassifier:
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="classifier",
        output_size=3,
        vocab_size=20 if tokens else 0,
        input_size=2,
        embedding_dim=6,
        hidden_size=5,
        bidirectional=bidirectional,
        pooling=pooling,
        **kw,
    )
    return SequenceClassifier(cfg).double().eval()


def _batch(tokens: bool, lengths=(5, 2, 4, 1)):
    g = torch.Generator().manual_seed(1)
    T = max(lengths)
    if tokens:
        x = torch.randint(2, 20, (len(lengths), T), generator=g)
        for i, n in enumerate(lengths):
            x[i, n:] = 0
    else:
        x = torch.randn(len(lengths), T, 2, generator=g, dtype=torch.float64)
        for i, n in enumerate(lengths):
            x[i, n:] = 0.0
    return x, torch.tensor(lengths)


def _manual_pool(model, x, lengths) -> torch.Tensor:
    """Each sequence alone, cut to its real steps, pooled by hand."""
    rows = []
    for i, n in enumerate(lengths.tolist()):
        xi = x[i : i + 1, :n]
        e = model.embedding(xi) if model.config.tokens else model.projection(xi)
        out, _ = model.lstm(e)  # (1, n, D*H)
        pooling = model.config.pooling
        if pooling == "last":
            H = model.config.hidden_size
            fwd = out[0, n - 1, :H]
            parts = [fwd] + ([out[0, 0, H:]] if model.config.bidirectional else [])
            rows.append(torch.cat(parts))
        elif pooling == "mean":
            rows.append(out[0].sum(0) / n)
        else:
            rows.append(out[0].max(0).values)
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("tokens", [True, False])
def test_pooling_uses_only_real_steps(pooling, bidirectional, tokens):
    model = _classifier(pooling, bidirectional, tokens)
    x, lengths = _batch(tokens)
    with torch.no_grad():
        got = model.encode(x, lengths)
        want = _manual_pool(model, x, lengths)
    torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_output_does_not_depend_on_padding_length(pooling):
    model = _classifier(pooling, bidirectional=True)
    x, lengths = _batch(tokens=True)
    extra = torch.cat([x, torch.zeros(x.shape[0], 7, dtype=x.dtype)], dim=1)
    junk = extra.clone()
    junk[:, x.shape[1] :] = 9  # garbage after the end must not matter either
    with torch.no_grad():
        a = model(x, lengths)
        b = model(extra, lengths)
        c = model(junk, lengths)
    torch.testing.assert_close(a, b, **TOL[torch.float64])
    torch.testing.assert_close(a, c, **TOL[torch.float64])


def test_unpadded_batch_needs_no_lengths():
    model = _classifier("mean", bidirectional=True)
    x, _ = _batch(tokens=True, lengths=(4, 4, 4))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, torch.tensor([4, 4, 4])))


def test_reference_backend_gives_the_native_result():
    native = _classifier("max", bidirectional=True, backend="native")
    torch.manual_seed(0)
    cfg = dict(native.config.to_dict(), backend="reference")
    reference = SequenceClassifier(ModelConfig.from_dict(cfg)).double().eval()
    reference.load_state_dict(native.state_dict())
    x, lengths = _batch(tokens=True)
    with torch.no_grad():
        torch.testing.assert_close(reference(x, lengths), native(x, lengths), atol=1e-10, rtol=0)


def test_the_fused_kernels_build_on_this_machine():
    """Every variant runs on the fused C++ kernels; where they cannot be built, ``auto``
    falls back to the Python reference loop with a warning, which a test run would
    otherwise drown in. Say here, once and loudly, why they did not build."""
    from gatelab import LSTM
    from gatelab.nn.backends import fused

    ok, why = fused.can_run(LSTM(2, 3, variant="peephole"), "cpu")
    assert ok, f"the fused kernels cannot run on this machine: {why}"


@pytest.mark.parametrize("variant", ["peephole", "cifg", "layernorm"])
def test_any_variant_learns_on_the_fused_backend(variant):
    """Thirty Adam steps on a fixed batch drive the loss well down: the gradients of
    every variant reach every parameter and point downhill (a zero or wrong gradient
    would leave the loss where it started)."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="classifier", vocab_size=20, embedding_dim=4, hidden_size=4, variant=variant,
        dropout=0.0, embedding_dropout=0.0, word_dropout=0.0,
    )  # fmt: skip
    model = SequenceClassifier(cfg)
    x, lengths = _batch(tokens=True)
    y = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        if not losses:
            assert all(p.grad.abs().sum() > 0 for p in model.lstm.parameters())
        opt.step()
        losses.append(loss.item())
    assert model.lstm.spec.is_standard is False
    assert model.lstm.last_backend == "fused"  # not a silent fallback to the Python loop
    assert losses[-1] < 0.25 * losses[0], losses


def test_word_dropout_acts_only_in_training():
    model = _classifier("max", bidirectional=False, word_dropout=0.5)
    x, lengths = _batch(tokens=True)
    with torch.no_grad():
        assert torch.equal(model(x, lengths), model(x, lengths))  # eval: deterministic
        model.train()
        torch.manual_seed(3)
        a = model(x, lengths)
        torch.manual_seed(4)
        b = model(x, lengths)
    assert not torch.equal(a, b)


def test_regressor_and_classifier_heads():
    torch.manual_seed(0)
    reg = SequenceRegressor(ModelConfig(kind="regressor", output_size=2, input_size=3))
    x = torch.randn(4, 6, 3)
    assert reg(x).shape == (4, 2)
    clf = _classifier("mean", bidirectional=True)
    x, lengths = _batch(tokens=True)
    with torch.no_grad():
        p = clf.predict_proba(x, lengths)
    torch.testing.assert_close(p.sum(-1), torch.ones(4, dtype=p.dtype))


def test_forecast_highway_is_a_linear_skip():
    torch.manual_seed(0)
    cfg = ModelConfig(kind="forecaster", output_size=3, input_size=1, embedding_dim=0, highway=4)
    net = ForecastNet(cfg).double().eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    x = torch.randn(5, 10, 1, dtype=torch.float64)
    want = x[:, -4:, 0] @ net.highway.weight.T + net.highway.bias  # (5, 3)
    with torch.no_grad():
        torch.testing.assert_close(net(x), want)


def test_config_is_json_and_round_trips():
    cfg = ModelConfig(kind="forecaster", output_size=4, highway=3, variant="cifg")
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(build_model(again), ForecastNet)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "sum"}, "pooling='sum'"),
        ({"variant": "gru"}, "variant='gru'"),
        ({"hidden_size": 0}, "hidden_size=0"),
        ({"dropout": 1.5}, "dropout=1.5"),
        ({"output_size": 1}, "at least|>= 2"),
        ({"kind": "ranker"}, "kind='ranker'"),
        ({"highway": 3}, "highway"),
        ({"lstm_dropout": 0.3}, r"lstm_dropout=0.3 acts between stacked LSTM layers"),
        ({"backend": "cuda"}, "backend='cuda'; expected one of auto, reference"),
        ({"num_layers": True}, "num_layers=True; expected an int >= 1"),
        ({"vocab_size": -1}, "vocab_size=-1; expected an int >= 0"),
        ({"word_dropout": -0.1}, r"word_dropout=-0.1; expected a probability in \[0, 1\)"),
    ],
)
def test_bad_config_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"kind": "classifier", "hidden": 3})


def test_wrong_input_is_explained():
    model = _classifier("max", bidirectional=False)
    with pytest.raises(ValueError, match="token input"):
        model(torch.randn(2, 3))
    with pytest.raises(ValueError, match="lengths must lie"):
        model(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 3]))


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
