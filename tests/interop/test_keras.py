"""Keras 3 weights both ways, checked against Keras 3 itself on the torch backend.

Each case builds a Keras model with random weights (biases included), then:
Keras -> gatelab: ``model.save("m.keras")`` -> :func:`gatelab.from_keras` gives the same
outputs for the same inputs; ``model.save_weights`` -> ``from_keras(..., into=)`` too.
gatelab -> Keras: new random gatelab weights -> :func:`gatelab.to_keras_weights` ->
Keras's own ``model.load_weights`` gives gatelab's outputs.
"""

from __future__ import annotations

import marshal
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import gatelab
from gatelab.errors import DataError
from gatelab.interop.keras import DENSE_ACTIVATIONS, Dense, KerasModel, Recurrent

# Keras 3's torch backend converts its variables with np.array(variable), which numpy 2
# answers with this DeprecationWarning inside Keras's own save and get_weights; only it is
# let through, every other warning stays an error.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32, as Keras stores weights
B, T, I = 3, 6, 4


@pytest.fixture(scope="module")
def keras():
    """Keras 3 on the torch backend, imported once for the file."""
    backend = os.environ.setdefault("KERAS_BACKEND", "torch")
    if backend != "torch":
        pytest.skip(f"KERAS_BACKEND={backend!r}; these tests check against Keras on torch")
    keras = pytest.importorskip("keras", reason="Keras 3 (the oracle) is not installed")
    if int(keras.__version__.split(".")[0]) < 3 or keras.backend.backend() != "torch":
        pytest.skip(f"needs Keras 3 on the torch backend, got {keras.__version__}")
    pytest.importorskip("h5py", reason="h5py reads and writes Keras weight files")
    return keras


def randomize_keras(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype(np.float32))


def randomize_torch(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def keras_call(model, x):
    out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        return tuple(np.asarray(o.detach().cpu()) for o in out)
    return (np.asarray(out.detach().cpu()),)


def torch_call(module, x):
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))


def assert_same(expected, got, what):
    assert len(expected) == len(got), f"{what}: {len(expected)} outputs vs {len(got)}"
    for k, (e, g) in enumerate(zip(expected, got)):
        assert e.shape == g.shape, f"{what} output {k}: shape {e.shape} vs {g.shape}"
        np.testing.assert_allclose(g, e, **TOL, err_msg=f"{what} output {k}")


def make_input(ids=False, seed=2):
    rng = np.random.default_rng(seed)
    if ids:
        return rng.integers(0, 11, size=(B, T)).astype(np.int64)
    return rng.normal(size=(B, T, I)).astype(np.float32)


def sequential(keras, layers, ids=False):
    shape, dtype = ((T,), "int32") if ids else ((T, I), "float32")
    model = keras.Sequential([keras.Input(shape, dtype=dtype), *layers])
    randomize_keras(model)
    return model


def round_trip(keras, build, tmp_path, ids=False):
    """Both directions for the model ``build(keras)`` makes; returns the gatelab model."""
    x = make_input(ids)
    model = build(keras)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    want = keras_call(model, x)

    # Keras -> gatelab, from the archive
    ours = gatelab.from_keras(tmp_path / "m.keras")
    assert isinstance(ours, KerasModel)
    for m in ours.modules():
        if isinstance(m, gatelab.LSTM) and not m.spec.is_standard:
            # the equations are the point here; test_fused checks the fused kernels, whose
            # first use compiles them (a minute on a cold cache)
            m.backend = "reference"
    assert_same(want, torch_call(ours, x), "from_keras(.keras)")

    # Keras -> gatelab, weights only, into the same structure with other weights
    randomize_torch(ours, seed=5)
    assert gatelab.from_keras(tmp_path / "m.weights.h5", into=ours) is ours
    assert_same(want, torch_call(ours, x), "from_keras(.weights.h5, into=)")

    # gatelab -> Keras
    randomize_torch(ours, seed=7)
    gatelab.to_keras_weights(ours, tmp_path / "g.weights.h5")
    mine = torch_call(ours, x)
    assert not np.allclose(mine[0], want[0], atol=1e-3), "new weights should change the output"
    model.load_weights(tmp_path / "g.weights.h5")
    assert_same(mine, keras_call(model, x), "Keras load_weights(to_keras_weights)")
    return ours


def L(cls, *args, **kwargs):
    return lambda keras: getattr(keras.layers, cls)(*args, **kwargs)


