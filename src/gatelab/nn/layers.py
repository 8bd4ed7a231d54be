"""Drop-in ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` layers whose every gate can be traced.

The layer owns the parameters, their initialisation, layers, directions, packing and the
choice of backend; the gate math lives in :mod:`gatelab.nn.equations` and a backend runs one
layer in one direction (:mod:`gatelab.nn.backends`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gatelab.nn import _params
from gatelab.nn._params import BACKENDS
from gatelab.nn._recurrent import _Recurrent
from gatelab.nn.backends import native, reference
from gatelab.nn.equations import PRESETS, CellSpec
from gatelab.nn.trace import GateTrace, GRUTrace, RNNTrace

__all__ = ["BACKENDS", "GRU", "LSTM", "RNN"]


def _check_slstm_sizes(spec: CellSpec, hidden_size: Any, proj_size: Any) -> None:
    """An sLSTM has no projection and splits ``hidden_size`` evenly over its heads."""
    if isinstance(proj_size, int) and proj_size != 0:
        raise ValueError(
            f"proj_size={proj_size}; the sLSTM cell (normalizer=True) has no projection: "
            "expected proj_size=0"
        )
    if isinstance(hidden_size, int) and hidden_size % spec.num_heads:
        raise ValueError(
            f"hidden_size={hidden_size} does not split into num_heads={spec.num_heads} equal "
            "heads; expected a multiple of num_heads"
        )


def _torch_args(m) -> tuple:
    """The positional arguments of ``torch.nn.LSTM`` that rebuild ``m`` (either LSTM)."""
    shape = (m.input_size, m.hidden_size, m.num_layers, m.bias, m.batch_first)
    return (*shape, float(m.dropout), m.bidirectional, m.proj_size)


class LSTM(_Recurrent):
    r"""A drop-in ``torch.nn.LSTM`` whose gates can be traced, with literature variants.

    For each step and layer (``σ`` the sigmoid, ``⊙`` the element-wise product)::

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate, in (0, 1)
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate, in (0, 1)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)  candidate, in (-1, 1)
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate, in (0, 1)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)                              (then h_t = W_hr h_t if proj_size)

    The output gate is a sigmoid; tanh bounds the cell state before it is gated.
    ``variant`` changes these equations (see :data:`gatelab.PRESETS` and
    :class:`gatelab.CellSpec`).

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size: as ``torch.nn.LSTM``.
        variant: a preset name (``"standard"``, ``"peephole"``, ``"cifg"``, ``"nig"``,
            ``"nfg"``, ``"nog"``, ``"niaf"``, ``"noaf"``, ``"layernorm"``, ``"tanh_gates"``,
            ``"slstm"``) or a :class:`CellSpec`. The sLSTM (``normalizer=True``) has the
            state ``hx = (h0, c0, n0, m0)``, each ``(L*D, B, H)``, returns four final
            states, has no ``proj_size``, and with ``num_heads = K`` its
            ``weight_hh_l{k}`` is ``(4H, H/K)``, the K diagonal blocks of ``R`` (see
            :func:`gatelab.nn.equations.slstm_recurrent`).
        forget_bias: added to the forget-gate part of ``bias_ih`` at init (1.0 is
            Jozefowicz et al. 2015's advice; Keras's ``unit_forget_bias``).
        backend: ``"auto"`` (native for the standard cell without trace, else fused where
            it can run, else reference with one warning), or ``"reference"``, ``"native"``,
            ``"fused"``, which raise when they cannot run this configuration.

    Parameters (per layer ``k``, suffix ``_reverse`` for the backward direction), with
    ``G`` the number of gates with weights (4 for the standard cell, 3 for ``cifg``,
    ``nig``, ``nfg``, ``nog``), stacked in ``i, f, g, o`` order without the removed ones:
        ``weight_ih_l{k}`` ``(G*H, I)`` (``I`` = input_size, or ``D * P`` above layer 0),
        ``weight_hh_l{k}`` ``(G*H, P)``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(G*H,)``,
        ``weight_hr_l{k}`` ``(P, H)`` when ``proj_size > 0``;
        ``peephole``: ``weight_ci_l{k}``, ``weight_cf_l{k}``, ``weight_co_l{k}`` ``(H,)``;
        ``layernorm``: ``ln_ih_weight_l{k}``, ``ln_ih_bias_l{k}``, ``ln_hh_weight_l{k}``,
        ``ln_hh_bias_l{k}`` ``(G*H,)`` and ``ln_c_weight_l{k}``, ``ln_c_bias_l{k}`` ``(H,)``.
        All weights start ``U(-1/sqrt(H), 1/sqrt(H))`` as in torch.nn; layer-norm gains 1
        and shifts 0. For ``standard`` names, shapes and init equal ``torch.nn.LSTM``'s.

    Shapes (``L`` layers, ``D`` directions, ``P = proj_size or H``):
        input ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, unbatched ``(T, I)``, or a
        ``PackedSequence``; ``hx = (h0, c0)`` with ``h0 (L*D, B, P)``, ``c0 (L*D, B, H)``
        (unbatched: no ``B``), zeros when omitted.
        Returns ``output (T, B, D*P)`` (or as the input's form), ``(h_n, c_n)``, and with
        ``return_trace=True`` a :class:`GateTrace` of ``(L*D, T, B, H)`` tensors.

    Example::

        >>> lstm = gatelab.LSTM(8, 16, variant="peephole")
        >>> out, (h, c), trace = lstm(torch.randn(5, 3, 8), return_trace=True)
        >>> trace.forget_gate.shape
        torch.Size([1, 5, 3, 16])
    """

    mode = "lstm"
    trace_cls = GateTrace

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        variant: str | CellSpec = "standard",
        forget_bias: float | None = None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        self.spec = _params.lstm_spec(variant, forget_bias, bias)
        if self.spec.normalizer:
            _check_slstm_sizes(self.spec, hidden_size, proj_size)
        self.num_gates = self.spec.num_gates
        shape = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        super().__init__(shape, proj_size, backend, device, dtype)

    @property
    def variant(self) -> CellSpec:
        return self.spec

    def chrono_init_(self, t_max: float, generator: torch.Generator | None = None) -> LSTM:
        """Chrono initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks
        warp time?"), in place: forget-gate bias ``b_f ~ log(U(1, t_max - 1))`` and
        input-gate bias ``b_i = -b_f``, so that the units' memory spans range up to
        ``t_max`` steps (the longest dependency the task needs).

        ``b_f`` goes into ``bias_ih`` and the forget and input parts of ``bias_hh`` are
        zeroed. A variant without an input or a forget gate of its own keeps the other
        one's bias; with neither, nothing changes. Draws from ``generator`` (default:
        torch's global RNG). Returns the layer.
        """
        if not self.bias:
            raise ValueError("chrono_init_ sets biases; the LSTM has bias=False")
        if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not t_max > 2:
            raise ValueError(f"t_max={t_max!r}; expected a number > 2 (the longest time lag)")
        H, gates = self.hidden_size, self.spec.gates
        with torch.no_grad():
            for layer in range(self.num_layers):
                for direction in range(self.num_directions):
                    p = self.layer_parameters(layer, direction)
                    u = torch.empty(H).uniform_(1.0, t_max - 1.0, generator=generator)
                    b_f = torch.log(u)
                    for gate, value in (("f", b_f), ("i", -b_f)):
                        if gate in gates:
                            k = gates.index(gate)
                            p["bias_ih"][k * H : (k + 1) * H] = value
                            p["bias_hh"][k * H : (k + 1) * H] = 0.0
        return self

    def _state_sizes(self) -> tuple[int, ...]:
        if self.spec.normalizer:  # sLSTM: (h, c, n, m)
            return (self.hidden_size,) * 4
        return (self.output_size, self.hidden_size)

    def _hx_names(self) -> tuple[str, ...]:
        return ("h0", "c0", "n0", "m0") if self.spec.normalizer else ("h0", "c0")

    def _split_hx(self, hx) -> tuple:
        names = self._hx_names()
        if not isinstance(hx, (tuple, list)) or len(hx) != len(names):
            got = f"a {type(hx).__name__}" + (
                f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""
            )
            raise TypeError(f"hx must be a tuple ({', '.join(names)}) for LSTM; got {got}")
        return tuple(hx)

    def _pack_state(self, state_n):
        return tuple(state_n)

    def _choose_backend(self, need_trace: bool, device: torch.device) -> str:
        # the standard trace is replayed from native outputs: native is a fallback here
        return _params.choose_lstm_backend(
            self, "LSTM", need_trace, device, native_fallback=True, stacklevel=4
        )

    def _run_direction(self, backend, x, state0, p, lengths, need_trace):
        if backend == "fused":
            module, _ = _params.fused_module()
            if not self.spec.normalizer:  # forward has checked every argument
                out, h_n, c_n, tr = module._run_checked(
                    self.spec, x, state0[0], state0[1], p, lengths, need_trace
                )
                return out, (h_n, c_n), tr
        else:
            module = native if backend == "native" else reference
        if self.spec.normalizer:  # sLSTM: state (h, c, n, m); never native (not standard)
            return module.slstm_layer(self.spec, x, state0, p, lengths, need_trace)
        out, h_n, c_n, tr = module.lstm_layer(
            self.spec, x, state0[0], state0[1], p, lengths, need_trace
        )
        return out, (h_n, c_n), tr

    @classmethod
    def from_torch(cls, module: nn.LSTM, **kwargs) -> LSTM:
        """A standard gatelab.LSTM with ``module``'s configuration and weights."""
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"expected a torch.nn.LSTM, got {type(module).__name__}")
        p = next(module.parameters())
        new = cls(*_torch_args(module), device=p.device, dtype=p.dtype, **kwargs)
        new.load_state_dict(module.state_dict(), strict=True)
        return new

    def to_torch(self) -> nn.LSTM:
        """An equal ``torch.nn.LSTM`` (standard cell only)."""
        if not self.spec.is_standard:
            raise ValueError(f"only the standard LSTM converts to torch.nn.LSTM, not {self.spec}")
        p = next(self.parameters())
        module = nn.LSTM(*_torch_args(self), device=p.device, dtype=p.dtype)
        module.load_state_dict(self.state_dict(), strict=True)
        return module

    def extra_repr(self) -> str:
        s = super().extra_repr()
        preset = next((k for k, v in PRESETS.items() if v == self.spec), None)
        return s + (f", variant={preset!r}" if preset else f", variant={self.spec}")


