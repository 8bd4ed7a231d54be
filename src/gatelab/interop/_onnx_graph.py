"""ONNX graph building for the recurrent layers: native ``LSTM``/``GRU``/``RNN`` nodes where
the operator expresses the cell, a ``Scan`` over the step equations where it does not.

Everything here works on names in one graph under construction (:class:`Builder`); the
public entry points live in :mod:`gatelab.interop.onnx`. ``onnx`` is imported by the
caller and passed in, so this module never imports it at load time.

Gate orders (each block ``H`` rows)::

    PyTorch / gatelab LSTM   i, f, g, o       ONNX LSTM   i, o, f, c
    PyTorch GRU              r, z, n          ONNX GRU    z, r, h
    ONNX LSTM peepholes P    i, o, f
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gatelab.nn.equations import LAYERNORM_EPS, PRESETS, CellSpec

__all__ = ["Builder", "lower_recurrent", "native_lstm_reason", "recurrent_kind"]

logger = logging.getLogger(__name__)


class Builder:
    """One ONNX graph under construction: nodes, initializers and unique names.

    A Scan body is a child builder (:meth:`child`) that shares the name space and puts
    its constants into the outer graph's initializers (outer-scope references).
    """

    def __init__(
        self, onnx, opset: int, *, parent: Builder | None = None, reserved: tuple[str, ...] = ()
    ) -> None:
        self.onnx = onnx
        self.opset = opset
        self.nodes: list[Any] = []
        self._root = parent._root if parent is not None else self
        if parent is None:
            self.initializers: list[Any] = []
            self._names: set[str] = set(reserved)  # the graph's input and output names
            self._consts: dict[tuple, str] = {}

    def child(self) -> Builder:
        return Builder(self.onnx, self.opset, parent=self)

    def name(self, hint: str) -> str:
        names = self._root._names
        name, k = hint, 1
        while name in names:
            name, k = f"{hint}_{k}", k + 1
        names.add(name)
        return name

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        """An initializer holding ``value`` (a tensor, array or number) as ``dtype``."""
        if isinstance(value, Tensor):
            value = value.detach().cpu().double().numpy()
        array = np.array(value, dtype=dtype, order="C")  # keeps 0-d (ascontiguousarray does not)
        root = self._root
        key = None
        if array.size <= 16:  # small constants (shapes, axes, 0, 1) are shared
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in root._consts:
                return root._consts[key]
        name = self.name(hint)
        root.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        if key is not None:
            root._consts[key] = name
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(values, hint, np.int64)

    def op(self, op_type: str, inputs, hint: str | None = None, outputs: int = 1, **attrs):
        """Add a node; returns its output name (or a list of them for ``outputs > 1``)."""
        hint = hint or op_type.lower()
        outs = [self.name(hint if outputs == 1 else f"{hint}_{k}") for k in range(outputs)]
        self.nodes.append(
            self.onnx.helper.make_node(
                op_type, list(inputs), outs, name=self.name(f"n_{hint}"), **attrs
            )
        )
        return outs[0] if outputs == 1 else outs

    def op_to(self, op_type: str, inputs, outputs: list[str], **attrs) -> None:
        """Add a node writing to the given (reserved) output names."""
        self.nodes.append(
            self.onnx.helper.make_node(
                op_type, list(inputs), outputs, name=self.name(f"n_{op_type.lower()}"), **attrs
            )
        )

    # --- small helpers whose form depends on the opset

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int = 0) -> str:
        """ReduceSum / ReduceMax / ReduceMean over ``axes`` (axes are an input from opset 18,
        and already from 13 for ReduceSum)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes, "axes")])

    def squeeze(self, x: str, axes: list[int]) -> str:
        return self.op("Squeeze", [x, self.ints(axes, "axes")])

    def dim(self, x: str, axis: int) -> str:
        """``x.shape[axis]`` as a 1-element int64 tensor."""
        shape = self.op("Shape", [x])
        return self.op("Slice", [shape, self.ints([axis]), self.ints([axis + 1])])

    def zeros_state(self, like_batch: str, batch_axis: int, size: int) -> str:
        """Zeros ``(B, size)`` with ``B = like_batch.shape[batch_axis]``."""
        shape = self.op("Concat", [self.dim(like_batch, batch_axis), self.ints([size])], axis=0)
        zero = self.onnx.helper.make_tensor("zero", self.onnx.TensorProto.FLOAT, [1], [0.0])
        return self.op("ConstantOfShape", [shape], value=zero)

    def value_info(self, name: str, elem_type: int, shape) -> Any:
        return self.onnx.helper.make_tensor_value_info(name, elem_type, shape)