def BiL(inner, *args, merge_mode="concat", **kwargs):
    return lambda keras: keras.layers.Bidirectional(
        getattr(keras.layers, inner)(*args, **kwargs), merge_mode=merge_mode
    )


LAYER_CASES = {
    "lstm": L("LSTM", 5),
    "lstm_sequences_state": L("LSTM", 5, return_sequences=True, return_state=True),
    "lstm_no_bias": L("LSTM", 5, use_bias=False),
    "lstm_tanh_gates_linear": L(
        "LSTM", 5, recurrent_activation="tanh", activation="linear", return_sequences=True
    ),
    "lstm_go_backwards": L("LSTM", 5, go_backwards=True, return_sequences=True),
    "lstm_go_backwards_last": L("LSTM", 5, go_backwards=True),
    "gru": L("GRU", 5),
    "gru_sequences_state_no_bias": L(
        "GRU", 5, return_sequences=True, return_state=True, use_bias=False
    ),
    "gru_reset_before": L("GRU", 5, reset_after=False),
    "gru_reset_before_sequences_state_no_bias": L(
        "GRU", 5, reset_after=False, return_sequences=True, return_state=True, use_bias=False
    ),
    "simple_rnn": L("SimpleRNN", 5),
    "simple_rnn_relu_sequences": L("SimpleRNN", 5, activation="relu", return_sequences=True),
    "simple_rnn_state": L("SimpleRNN", 5, return_state=True),
    "bi_lstm_concat_sequences": BiL("LSTM", 5, return_sequences=True),
    "bi_gru_sum": BiL("GRU", 5, merge_mode="sum"),
    "bi_gru_concat_sequences_state": BiL("GRU", 5, return_sequences=True, return_state=True),
    "bi_gru_reset_before_concat_sequences_state": BiL(
        "GRU", 5, reset_after=False, return_sequences=True, return_state=True
    ),
    "bi_gru_reset_before_ave": BiL("GRU", 5, reset_after=False, merge_mode="ave"),
    "bi_rnn_mul_sequences": BiL("SimpleRNN", 5, merge_mode="mul", return_sequences=True),
    "bi_lstm_ave": BiL("LSTM", 5, merge_mode="ave"),
    "bi_lstm_none_state": BiL("LSTM", 5, merge_mode=None, return_state=True),
    "dense_3d": L("Dense", 3),
    "dense_no_bias": L("Dense", 3, use_bias=False),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_round_trip(keras, tmp_path, case):
    ours = round_trip(keras, lambda k: sequential(k, [LAYER_CASES[case](k)]), tmp_path)
    kinds = {"lstm": gatelab.LSTM, "gru": gatelab.GRU, "rnn": gatelab.RNN, "simple": gatelab.RNN}
    kind = case.removeprefix("bi_").split("_")[0]
    if kind in kinds:
        assert type(ours[0].rnn) is kinds[kind]
        assert ours[0].rnn.bidirectional == case.startswith("bi_")
    if kind == "gru":
        assert ours[0].rnn.reset_after == ("reset_before" not in case)


def test_embedding_round_trip(keras, tmp_path):
    ours = round_trip(
        keras, lambda k: sequential(k, [k.layers.Embedding(11, 4)], ids=True), tmp_path, ids=True
    )
    assert isinstance(ours[0], nn.Embedding)


@pytest.mark.parametrize("activation", sorted(DENSE_ACTIVATIONS))
def test_dense_activations_match_keras(keras, tmp_path, activation):
    x = make_input()[:, 0]  # (B, I)
    model = keras.Sequential([keras.Input((I,)), keras.layers.Dense(3, activation=activation)])
    randomize_keras(model)
    model.save(tmp_path / "d.keras")
    ours = gatelab.from_keras(tmp_path / "d.keras")
    assert isinstance(ours[0], Dense)  # Keras writes swish as silu, hard_swish as hard_silu
    assert DENSE_ACTIVATIONS[ours[0].activation] is DENSE_ACTIVATIONS[activation]
    assert_same(keras_call(model, x), torch_call(ours, x), activation)


def test_embedding_lstm_dense_sequential(keras, tmp_path):
    def build(k):
        layers = [k.layers.Embedding(11, 4), k.layers.LSTM(5), k.layers.Dense(3, "softmax")]
        return sequential(k, layers, ids=True)

    ours = round_trip(keras, build, tmp_path, ids=True)
    assert [type(m) for m in ours] == [nn.Embedding, Recurrent, Dense]
    assert isinstance(ours[1].rnn, gatelab.LSTM) and ours[1].rnn.spec.is_standard


def test_functional_bidirectional_lstm_dense(keras, tmp_path):
    def build(k):
        inputs = k.Input((T, I))
        hidden = k.layers.Bidirectional(k.layers.LSTM(5))(inputs)
        model = k.Model(inputs, k.layers.Dense(2, activation="sigmoid")(hidden))
        randomize_keras(model)
        return model

    ours = round_trip(keras, build, tmp_path)
    assert ours[0].rnn.bidirectional and ours[0].merge_mode == "concat"


def test_stacked_recurrent_layers_with_dropout(keras, tmp_path):
    def build(k):
        layers = [
            k.layers.LSTM(5, return_sequences=True),
            k.layers.Dropout(0.5),
            k.layers.LSTM(6, return_sequences=True),
            k.layers.GRU(4),
            k.layers.Dense(2),
        ]
        return sequential(k, layers)

    round_trip(keras, build, tmp_path)


def test_gatelab_layers_to_keras(keras, tmp_path):
    """Plain gatelab and torch.nn layers -> the Keras layers to_keras_weights returns,
    built by Keras from that description alone."""
    x = make_input()
    lstm = gatelab.LSTM(I, 5, num_layers=2, batch_first=True, variant="tanh_gates")
    lstm.backend = "reference"  # no compile of the fused kernels here (test_fused has them)
    gru = gatelab.GRU(5, 3, bidirectional=True, batch_first=True)
    head = nn.Linear(6, 2)
    randomize_torch(lstm, 1), randomize_torch(gru, 2), randomize_torch(head, 3)
    layers = gatelab.to_keras_weights([lstm, gru, head], tmp_path / "g.weights.h5")
    assert [c["class_name"] for c in layers] == ["LSTM", "LSTM", "Bidirectional", "Dense"]
    assert layers[0]["config"]["recurrent_activation"] == "tanh"
    assert layers[2]["config"]["layer"]["class_name"] == "GRU"
    assert layers[2]["config"]["layer"]["config"]["units"] == 3
    model = keras.Sequential([keras.Input((T, I)), *map(keras.layers.deserialize, layers)])
    model.load_weights(tmp_path / "g.weights.h5")
    with torch.no_grad():
        want = head(gru(lstm(torch.from_numpy(x))[0])[0]).numpy()
    assert_same((want,), keras_call(model, x), "gatelab layers -> Keras")

    # and back, into fresh layers
    fresh = [
        gatelab.LSTM(I, 5, num_layers=2, batch_first=True, variant="tanh_gates"),
        nn.LSTM(5, 3, batch_first=True, bidirectional=True),
        nn.Linear(6, 2),
    ]
    with pytest.raises(
        DataError, match=r"forward_layer/cell/vars/0' has shape \(5, 9\).*needs \(5, 12\)"
    ):
        gatelab.from_keras(tmp_path / "g.weights.h5", into=fresh[:1] + fresh[2:] + [fresh[1]])
    fresh[1] = gatelab.GRU(5, 3, bidirectional=True, batch_first=True)
    fresh[0].backend = "reference"
    gatelab.from_keras(tmp_path / "g.weights.h5", into=fresh)
    with torch.no_grad():
        got = fresh[2](fresh[1](fresh[0](torch.from_numpy(x))[0])[0]).numpy()
    assert_same((want,), (got,), "to_keras_weights -> from_keras(into=)")


def test_keras_lstm_loads_into_gatelab_lstm(keras, tmp_path):
    """kernel.T -> weight_ih, recurrent_kernel.T -> weight_hh, bias -> bias_ih, bias_hh 0."""
    x = make_input()
    model = sequential(keras, [keras.layers.LSTM(5, return_sequences=True)])
    model.save_weights(tmp_path / "k.weights.h5")
    model.save(tmp_path / "k.keras")
    from_archive = gatelab.LSTM(I, 5, batch_first=True)
    assert gatelab.from_keras(tmp_path / "k.keras", into=from_archive) is from_archive
    lstm = gatelab.from_keras(tmp_path / "k.weights.h5", into=gatelab.LSTM(I, 5, batch_first=True))
    for a, b in zip(lstm.parameters(), from_archive.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    cell = model.layers[0].cell
    kernel, recurrent, bias = (np.asarray(v.value.detach()) for v in cell.weights)
    np.testing.assert_array_equal(lstm.weight_ih_l0.detach().numpy(), kernel.T)
    np.testing.assert_array_equal(lstm.weight_hh_l0.detach().numpy(), recurrent.T)
    np.testing.assert_array_equal(lstm.bias_ih_l0.detach().numpy(), bias)
    assert not lstm.bias_hh_l0.detach().any()
    with torch.no_grad():
        got = lstm(torch.from_numpy(x))[0].numpy()
    assert_same(keras_call(model, x), (got,), "Keras LSTM -> gatelab.LSTM")


def test_keras_gru_reset_before_loads_into_gatelab_gru(keras, tmp_path):
    """GRU(reset_after=False): blocks z, r swapped, its one bias (3H,) -> bias_ih,
    bias_hh 0; the layout of the other convention is refused naming both shapes."""
    x = make_input()
    model = sequential(keras, [keras.layers.GRU(5, reset_after=False, return_sequences=True)])
    model.save_weights(tmp_path / "k.weights.h5")
    gru = gatelab.GRU(I, 5, batch_first=True, reset_after=False)
    assert gatelab.from_keras(tmp_path / "k.weights.h5", into=gru) is gru
    kernel, recurrent, bias = (np.asarray(v.value.detach()) for v in model.layers[0].cell.weights)
    assert bias.shape == (15,)

    def zrh_to_rzn(a):
        z, r, h = np.split(a, 3, axis=-1)
        return np.concatenate([r, z, h], axis=-1)

    np.testing.assert_array_equal(gru.weight_ih_l0.detach().numpy(), zrh_to_rzn(kernel).T)
    np.testing.assert_array_equal(gru.weight_hh_l0.detach().numpy(), zrh_to_rzn(recurrent).T)
    np.testing.assert_array_equal(gru.bias_ih_l0.detach().numpy(), zrh_to_rzn(bias))
    assert not gru.bias_hh_l0.detach().any()
    with torch.no_grad():
        got = gru(torch.from_numpy(x))[0].numpy()
    assert_same(keras_call(model, x), (got,), "Keras GRU(reset_after=False) -> gatelab.GRU")
    with pytest.raises(DataError, match=r"has shape \(15,\).*needs \(2, 15\).*reset_after=True"):
        gatelab.from_keras(tmp_path / "k.weights.h5", into=gatelab.GRU(I, 5, batch_first=True))
    model.save(tmp_path / "k.keras")
    with zipfile.ZipFile(tmp_path / "k.keras") as src:
        with zipfile.ZipFile(tmp_path / "bad.keras", "w") as dst:
            config = src.read("config.json").decode()
            assert config.count('"reset_after": false') == 1
            dst.writestr("config.json", config.replace('"reset_after": false', '"reset_after": 0'))
            dst.writestr("model.weights.h5", src.read("model.weights.h5"))
    with pytest.raises(DataError, match=r"\(class GRU\): reset_after=0; expected true or false"):
        gatelab.from_keras(tmp_path / "bad.keras")


def test_gatelab_gru_reset_before_to_keras(keras, tmp_path):
    """A two-layer bidirectional gatelab.GRU(reset_after=False), both biases nonzero ->
    the Keras layers to_keras_weights describes, built by Keras from that alone."""
    x = make_input()
    gru = gatelab.GRU(I, 3, num_layers=2, bidirectional=True, batch_first=True, reset_after=False)
    randomize_torch(gru, 4)
    layers = gatelab.to_keras_weights(gru, tmp_path / "g.weights.h5")
    assert [c["class_name"] for c in layers] == ["Bidirectional", "Bidirectional"]
    assert all(c["config"]["layer"]["config"]["reset_after"] is False for c in layers)
    model = keras.Sequential([keras.Input((T, I)), *map(keras.layers.deserialize, layers)])
    model.load_weights(tmp_path / "g.weights.h5")
    with torch.no_grad():
        want = gru(torch.from_numpy(x))[0].numpy()
    assert_same((want,), keras_call(model, x), "gatelab.GRU(reset_after=False) -> Keras")
    back = gatelab.GRU(I, 3, num_layers=2, bidirectional=True, batch_first=True, reset_after=False)
    gatelab.from_keras(tmp_path / "g.weights.h5", into=back)
    with torch.no_grad():
        got = back(torch.from_numpy(x))[0].numpy()
    assert_same((want,), (got,), "to_keras_weights -> from_keras(into=)")


def test_torch_nn_lstm_to_keras(keras, tmp_path):
    x = make_input()
    lstm = nn.LSTM(I, 5, batch_first=True)
    gatelab.to_keras_weights(lstm, tmp_path / "t.weights.h5")
    model = keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(5, return_sequences=True)])
    model.load_weights(tmp_path / "t.weights.h5")
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    assert_same((want,), keras_call(model, x), "torch.nn.LSTM -> Keras")