class GRU(_Recurrent):
    r"""A drop-in ``torch.nn.GRU`` with a gate trace (``reset_gate, update_gate,
    candidate, hidden``)::

        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))      reset_after=True
        n_t = tanh(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)      reset_after=False
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    Arguments, parameters, shapes and init as ``torch.nn.GRU``; ``backend`` is ``"auto"``
    or ``"native"`` (the framework's kernel; traces are replayed from its outputs), or
    ``"reference"``. ``forward(input, hx=None, *, return_trace=False)``.

    ``reset_after`` (default True: torch.nn.GRU's equation, Keras 3's default) chooses
    where the reset gate acts. False applies it to ``h_{t-1}`` before the recurrent
    matmul (Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder";
    Keras's ``GRU(reset_after=False)``); ``b_hn`` is then a plain additive bias, as
    Keras's single bias is. The parameters and state dict are the same either way.
    PyTorch's kernel computes only reset_after=True, so ``reset_after=False`` runs on the
    reference backend (``"auto"`` picks it; ``"native"`` is refused).
    """

    mode = "gru"
    num_gates = 3
    trace_cls = GRUTrace

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        reset_after: bool = True,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        if not isinstance(reset_after, bool):
            raise TypeError(f"reset_after must be a bool (True or False), got {reset_after!r}")
        self.reset_after = reset_after
        shape = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        super().__init__(shape, 0, backend, device, dtype)  # no projection
        if not reset_after and backend == "native":
            raise ValueError(_NATIVE_RESET_BEFORE)

    def _choose_backend(self, need_trace: bool, device: torch.device) -> str:
        if self.reset_after:
            return super()._choose_backend(need_trace, device)
        if self.backend == "native":
            raise ValueError(_NATIVE_RESET_BEFORE)
        return "reference" if self.backend == "auto" else self._explicit(self.backend)

    def _run_direction(self, backend, x, state0, p, lengths, need_trace):
        if backend == "native":
            out, h_n, tr = native.gru_layer(x, state0[0], p, lengths, need_trace)
        else:
            out, h_n, tr = reference.gru_layer(
                x, state0[0], p, lengths, need_trace, self.reset_after
            )
        return out, (h_n,), tr

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")


_NATIVE_RESET_BEFORE = (
    "backend='native' runs PyTorch's GRU kernel, which computes reset_after=True only; "
    "GRU(reset_after=False) runs on backend='auto' or 'reference'"
)


class RNN(_Recurrent):
    r"""A drop-in ``torch.nn.RNN`` (Elman): ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} +
    b_hh)`` (or ReLU), with a trace of ``hidden``. Arguments, parameters, shapes and init
    as ``torch.nn.RNN``; backends as :class:`GRU`.
    """

    trace_cls = RNNTrace

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity={nonlinearity!r}; expected 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        self.mode = f"rnn_{nonlinearity}"
        shape = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        super().__init__(shape, 0, backend, device, dtype)  # no projection

    def _run_direction(self, backend, x, state0, p, lengths, need_trace):
        module = native if backend == "native" else reference
        out, h_n, tr = module.rnn_layer(x, state0[0], p, lengths, need_trace, self.nonlinearity)
        return out, (h_n,), tr