# --------------------------------------------------------------------------- what runs how


def recurrent_kind(module: nn.Module) -> str | None:
    """``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"`` for a gatelab or torch.nn
    recurrent layer; None for anything else."""
    from gatelab.nn.layers import GRU, LSTM, RNN

    if isinstance(module, (LSTM, nn.LSTM)):
        return "lstm"
    if isinstance(module, (GRU, nn.GRU)):
        return "gru"
    if isinstance(module, (RNN, nn.RNN)):
        return "rnn_relu" if module.nonlinearity == "relu" else "rnn_tanh"
    return None


def _spec(module: nn.Module) -> CellSpec:
    return getattr(module, "spec", PRESETS["standard"])


def native_lstm_reason(module: nn.Module) -> str | None:
    """None when one ONNX ``LSTM`` node per layer computes ``module``'s cell; otherwise
    why it exports as a ``Scan`` over the step equations."""
    spec = _spec(module)
    if spec.normalizer:
        return (
            "the ONNX LSTM operator has no exponential gates, normalizer or stabilizer "
            "(the sLSTM cell)"
        )
    if module.proj_size > 0:
        return "the ONNX LSTM operator has no projection (proj_size)"
    if spec.layernorm:
        return "the ONNX LSTM operator has no layer normalisation"
    for gate, word in (("input_gate", "input"), ("forget_gate", "forget")):
        if not getattr(spec, gate):
            return f"the ONNX LSTM operator always computes the {word} gate"
    if not spec.output_gate:
        return "the ONNX LSTM operator always computes the output gate"
    return None


def _params(module: nn.Module, layer: int, direction: int) -> dict[str, Tensor | None]:
    """One layer-direction's parameters by canonical name, for gatelab and torch.nn."""
    suffix = f"_l{layer}{'_reverse' if direction else ''}"
    out: dict[str, Tensor | None] = {}
    for name, p in module.named_parameters():
        if name.endswith(suffix) and "." not in name:
            out[name[: -len(suffix)]] = p.detach().float()
    return out


def _blocks(w: Tensor, names: tuple[str, ...], order: tuple[str, ...], H: int) -> Tensor:
    """Rows of ``w`` stacked in ``names`` order -> ``order`` (missing blocks are zeros)."""
    chunks = dict(zip(names, w.split(H, dim=0)))
    zero = torch.zeros_like(w[:H])
    return torch.cat([chunks.get(k, zero) for k in order], dim=0)


# --------------------------------------------------------------------------- entry point


def lower_recurrent(
    b: Builder,
    module: nn.Module,
    x: str,
    lengths: str | None,
    state0: tuple[str, ...] | None,
) -> tuple[str, tuple[str, ...]]:
    """Add ``module`` (gatelab or torch.nn LSTM / GRU / RNN) to the graph.

    Args:
        x: time-major input ``(T, B, I)`` float.
        lengths: ``(B,)`` int64 real steps per sequence (prefix mask), or None.
        state0: ``(h0,)``, ``(h0, c0)`` or, for the sLSTM, ``(h0, c0, n0, m0)``, each
            ``(L*D, B, size)``, or None for zeros.

    Returns:
        ``(output (T, B, D*P), final states each (L*D, B, size))``; padded
        steps of the output are zero and the final states are those after each sequence's
        last real step (after step 0 for the reverse direction), as with a PackedSequence.
    """
    kind = recurrent_kind(module)
    D = 2 if module.bidirectional else 1
    reason = native_lstm_reason(module) if kind == "lstm" else None
    native = reason is None
    if not native:
        logger.info("%s exports as Scan: %s", type(module).__name__, reason)
    seq_lens = b.op("Cast", [lengths], "seq_lens", to=b.onnx.TensorProto.INT32) if lengths else None
    mask = _step_mask(b, x, lengths) if (lengths and not native) else None
    layer_in, finals = x, []
    for layer in range(module.num_layers):
        s0 = None
        if state0 is not None:
            lo, hi = layer * D, (layer + 1) * D
            s0 = tuple(
                b.op("Slice", [s, b.ints([lo]), b.ints([hi]), b.ints([0])], "state0_slice")
                for s in state0
            )
        if native:
            layer_in, s_n = _native_layer(b, module, kind, layer, layer_in, seq_lens, s0)
        else:
            layer_in, s_n = _scan_lstm_layer(b, module, layer, layer_in, lengths, mask, s0)
        finals.append(s_n)
    n_states = len(finals[0])
    states = tuple(
        finals[0][j] if len(finals) == 1 else b.op("Concat", [f[j] for f in finals], axis=0)
        for j in range(n_states)
    )
    return layer_in, states