# ----------------------------------------------------------------------------- bad input


def save(keras, layers, path, ids=False):
    sequential(keras, layers, ids=ids).save(path)
    return path


def test_unsupported_layer_names_layer_and_class(keras, tmp_path):
    path = save(keras, [keras.layers.Conv1D(2, 3, name="feature_conv")], tmp_path / "c.keras")
    with pytest.raises(DataError, match=r"'feature_conv' \(class Conv1D\)"):
        gatelab.from_keras(path)


def test_lambda_layer_is_refused_and_never_run(keras, tmp_path, monkeypatch):
    flag = tmp_path / "ran"

    def side_effect(t):
        flag.touch()
        return t * 2

    layers = [keras.layers.LSTM(3), keras.layers.Lambda(lambda t: side_effect(t), name="double")]
    path = save(keras, layers, tmp_path / "l.keras")
    flag.unlink()  # Keras ran it while building; gatelab must not

    def forbidden(*args, **kwargs):
        raise AssertionError("from_keras deserialized code")

    for module, name in ((marshal, "loads"), (pickle, "loads"), (pickle, "load")):
        monkeypatch.setattr(module, name, forbidden)
    with pytest.raises(DataError, match=r"'double' \(class Lambda\).*never runs"):
        gatelab.from_keras(path)
    with pytest.raises(DataError, match=r"class Lambda"):
        gatelab.from_keras(path, into=gatelab.LSTM(I, 3, batch_first=True))
    assert not flag.exists()


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            L("LSTM", 4, recurrent_activation="hard_sigmoid", name="l0"),
            r"'l0' \(class LSTM\): recurrent_activation='hard_sigmoid'",
        ),
        (L("LSTM", 4, activation="relu", name="l1"), r"'l1' \(class LSTM\): activation='relu'"),
        (L("SimpleRNN", 4, activation="sigmoid"), r"class SimpleRNN\): activation='sigmoid'"),
        (L("LSTM", 4, stateful=True), r"stateful=True"),
    ],
)
def test_unsupported_recurrent_options_are_refused(keras, tmp_path, layer, message):
    if "stateful" in message:
        model = keras.Sequential([keras.Input((T, I), batch_size=B), layer(keras)])
        model.save(tmp_path / "r.keras")
    else:
        save(keras, [layer(keras)], tmp_path / "r.keras")
    with pytest.raises(DataError, match=message):
        gatelab.from_keras(tmp_path / "r.keras")


