"""The ONNX graphs of gatelab's models around their recurrent layers, and their ports.

The graph inputs and outputs (:class:`_Port`: name, example tensor, dynamic axes), and the
nodes of an LSTM -> Dense model (embedding or patches, the convolutional branch, pooling,
the Dense head; an ensemble's mean), of a :class:`gatelab.CharLM`, and of a run folder's
forecaster (the series normalisation and the linear autoregressive part). The recurrent
layers themselves are lowered by :mod:`gatelab.interop._onnx_graph`; the public entry
points live in :mod:`gatelab.interop.onnx`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from gatelab.interop._onnx_bag import with_linear
from gatelab.interop._onnx_graph import Builder, lower_recurrent, recurrent_kind
from gatelab.models.bag import WithLinear
from gatelab.models.charlm import CharLM
from gatelab.models.heads import ForecastNet, _SequenceModel
from gatelab.models.kernels import SNAP


class _Port:
    """A graph input or output: its name, element type, example shape, dynamic axes."""

    def __init__(self, name: str, example: Tensor, dynamic: dict[int, str]) -> None:
        self.name, self.example, self.dynamic = name, example, dynamic

    def info(self, onnx, axes: dict[int, str] | None):
        dynamic = self.dynamic if axes is None else axes
        shape = [dynamic.get(k, int(n)) for k, n in enumerate(self.example.shape)]
        elem = (
            onnx.TensorProto.INT64
            if not self.example.is_floating_point()
            else onnx.TensorProto.FLOAT
        )
        return onnx.helper.make_tensor_value_info(self.name, elem, shape)


def _check_lengths(lengths: Tensor, B: int, T: int, what: str) -> None:
    if lengths.is_floating_point() or lengths.shape != (B,):
        raise ValueError(
            f"{what}: lengths must be an int64 tensor of shape ({B},), got {lengths.dtype} "
            f"{tuple(lengths.shape)}"
        )
    if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
        raise ValueError(
            f"{what}: lengths must lie in [1, T={T}]; got min {int(lengths.min())}, max "
            f"{int(lengths.max())}"
        )


def _is_slstm(module: nn.Module) -> bool:
    spec = getattr(module, "spec", None)
    return spec is not None and spec.normalizer


def _state_names(module: nn.Module) -> tuple[str, ...]:
    """The recurrent layer's state inputs: ``h0`` (GRU, RNN), ``h0, c0`` (LSTM) or ``h0, c0,
    n0, m0`` (sLSTM); the outputs are the same names with ``_n`` for ``0``."""
    if recurrent_kind(module) != "lstm":
        return ("h0",)
    return ("h0", "c0", "n0", "m0") if _is_slstm(module) else ("h0", "c0")


def _embed_tokens(b: Builder, model: _SequenceModel, ids: str) -> str:
    c = model.config
    looked_up = b.op("Mod", [ids, b.ints(c.vocab_size)]) if c.token_feature_sets > 1 else ids
    e = b.op("Gather", [b.const(model.embedding.weight, "embedding"), looked_up], axis=0)
    if c.token_features:
        table = b.const(model.token_feature_table, "token_feature_table")
        e = b.op("Concat", [e, b.op("Gather", [table, ids], axis=0)], axis=-1)  # (B, T, E+F)
    return e


def _linear(b: Builder, x: str, layer: nn.Linear, hint: str) -> str:
    y = b.op("MatMul", [x, b.const(layer.weight.T, f"{hint}_weight_T")])
    if layer.bias is not None:
        y = b.op("Add", [y, b.const(layer.bias, f"{hint}_bias")], hint)
    return y


def _step_mask(b: Builder, x: str, lengths: str, axis: int) -> str:
    """``(B, T)`` bool: step ``t`` of row ``b`` is real, ``T = x.shape[axis]``."""
    T = b.squeeze(b.dim(x, axis), [0])
    steps = b.unsqueeze(b.op("Range", [b.ints(0), T, b.ints(1)]), [0])  # (1, T)
    return b.op("Less", [steps, b.unsqueeze(lengths, [1])])


def _ceil_div(b: Builder, lengths: str, k: int) -> str:
    return b.op("Div", [b.op("Add", [lengths, b.ints(k - 1)]), b.ints(k)])


def _patches(b: Builder, model: _SequenceModel, x: str) -> str:
    """The patch projection: ``x (B, T, C)`` -> ``(B, ceil(T / patch), E)``; zeros complete
    the last patch (the Conv's end padding of ``patch - 1``)."""
    p = model.config.patch
    conv = model.patch_projection
    xt = b.op("Transpose", [x], perm=[0, 2, 1])  # (B, C, T)
    y = b.op(
        "Conv",
        [xt, b.const(conv.weight, "patch_weight"), b.const(conv.bias, "patch_bias")],
        "patches",
        kernel_shape=[p],
        strides=[p],
        pads=[0, p - 1],
    )
    return b.op("Transpose", [y], perm=[0, 2, 1])  # (B, ceil(T / p), E)


def _conv_branch(b: Builder, branch, x: str, lengths: str) -> str:
    """:class:`gatelab.models.heads.ConvBranch` in eval mode: ``x (B, T, C)``, ``lengths (B,)``
    -> ``(B, channels[-1])``. Batch norm in eval mode is an affine map per channel, folded
    into the convolution; padded steps are zeroed after every block."""
    h = b.op("Transpose", [x], perm=[0, 2, 1])  # (B, C, T)
    if branch.pool > 1:
        k = branch.pool
        real = b.op("Cast", [b.unsqueeze(_step_mask(b, h, lengths, 2), [1])], to=1)  # (B, 1, T)
        attrs = dict(kernel_shape=[k], strides=[k], pads=[0, k - 1], count_include_pad=1)
        num = b.op("AveragePool", [b.op("Mul", [h, real])], **attrs)
        den = b.op("Max", [b.op("AveragePool", [real], **attrs), b.const(1e-12, "tiny")])
        h = b.op("Div", [num, den], "pooled_input")  # (B, C, ceil(T / k))
        lengths = _ceil_div(b, lengths, k)
    m = b.op("Cast", [b.unsqueeze(_step_mask(b, h, lengths, 2), [1])], to=1)  # (B, 1, T')
    h = b.op("Mul", [h, m])
    for n, (conv, norm) in enumerate(zip(branch.convs, branch.norms)):
        k = conv.kernel_size[0]
        a = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        shift = norm.bias.detach().double() - norm.running_mean.double() * a
        w = conv.weight.detach().double() * a[:, None, None]
        bias = conv.bias.detach().double() * a + shift
        h = b.op(
            "Conv",
            [h, b.const(w, f"conv{n}_weight"), b.const(bias, f"conv{n}_bias")],
            f"conv{n}",
            kernel_shape=[k],
            pads=[(k - 1) // 2, k // 2],
        )
        h = b.op("Relu", [b.op("Mul", [h, m])])  # (B, F, T'), padding 0
    n = b.op("Cast", [b.unsqueeze(lengths, [1])], to=1)  # (B, 1)
    return b.op("Div", [b.reduce("ReduceSum", h, [2]), n], "conv_features")  # (B, F)


def _kernel_branch(b: Builder, branch, x: str, lengths: str) -> str:
    """:class:`gatelab.models.kernels.KernelBranch` in eval mode: ``x (B, T, C)``,
    ``lengths (B,)`` -> ``(B, F)``: per dilation a Conv, the PPV over the real steps of
    each bias, then the training series' standardisation (and, with ``classes``, the
    closed-form ridge's scores ``(B, classes)``)."""
    m = _step_mask(b, x, lengths, 1)  # (B, T)
    h = b.op("Mul", [x, b.unsqueeze(b.op("Cast", [m], to=1), [2])])
    h = b.op("Transpose", [h], perm=[0, 2, 1])  # (B, C, T)
    m4 = b.unsqueeze(m, [1, 2])  # (B, 1, 1, T)
    parts = []
    for i, d in enumerate(branch.dilations):
        k = slice(84 * i, 84 * (i + 1))
        pad = 4 * d
        conv = b.op(
            "Conv",
            [h, b.const(branch.weight[k], f"kernels{i}")],
            dilations=[d],
            kernel_shape=[9],
            pads=[pad, pad],
        )  # (B, 84, T)
        small = b.op("Less", [b.op("Abs", [conv]), b.const(SNAP, "snap")])
        conv = b.op("Where", [small, b.const(0.0, "zero"), conv])  # rounding of flat runs
        bias = b.const(branch.bias[k][None, :, :, None], f"kernel_bias{i}")  # (1, 84, nb, 1)
        above = b.op("And", [b.op("Greater", [b.unsqueeze(conv, [2]), bias]), m4])
        count = b.reduce("ReduceSum", b.op("Cast", [above], to=1), [3])  # (B, 84, nb)
        parts.append(b.op("Reshape", [count, b.ints([0, -1])]))
    parts.append(b.reduce("ReduceSum", h, [2]))  # (B, C): the channel means' sums
    n = b.op("Cast", [b.unsqueeze(lengths, [1])], to=1)  # (B, 1)
    ppv = b.op("Div", [b.op("Concat", parts, axis=1), n])  # (B, F)
    scale = branch.scale.double()
    shift = -branch.shift.double() * scale
    z = b.op(
        "Add",
        [b.op("Mul", [ppv, b.const(scale, "kernel_scale")]), b.const(shift, "kernel_shift")],
        "kernel_features",
    )  # (B, F)
    if not branch.classes:
        return z
    t = branch.ridge_temperature
    w = b.const(branch.ridge_weight.T * t, "kernel_ridge_weight_T")  # (F, classes)
    return b.op(
        "Add", [b.op("MatMul", [z, w]), b.const(branch.ridge_bias * t, "kernel_ridge_bias")]
    )


def _sequence_model(b: Builder, model: _SequenceModel, x: str, lengths: str | None) -> str:
    """The graph of one LSTM -> Dense model: ``x`` -> outputs ``(B, out)`` before any
    softmax (what ``model(x, lengths)`` returns)."""
    c = model.config
    extra = []
    if c.conv_channels:
        full = lengths
        if full is None:  # every step real
            full = b.op("Expand", [b.dim(x, 1), b.dim(x, 0)], "full_lengths")
        extra.append(_conv_branch(b, model.conv, x, full))
    ridge = None
    if c.kernel_features:
        full = lengths
        if full is None:
            full = b.op("Expand", [b.dim(x, 1), b.dim(x, 0)], "full_lengths")
        branch = _kernel_branch(b, model.kernels, x, full)
        if c.kernel_ridge:  # its scores join the logits
            ridge = branch
        else:
            extra.append(branch)
    if c.tokens:
        e = _embed_tokens(b, model, x)  # (B, T, E)
    elif c.patch > 1:
        e = _patches(b, model, x)  # (B, ceil(T / patch), E)
        lengths = None if lengths is None else _ceil_div(b, lengths, c.patch)
    elif c.embedding_dim > 0:
        e = _linear(b, x, model.projection, "projection")
    else:
        e = x
    et = b.op("Transpose", [e], perm=[1, 0, 2])  # (T, B, E)
    y, states = lower_recurrent(b, model.lstm, et, lengths, None)  # y (T, B, D*P)
    h_n = states[0]  # (L*D, B, P)
    D = model.lstm.num_directions
    if c.pooling == "last":
        last = b.op("Slice", [h_n, b.ints([-D]), b.ints([2**62]), b.ints([0])])  # (D, B, P)
        feats = b.op("Transpose", [last], perm=[1, 0, 2])
        feats = b.op("Reshape", [feats, b.ints([0, -1])], "features")  # (B, D*P)
    elif c.pooling == "mean":
        if lengths is None:
            feats = b.reduce("ReduceMean", y, [0])
        else:
            n = b.op("Cast", [b.unsqueeze(lengths, [1])], to=1)  # (B, 1) float
            feats = b.op("Div", [b.reduce("ReduceSum", y, [0]), n])  # padded steps are 0
    else:
        if lengths is not None:
            T = b.squeeze(b.dim(y, 0), [0])
            steps = b.unsqueeze(b.op("Range", [b.ints(0), T, b.ints(1)]), [1])  # (T, 1)
            mask = b.unsqueeze(b.op("Less", [steps, b.unsqueeze(lengths, [0])]), [2])
            y = b.op("Where", [mask, y, b.const(-np.inf, "minus_inf")])
        feats = b.reduce("ReduceMax", y, [0])  # (B, D*P)
    if extra:
        feats = b.op("Concat", [feats, *extra], "features_all", axis=-1)
    out = _linear(b, feats, model.head, "head")  # (B, out)
    if ridge is not None:
        if c.head_weight != 1.0:
            out = b.op("Mul", [out, b.const(float(c.head_weight), "head_weight")])
        out = b.op("Add", [out, ridge])
    if isinstance(model, ForecastNet) and c.highway:
        k = c.highway
        tail = b.op("Slice", [x, b.ints([-k]), b.ints([2**62]), b.ints([1])])  # (B, k, C)
        tail = b.op("Gather", [tail, b.ints(0)], axis=2)  # (B, k): channel 0
        out = b.op("Add", [out, _linear(b, tail, model.highway, "highway")])
    return out


def _model_outputs(b: Builder, model: nn.Module, x: str, lengths: str | None) -> str:
    """A model or an ensemble of them (``_Ensemble``: classifiers average probabilities
    and return their log, others average outputs), or either mixed with a text
    classifier's linear part (``WithLinear``: log-probabilities)."""
    if isinstance(model, _SequenceModel):
        return _sequence_model(b, model, x, lengths)
    if isinstance(model, WithLinear):  # the text classifier's linear part beside it
        real = b.op("Not", [b.op("Less", [x, b.ints(0)])])  # (B, T) all true
        mask = real if lengths is None else _step_mask(b, x, lengths, 1)
        return with_linear(b, model, x, lengths, mask, _model_outputs)
    members = [_sequence_model(b, m, x, lengths) for m in model.members]
    if model.config.kind == "classifier":
        members = [b.op("Softmax", [m], axis=-1) for m in members]
        mean = b.op("Div", [b.op("Sum", members), b.const(float(len(members)), "n_members")])
        return b.op("Log", [mean])
    return b.op("Div", [b.op("Sum", members), b.const(float(len(members)), "n_members")])


def _is_ensemble(module: nn.Module) -> bool:
    from gatelab.estimators import _Ensemble

    return isinstance(module, _Ensemble)


def _model_ports(model: nn.Module, inputs: tuple[Tensor, ...]):
    c = model.config
    what = type(model).__name__
    if len(inputs) not in (1, 2):
        raise ValueError(
            f"{what}: example_inputs must be (x,) or (x, lengths); got {len(inputs)} tensors"
        )
    x = inputs[0]
    if c.tokens and (x.is_floating_point() or x.dim() != 2):
        raise ValueError(
            f"{what}: x must be int64 token ids (B, T); got {x.dtype} {tuple(x.shape)}"
        )
    if not c.tokens and (not x.is_floating_point() or x.dim() != 3 or x.shape[-1] != c.input_size):
        raise ValueError(
            f"{what}: x must be float32 (B, T, {c.input_size}); got {x.dtype} {tuple(x.shape)}"
        )
    ports = [_Port("input", x, {0: "batch", 1: "time"})]
    if len(inputs) == 2:
        _check_lengths(inputs[1], x.shape[0], x.shape[1], what)
        ports.append(_Port("lengths", inputs[1], {0: "batch"}))
    return ports


def _char_lm_graph(b: Builder, model: CharLM, ids: str, state0) -> list[str]:
    """-> ``logits`` and the final states (``h_n, c_n``; with the sLSTM ``h_n .. m_n``)."""
    e = b.op("Gather", [b.const(model.embedding.weight, "embedding"), ids], axis=0)  # (B, T, E)
    et = b.op("Transpose", [e], perm=[1, 0, 2])  # (T, B, E)
    y, states = lower_recurrent(b, model.lstm, et, None, state0)  # (T, B, H)
    y = b.op("Transpose", [y], perm=[1, 0, 2])  # (B, T, H)
    return [_linear(b, y, model.head, "logits"), *states]


def _char_lm_ports(model: CharLM, inputs: tuple[Tensor, ...]):
    names = _state_names(model.lstm)  # h0, c0 (and n0, m0 for the sLSTM)
    if (
        len(inputs) not in (1, 1 + len(names))
        or inputs[0].is_floating_point()
        or inputs[0].dim() != 2
    ):
        got = [(str(t.dtype), tuple(t.shape)) for t in inputs]
        raise ValueError(
            f"CharLM: example_inputs must be (ids,) or (ids, {', '.join(names)}) with ids "
            f"int64 (B, T) and {', '.join(names)} float32 (L, B, H); got {got}"
        )
    ports = [_Port("ids", inputs[0], {0: "batch", 1: "time"})]
    for name, t in zip(names, inputs[1:]):
        ports.append(_Port(name, t, {1: "batch"}))
    return ports


def _series_normalize(b: Builder, x: str, lengths: str, est) -> str:
    """The SeriesClassifier's normalisation of padded ``x (B, T, C)`` inside the graph,
    with its level channels (``level.json``) when it has them; padded steps are 0, as in
    the batches the estimator builds (what the patches and the conv branch read)."""
    m = b.unsqueeze(b.op("Cast", [_step_mask(b, x, lengths, 1)], to=1), [2])  # (B, T, 1)
    if est.normalize == "global":
        x = b.op("Sub", [x, b.const(est.scaler_.mean, "scaler_mean")])
        return b.op("Mul", [b.op("Div", [x, b.const(est.scaler_.scale, "scaler_scale")]), m])
    if est.normalize != "series":
        return b.op("Mul", [x, m])
    # z-normalise each series over its own real steps (population std; 0 -> 1).
    n = b.unsqueeze(b.op("Cast", [lengths], to=1), [1, 2])  # (B, 1, 1)
    mean = b.op("Div", [b.op("ReduceSum", [b.op("Mul", [x, m]), b.ints([1])], keepdims=1), n])
    d = b.op("Mul", [b.op("Sub", [x, mean]), m])  # (B, T, C), 0 at padding
    var = b.op("Div", [b.op("ReduceSum", [b.op("Mul", [d, d]), b.ints([1])], keepdims=1), n])
    std = b.op("Sqrt", [var])
    zero = b.const(0.0, "zero_f")
    safe = b.op("Where", [b.op("Greater", [std, zero]), std, b.const(1.0, "one")])
    z = b.op("Div", [d, safe])
    level = getattr(est, "level_scaler_", None)
    if level is None:
        return z
    # the level and log scale that z-normalisation removes, as constant channels
    log_std = b.op("Log", [b.op("Add", [std, b.const(1e-8, "std_eps")])])
    lv = b.op("Concat", [mean, log_std], axis=2)  # (B, 1, 2C)
    lv = b.op("Sub", [lv, b.const(level.mean, "level_mean")])
    lv = b.op("Div", [lv, b.const(level.scale, "level_scale")])
    return b.op("Concat", [z, b.op("Mul", [lv, m])], "with_level", axis=2)  # (B, T, 3C)


def _linear_affine(linear, horizon: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The linear part as one affine map of its (transformed) inputs: ``(W, M (W, horizon),
    c (horizon,))`` with ``forecast = z[:, -W:] @ M + c`` on ``z`` = the window or its log.

    A recursive AR on differences is linear in the values it reads (differencing and its
    inverse are linear, and so is each step of the recursion), so ``M`` and ``c`` are read
    off the forecast of zero and unit windows in float64."""
    if linear.kind == "direct":
        return (
            linear.width,
            np.asarray(linear.coef, dtype=np.float64),
            np.asarray(linear.const, dtype=np.float64),
        )
    on_z = dataclasses.replace(linear, log=False)
    W = linear.window
    c = on_z.forecast(np.zeros((1, W)), horizon)[0]
    M = on_z.forecast(np.eye(W), horizon) - c  # (W, horizon): row j = unit value at step j
    return W, M, c


def _forecaster_graph(b: Builder, est, model: nn.Module, window: str) -> str:
    """Raw windows ``(B, history)`` -> forecasts ``(B, horizon)`` as
    :meth:`gatelab.Forecaster.predict` computes them: the linear part plus the network's
    term (its weight is folded into the head), each from its own transform of the window."""

    def tail(x: str, k: int) -> str:
        return b.op("Slice", [x, b.ints([-k]), b.ints([2**62]), b.ints([1])])

    def log(x: str) -> str:
        return b.op("Log", [b.op("Max", [x, b.const(1e-12, "log_floor")])])

    parts = est.input_
    z = tail(window, est.network_steps_)
    if parts["log"]:
        z = log(z)
    if parts["mode"] == "level":
        z = b.op("Sub", [z, tail(z, 1)])  # minus the window's last value
    else:
        z = b.op("Sub", [z, b.const(float(parts["center"]), "input_center")])
    z = b.op("Div", [z, b.const(float(parts["scale"]), "input_scale")], "network_input")
    net = _model_outputs(b, model, b.unsqueeze(z, [2]), None)  # (B, horizon), scaled
    scale = b.const(np.asarray(est.scaler_.scale, dtype=np.float64), "resid_scale")
    net = b.op("Mul", [net, scale])
    net = b.op("Add", [net, b.const(np.asarray(est.scaler_.mean, dtype=np.float64), "resid_mean")])
    if est.linear_ is None:
        return net
    W, M, c = _linear_affine(est.linear_, est.horizon)
    zl = tail(window, W)
    if est.linear_.log:
        zl = log(zl)
    # z @ M + c as (z - z_last) @ M + z_last * sum(M) + c: for differenced models the
    # columns of M sum to 1, and the small differences keep float32 rounding small
    last = tail(zl, 1)  # (B, 1)
    lin = b.op("MatMul", [b.op("Sub", [zl, last]), b.const(M, "linear_M")])
    lin = b.op("Add", [lin, b.op("Mul", [last, b.const(M.sum(axis=0), "linear_M_sum")])])
    lin = b.op("Add", [lin, b.const(c, "linear_c")])
    if est.linear_.log:
        lin = b.op("Exp", [lin])
    return b.op("Add", [lin, net], "forecast_sum")