def _step_mask(b: Builder, x: str, lengths: str) -> str:
    """``(T, B, 1)`` bool: step ``t`` of sequence ``b`` is real (``t < lengths[b]``)."""
    T = b.squeeze(b.dim(x, 0), [0])
    steps = b.op("Range", [b.ints(0), T, b.ints(1)], "steps")  # (T,)
    less = b.op("Less", [b.unsqueeze(steps, [1]), b.unsqueeze(lengths, [0])])  # (T, B)
    return b.unsqueeze(less, [2])


# --------------------------------------------------------------------------- native nodes


def _activations(spec: CellSpec, D: int) -> dict[str, Any]:
    """The ``activations`` attributes of an LSTM node for ``spec`` ({} for the default)."""
    gate = "Sigmoid" if spec.gate_activation == "sigmoid" else "Tanh"
    acts = [gate]
    alphas, betas = [], []
    for which in (spec.candidate_activation, spec.output_activation):
        if which == "tanh":
            acts.append("Tanh")
        else:  # identity: Affine(x) = alpha * x + beta with alpha = 1, beta = 0
            acts.append("Affine")
            alphas.append(1.0)
            betas.append(0.0)
    if acts == ["Sigmoid", "Tanh", "Tanh"]:
        return {}
    attrs: dict[str, Any] = {"activations": acts * D}
    if alphas:
        attrs.update(activation_alpha=alphas * D, activation_beta=betas * D)
    return attrs


def _native_layer(b, module, kind, layer, x, seq_lens, s0):
    """One ONNX LSTM / GRU / RNN node for layer ``layer`` (both directions)."""
    D = 2 if module.bidirectional else 1
    H = module.hidden_size
    Ws, Rs, Bs, Ps = [], [], [], []
    spec = _spec(module) if kind == "lstm" else None
    for direction in range(D):
        p = _params(module, layer, direction)
        if kind == "lstm":
            gates, order = spec.gates, ("i", "o", "f", "g")
        elif kind == "gru":
            gates, order = ("r", "z", "n"), ("z", "r", "n")
        else:
            gates, order = ("h",), ("h",)
        Ws.append(_blocks(p["weight_ih"], gates, order, H))
        Rs.append(_blocks(p["weight_hh"], gates, order, H))
        if p.get("bias_ih") is not None:
            Bs.append(
                torch.cat(
                    [_blocks(p["bias_ih"], gates, order, H), _blocks(p["bias_hh"], gates, order, H)]
                )
            )
        if spec is not None and spec.peephole:
            zero = torch.zeros(H)
            Ps.append(torch.cat([p.get(f"weight_c{g}", zero) for g in ("i", "o", "f")]))
    op_type = kind.split("_")[0].upper()
    inputs = [x, b.const(torch.stack(Ws), f"W_l{layer}"), b.const(torch.stack(Rs), f"R_l{layer}")]
    inputs.append(b.const(torch.stack(Bs), f"B_l{layer}") if Bs else "")
    inputs.append(seq_lens or "")
    inputs += list(s0) if s0 is not None else ["", ""][: 2 if kind == "lstm" else 1]
    if Ps:
        inputs.append(b.const(torch.stack(Ps), f"P_l{layer}"))
    while inputs[-1] == "":
        inputs.pop()
    attrs: dict[str, Any] = {
        "hidden_size": H,
        "direction": "bidirectional" if D == 2 else "forward",
    }
    if kind == "lstm":
        attrs.update(_activations(spec, D))
        if spec.coupled:
            attrs["input_forget"] = 1
    elif kind == "gru":
        # torch.nn.GRU (reset_after=True) applies r after W_hn h + b_hn: 1; gatelab's
        # reset_after=False applies it before the matmul, b_hn outside: ONNX's 0
        attrs["linear_before_reset"] = int(getattr(module, "reset_after", True))
    else:
        attrs["activations"] = ["Relu" if kind == "rnn_relu" else "Tanh"] * D
    n_out = 3 if kind == "lstm" else 2
    outs = b.op(op_type, inputs, f"{op_type.lower()}_l{layer}", outputs=n_out, **attrs)
    y = b.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
    y = b.op("Reshape", [y, b.ints([0, 0, -1])], f"out_l{layer}")  # (T, B, D*H)
    return y, tuple(outs[1:])