def test_masking_embedding_is_refused(keras, tmp_path):
    layers = [keras.layers.Embedding(11, 4, mask_zero=True, name="emb"), keras.layers.LSTM(3)]
    path = save(keras, layers, tmp_path / "m.keras", ids=True)
    with pytest.raises(DataError, match=r"'emb' \(class Embedding\): mask_zero=True"):
        gatelab.from_keras(path)


def test_shape_mismatch_names_both_shapes(keras, tmp_path):
    model = sequential(keras, [keras.layers.LSTM(5)])
    model.save_weights(tmp_path / "w.weights.h5")
    wrong = gatelab.LSTM(3, 5, batch_first=True)
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(DataError, match=r"has shape \(4, 20\).*needs \(3, 20\) for weight_ih_l0"):
        gatelab.from_keras(tmp_path / "w.weights.h5", into=wrong)
    for k, v in wrong.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # untouched on failure
    with pytest.raises(DataError, match=r"no group 'layers/gru/cell/vars'.*\['lstm'\]"):
        gatelab.from_keras(tmp_path / "w.weights.h5", into=gatelab.GRU(I, 5, batch_first=True))


def test_corrupt_files_are_clear_errors(keras, tmp_path):
    good = save(keras, [keras.layers.LSTM(3)], tmp_path / "good.keras")
    data = good.read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.keras is not a Keras .keras archive"):
        gatelab.from_keras(tmp_path / "cut.keras")
    (tmp_path / "noise.keras").write_bytes(b"\x00not a zip" * 50)
    with pytest.raises(DataError, match=r"noise.keras is not a Keras .keras archive"):
        gatelab.from_keras(tmp_path / "noise.keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as z:
        z.writestr("metadata.json", "{}")
    with pytest.raises(DataError, match=r"holds config.json and model.weights.h5"):
        gatelab.from_keras(tmp_path / "empty.keras")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "badh5.keras", "w") as dst:
        dst.writestr("config.json", src.read("config.json"))
        dst.writestr("model.weights.h5", b"garbage" * 100)
    with pytest.raises(DataError, match=r"not a readable HDF5 weights file"):
        gatelab.from_keras(tmp_path / "badh5.keras")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "badjson.keras", "w") as dst:
        dst.writestr("config.json", b"{not json")
        dst.writestr("model.weights.h5", src.read("model.weights.h5"))
    with pytest.raises(DataError, match=r"config.json is not valid JSON"):
        gatelab.from_keras(tmp_path / "badjson.keras")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "units.keras", "w") as dst:
        config = src.read("config.json").decode().replace('"units": 3', '"units": 4')
        dst.writestr("config.json", config)
        dst.writestr("model.weights.h5", src.read("model.weights.h5"))
    with pytest.raises(DataError, match=r"has shape \(4, 12\), but .* needs \(4, 16\)"):
        gatelab.from_keras(tmp_path / "units.keras")
    (tmp_path / "x.weights.h5").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match=r"not a readable HDF5"):
        gatelab.from_keras(tmp_path / "x.weights.h5", into=gatelab.LSTM(I, 3))
    with pytest.raises(FileNotFoundError, match=r"missing\.keras"):
        gatelab.from_keras(tmp_path / "missing.keras")