# --------------------------------------------------------------------------- Scan form


def _scan_lstm_layer(b, module, layer, x, lengths, mask, s0):
    """Layer ``layer`` of an LSTM the ONNX operator cannot express: per direction, the
    input projection for all steps at once, then a Scan over :func:`gatelab.nn.equations.lstm_step`
    (state ``(h, c)``) or, for the sLSTM, :func:`gatelab.nn.equations.slstm_step` (state ``(h, c,
    n, m)``).

    The reverse direction reads each sequence reversed within its own length
    (``ReverseSequence``, like gatelab's ``reverse_padded``) and is reversed back.
    """
    D = 2 if module.bidirectional else 1
    spec = _spec(module)
    H, P = module.hidden_size, (module.proj_size or module.hidden_size)
    sizes = (H, H, H, H) if spec.normalizer else (P, H)
    step_body = _slstm_body if spec.normalizer else _lstm_body
    outs, finals = [], []
    for direction in range(D):
        p = _params(module, layer, direction)
        tag = f"l{layer}{'_reverse' if direction else ''}"
        xw = b.op("MatMul", [x, b.const(p["weight_ih"].T, f"weight_ih_T_{tag}")])  # (T, B, G*H)
        if spec.layernorm:
            xw = _layer_norm(b, xw, p["ln_ih_weight"], p["ln_ih_bias"], f"ln_ih_{tag}")
        if p.get("bias_ih") is not None:
            xw = b.op("Add", [xw, b.const(p["bias_ih"], f"bias_ih_{tag}")])
        if s0 is not None:  # each (B, size)
            init = [b.op("Gather", [s, b.ints(direction)], axis=0) for s in s0]
        else:
            init = [b.zeros_state(x, 1, size) for size in sizes]
        reverse_all = direction == 1 and lengths is None
        if direction == 1 and lengths is not None:
            xw = b.op("ReverseSequence", [xw, lengths], batch_axis=1, time_axis=0)
        body = step_body(b, spec, p, tag, H, P, masked=mask is not None)
        scan_in = [*init, xw] + ([mask] if mask is not None else [])
        n_scan = len(scan_in) - len(sizes)
        attrs: dict[str, Any] = {"body": body, "num_scan_inputs": n_scan}
        if reverse_all:
            attrs.update(scan_input_directions=[1] * n_scan, scan_output_directions=[1])
        *state_n, y = b.op("Scan", scan_in, f"scan_{tag}", outputs=len(sizes) + 1, **attrs)
        if direction == 1 and lengths is not None:
            y = b.op("ReverseSequence", [y, lengths], batch_axis=1, time_axis=0)
        outs.append(y)
        finals.append([b.unsqueeze(s, [0]) for s in state_n])
    y = outs[0] if D == 1 else b.op("Concat", outs, f"out_l{layer}", axis=-1)  # (T, B, D*P)
    states = tuple(f[0] if D == 1 else b.op("Concat", list(f), axis=0) for f in zip(*finals))
    return y, states


def _layer_norm(b, x, weight, bias, hint):
    return b.op(
        "LayerNormalization",
        [x, b.const(weight, f"{hint}_weight"), b.const(bias, f"{hint}_bias")],
        hint,
        axis=-1,
        epsilon=LAYERNORM_EPS,
    )


def _lstm_body(b, spec, p, tag, H, P, *, masked):
    """The Scan body: one step of :func:`gatelab.nn.equations.lstm_step` as a graph.

    Inputs ``h_prev (B, P)``, ``c_prev (B, H)``, ``xw_t (B, G*H)`` and, for padded
    batches, ``m_t (B, 1)`` bool; outputs ``h (B, P)``, ``c (B, H)``, ``y_t (B, P)``.
    Padded steps carry the state unchanged and output zeros.
    """
    onnx = b.onnx
    FLOAT, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
    s = b.child()
    h_prev, c_prev, xw_t = s.name("h_prev"), s.name("c_prev"), s.name("xw_t")
    G = spec.num_gates
    inputs = [
        s.value_info(h_prev, FLOAT, [None, P]),
        s.value_info(c_prev, FLOAT, [None, H]),
        s.value_info(xw_t, FLOAT, [None, G * H]),
    ]
    if masked:
        m_t = s.name("m_t")
        inputs.append(s.value_info(m_t, BOOL, [None, 1]))

    def act(v):
        return s.op("Sigmoid" if spec.gate_activation == "sigmoid" else "Tanh", [v])

    hw = s.op("MatMul", [h_prev, s.const(p["weight_hh"].T, f"weight_hh_T_{tag}")])  # (B, G*H)
    if spec.layernorm:
        hw = _layer_norm(s, hw, p["ln_hh_weight"], p["ln_hh_bias"], f"ln_hh_{tag}")
    pre = s.op("Add", [xw_t, hw])
    if p.get("bias_hh") is not None:
        pre = s.op("Add", [pre, s.const(p["bias_hh"], f"bias_hh_{tag}")])
    chunks = s.op("Split", [pre, s.ints([H] * G, "split")], "gate_pre", outputs=G, axis=-1)
    chunks = dict(zip(spec.gates, [chunks] if G == 1 else chunks))

    def peep(gate, pre_gate, cell):
        if gate in spec.peephole_gates:
            w = s.const(p[f"weight_c{gate}"], f"weight_c{gate}_{tag}")
            return s.op("Add", [pre_gate, s.op("Mul", [w, cell])])
        return pre_gate

    i = act(peep("i", chunks["i"], c_prev)) if spec.input_gate else None
    if spec.coupled:
        f = s.op("Sub", [s.const(1.0, "one"), i])
    elif spec.forget_gate:
        f = act(peep("f", chunks["f"], c_prev))
    else:
        f = None
    g = s.op("Tanh", [chunks["g"]]) if spec.candidate_activation == "tanh" else chunks["g"]
    keep = s.op("Mul", [f, c_prev]) if f is not None else c_prev
    write = s.op("Mul", [i, g]) if i is not None else g
    c = s.op("Add", [keep, write], "c")
    o = act(peep("o", chunks["o"], c)) if spec.output_gate else None
    c_out = (
        _layer_norm(s, c, p["ln_c_weight"], p["ln_c_bias"], f"ln_c_{tag}") if spec.layernorm else c
    )
    squashed = s.op("Tanh", [c_out]) if spec.output_activation == "tanh" else c_out
    h = s.op("Mul", [o, squashed]) if o is not None else squashed
    if p.get("weight_hr") is not None:
        h = s.op("MatMul", [h, s.const(p["weight_hr"].T, f"weight_hr_T_{tag}")])  # (B, P)
    h_out, c_out_name, y_out = s.name("h"), s.name("c_next"), s.name("y_t")
    if masked:
        s.op_to("Where", [m_t, h, h_prev], [h_out])
        s.op_to("Where", [m_t, c, c_prev], [c_out_name])
        s.op_to("Where", [m_t, h, s.const(0.0, "zero_f")], [y_out])
    else:
        s.op_to("Identity", [h], [h_out])
        s.op_to("Identity", [c], [c_out_name])
        s.op_to("Identity", [h], [y_out])
    outputs = [
        s.value_info(h_out, FLOAT, [None, P]),
        s.value_info(c_out_name, FLOAT, [None, H]),
        s.value_info(y_out, FLOAT, [None, P]),
    ]
    return onnx.helper.make_graph(s.nodes, f"lstm_step_{tag}", inputs, outputs)


def _log_sigmoid(s, v):
    """``log σ(v) = min(v, 0) - log(1 + exp(-|v|))``, finite for any ``v``."""
    zero = s.const(0.0, "zero_f")
    tail = s.op("Exp", [s.op("Neg", [s.op("Abs", [v])])])
    return s.op(
        "Sub", [s.op("Min", [v, zero]), s.op("Log", [s.op("Add", [tail, s.const(1.0, "one")])])]
    )