def test_weights_file_needs_into(keras, tmp_path):
    sequential(keras, [keras.layers.LSTM(3)]).save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match=r"holds no layer types.*into="):
        gatelab.from_keras(tmp_path / "w.weights.h5")


def test_to_keras_weights_refuses_what_keras_cannot_hold(tmp_path):
    pytest.importorskip("h5py")
    with pytest.raises(ValueError, match=r"ending in .weights.h5"):
        gatelab.to_keras_weights(gatelab.LSTM(3, 4), tmp_path / "w.h5")
    with pytest.raises(ValueError, match=r"peephole=True.*a Keras LSTM computes"):
        gatelab.to_keras_weights(gatelab.LSTM(3, 4, variant="peephole"), tmp_path / "p.weights.h5")
    with pytest.raises(ValueError, match=r"proj_size=2"):
        gatelab.to_keras_weights(gatelab.LSTM(3, 4, proj_size=2), tmp_path / "p.weights.h5")
    with pytest.raises(TypeError, match=r"module\[1\] \(Conv1d\) is a Conv1d"):
        gatelab.to_keras_weights([nn.Linear(2, 2), nn.Conv1d(2, 2, 3)], tmp_path / "c.weights.h5")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_to_keras_weights_writes_atomically_honouring_the_umask(tmp_path, monkeypatch, mask):
    pytest.importorskip("h5py")
    import gatelab.train.files

    synced, fsync_dir = [], gatelab.train.files.fsync_dir
    monkeypatch.setattr(
        gatelab.train.files, "fsync_dir", lambda d: (synced.append(d), fsync_dir(d))
    )
    lstm = gatelab.LSTM(3, 4, batch_first=True)
    randomize_torch(lstm, 1)
    old = os.umask(mask)
    try:
        gatelab.to_keras_weights(lstm, tmp_path / "w.weights.h5")
    finally:
        os.umask(old)
    path = tmp_path / "w.weights.h5"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    assert synced == [tmp_path] and os.listdir(tmp_path) == ["w.weights.h5"]
    fresh = gatelab.LSTM(3, 4, batch_first=True)
    gatelab.from_keras(path, into=[fresh])
    a, b = lstm.state_dict(), fresh.state_dict()  # Keras holds one bias: b_ih + b_hh
    for name in ("weight_ih_l0", "weight_hh_l0"):
        assert torch.equal(a[name], b[name]), name
    torch.testing.assert_close(a["bias_ih_l0"] + a["bias_hh_l0"], b["bias_ih_l0"] + b["bias_hh_l0"])


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install gatelab\[interop\]"):
        gatelab.to_keras_weights(gatelab.LSTM(3, 4), tmp_path / "w.weights.h5")


def test_functional_model_that_is_not_a_chain_is_refused(keras, tmp_path):
    inputs = keras.Input((T, I))
    shared = keras.layers.Dense(I, name="twice")
    keras.Model(inputs, shared(shared(inputs))).save(tmp_path / "shared.keras")
    with pytest.raises(DataError, match=r"'twice' \(class Dense\): it takes its input from"):
        gatelab.from_keras(tmp_path / "shared.keras")