def _slstm_recurrent(s, h_prev, weight_hh, K, tag):
    """:func:`gatelab.nn.equations.slstm_recurrent`: ``R h_{t-1}`` ``(B, 4H)``, R block-diagonal
    over ``K`` heads (one ``MatMul`` for one head, an ``Einsum`` over the heads else)."""
    if K == 1:
        return s.op("MatMul", [h_prev, s.const(weight_hh.T, f"weight_hh_T_{tag}")])
    d = weight_hh.shape[1]
    wk = s.const(weight_hh.reshape(4, K, d, d), f"weight_hh_heads_{tag}")  # (4, K, d_out, d_in)
    hk = s.op("Reshape", [h_prev, s.ints([0, K, d])])  # (B, K, d)
    r = s.op("Einsum", [hk, wk], equation="bkj,gkrj->bgkr")  # (B, 4, K, d)
    return s.op("Reshape", [r, s.ints([0, 4 * K * d])])


def _slstm_body(b, spec, p, tag, H, P, *, masked):
    """The Scan body: one step of :func:`gatelab.nn.equations.slstm_step` as a graph.

    Inputs ``h_prev, c_prev, n_prev, m_prev`` each ``(B, H)``, ``xw_t (B, 4H)`` and, for
    padded batches, ``mask_t (B, 1)`` bool; outputs ``h, c, n, m`` and ``y_t``, each
    ``(B, H)``. Where ``n_prev = 0`` (a fresh state) ``m = log i``. Padded steps carry the
    state unchanged and output zeros.
    """
    onnx = b.onnx
    FLOAT, BOOL = onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
    s = b.child()
    prev = [s.name(f"{k}_prev") for k in ("h", "c", "n", "m")]
    xw_t = s.name("xw_t")
    inputs = [s.value_info(v, FLOAT, [None, H]) for v in prev]
    inputs.append(s.value_info(xw_t, FLOAT, [None, 4 * H]))
    if masked:
        mask_t = s.name("mask_t")
        inputs.append(s.value_info(mask_t, BOOL, [None, 1]))
    h_prev, c_prev, n_prev, m_prev = prev
    zero = s.const(0.0, "zero_f")

    pre = s.op("Add", [xw_t, _slstm_recurrent(s, h_prev, p["weight_hh"], spec.num_heads, tag)])
    if p.get("bias_hh") is not None:
        pre = s.op("Add", [pre, s.const(p["bias_hh"], f"bias_hh_{tag}")])
    pre_i, pre_f, pre_z, pre_o = s.op(
        "Split", [pre, s.ints([H] * 4, "split")], "gate_pre", outputs=4, axis=-1
    )

    def log_gate(kind, v):
        return v if kind == "exp" else _log_sigmoid(s, v)

    log_i = log_gate(spec.input_activation, pre_i)
    log_f_m = s.op("Add", [log_gate(spec.forget_activation, pre_f), m_prev])
    first = s.op("Equal", [n_prev, zero])
    m = s.op("Where", [first, log_i, s.op("Max", [log_f_m, log_i])], "m")
    i = s.op("Exp", [s.op("Sub", [log_i, m])])
    f = s.op("Exp", [s.op("Min", [s.op("Sub", [log_f_m, m]), zero])])
    z = s.op("Tanh", [pre_z])
    o = s.op("Sigmoid", [pre_o])
    c = s.op("Add", [s.op("Mul", [f, c_prev]), s.op("Mul", [i, z])], "c")
    n = s.op("Add", [s.op("Mul", [f, n_prev]), i], "n")
    h = s.op("Mul", [o, s.op("Div", [c, n])], "h")
    new = [h, c, n, m]
    out_names = [s.name(f"{k}_next") for k in ("h", "c", "n", "m")] + [s.name("y_t")]
    if masked:
        for v, old, name in zip(new, prev, out_names):
            s.op_to("Where", [mask_t, v, old], [name])
        s.op_to("Where", [mask_t, h, zero], [out_names[-1]])
    else:
        for v, name in zip([*new, h], out_names):
            s.op_to("Identity", [v], [name])
    outputs = [s.value_info(name, FLOAT, [None, H]) for name in out_names]
    return onnx.helper.make_graph(s.nodes, f"slstm_step_{tag}", inputs, outputs)
