"""Drop-in ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` layers whose every gate can be traced.

The layer owns the parameters, their initialisation, layers, directions, packing and the
choice of backend; the gate math lives in :mod:`gatelab.nn.equations` and a backend runs one
layer in one direction (:mod:`gatelab.nn.backends`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from gatelab.nn.backends import _checks, native, reference
from gatelab.nn.backends.reference import step_mask
from gatelab.nn.equations import PRESETS, CellSpec, resolve_spec
from gatelab.nn.trace import GateTrace, GRUTrace, RNNTrace

__all__ = ["GRU", "LSTM", "RNN"]

BACKENDS = ("auto", "reference", "native", "fused")
_warned: set[str] = set()


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int >= {minimum}, got {type(value).__name__}: {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name}={value}; expected an int >= {minimum}")
    return value


def _fused_module():
    """The fused backend module, or the reason it cannot run."""
    try:
        from gatelab.nn.backends import fused
    except ImportError as err:  # the module is optional until its extension lands
        return None, f"the fused backend is not available ({err})"
    return fused, None


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x (T, B, *)`` within its own length; padding stays put.

    Its own inverse. Padded steps keep their place, so a reversed batch is still
    prefix-masked, which is what every backend expects.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]  # (T, 1)
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    index = index.reshape(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


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


class _Recurrent(nn.Module):
    """What LSTM, GRU and RNN share: arguments, parameters, input forms, layer loop."""

    mode = ""  # "lstm", "gru", "rnn_tanh", "rnn_relu"
    num_gates = 1
    trace_cls: type = RNNTrace

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
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.proj_size = _check_int("proj_size", proj_size, 0)
        if proj_size >= hidden_size:
            raise ValueError(
                f"proj_size={proj_size}; expected 0 (no projection) or 0 < proj_size < "
                f"hidden_size={hidden_size}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0 or math.isnan(dropout):
            raise ValueError(f"dropout={dropout}; expected a probability in [0, 1)")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between layers and num_layers=1: it has no effect",
                UserWarning,
                stacklevel=3,
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; expected one of {', '.join(BACKENDS)}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        out_size = proj_size if proj_size > 0 else hidden_size
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else out_size * self.num_directions
            for direction in range(self.num_directions):
                for name, shape in self._param_shapes(layer_in).items():
                    param = nn.Parameter(torch.empty(shape, **factory))
                    self.register_parameter(self._pname(name, layer, direction), param)
        self.reset_parameters()

    # ----------------------------------------------------------------- parameters

    @property
    def last_backend(self) -> str | None:
        """The backend the last forward ran on (``"native"``, ``"fused"`` or
        ``"reference"``); None before the first forward."""
        return self.__dict__.get("_last_backend")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of ``h_t`` per direction: ``proj_size`` if set, else ``hidden_size``."""
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def _param_shapes(self, layer_in: int) -> dict[str, tuple[int, ...]]:
        gh = self.num_gates * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {
            "weight_ih": (gh, layer_in),
            "weight_hh": (gh, self.output_size),
        }
        if self.bias:
            shapes.update(bias_ih=(gh,), bias_hh=(gh,))
        if self.proj_size > 0:
            shapes["weight_hr"] = (self.proj_size, self.hidden_size)
        return shapes

    @staticmethod
    def _pname(name: str, layer: int, direction: int) -> str:
        return f"{name}_l{layer}{'_reverse' if direction else ''}"

    def reset_parameters(self) -> None:
        """torch.nn's rule: every parameter ``~ U(-1/sqrt(H), 1/sqrt(H))``."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def layer_parameters(self, layer: int, direction: int = 0) -> dict[str, Tensor]:
        """One layer-direction's parameters by canonical name (``weight_ih``, ...)."""
        suffix = f"_l{layer}{'_reverse' if direction else ''}"
        return {
            name[: -len(suffix)]: p for name, p in self.named_parameters() if name.endswith(suffix)
        }

    def _flat_weights(self) -> list[Tensor]:
        """Weights in torch.nn's flat order, for the framework's fused kernels."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        flat = []
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                p = self.layer_parameters(layer, direction)
                flat += [p[k] for k in names if k in p]
        return flat

    def flatten_parameters(self) -> None:
        """Accepted for torch.nn compatibility; nothing to do on CPU."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        for name, default in (
            ("num_layers", 1),
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("backend", "auto"),
        ):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s

    # ----------------------------------------------------------------- forward

    def _state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    def _normalize_input(self, input):
        """-> time-major ``x (T, B, I)``, ``lengths (B,)`` or None, unbatched flag."""
        if isinstance(input, PackedSequence):
            self._check_features(input.data, 1)
            x, lengths = pad_packed_sequence(input)
            return x, lengths.to(x.device), False
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(
                f"input has shape {tuple(input.shape)}; expected 3-D (T, B, {self.input_size})"
                f"{' batch_first (B, T, I)' if self.batch_first else ''} or unbatched 2-D "
                f"(T, {self.input_size})"
            )
        self._check_features(input, input.dim() - 1)
        unbatched = input.dim() == 2
        _checks.empty_sequence(
            type(self).__name__, input.shape[1 if self.batch_first and not unbatched else 0]
        )
        if unbatched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        x = input.transpose(0, 1) if self.batch_first else input
        return x, None, unbatched

    def _check_features(self, x: Tensor, feature_dim: int) -> None:
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"input has dtype {x.dtype}; expected a floating-point tensor (embed integer "
                "token ids first, e.g. with torch.nn.Embedding)"
            )
        if x.shape[feature_dim] != self.input_size:
            raise ValueError(
                f"input has {x.shape[feature_dim]} features (shape {tuple(x.shape)}); expected "
                f"input_size={self.input_size}"
            )

    def _initial_state(self, hx, x: Tensor, unbatched: bool) -> tuple[Tensor, ...]:
        """-> the state tuple, each ``(L * D, B, size)``, in the caller's batch order."""
        LD, B = self.num_layers * self.num_directions, x.shape[1]
        sizes = self._state_sizes()
        if hx is None:
            return tuple(x.new_zeros(LD, B, size) for size in sizes)
        parts = self._split_hx(hx)
        state = []
        for name, h, size in zip(self._hx_names(), parts, sizes):
            want = (LD, size) if unbatched else (LD, B, size)
            dims = "(num_layers * num_directions, batch, features)"
            _checks.state(type(self).__name__, name, h, want, x, hint=dims)
            state.append(h.unsqueeze(1) if unbatched else h)
        return tuple(state)

    def _hx_names(self) -> tuple[str, ...]:
        return ("h0",)

    def _check_parameters(self, x: Tensor) -> None:
        """Every parameter still has the shape the configuration gives it (a parameter can
        be replaced after construction) and ``x``'s dtype and device."""
        want = self.__dict__.get("_want_shapes")
        if want is None:  # the configuration does not change after construction
            want = {}
            for layer in range(self.num_layers):
                layer_in = self.input_size if layer == 0 else self.output_size * self.num_directions
                for direction in range(self.num_directions):
                    for name, shape in self._param_shapes(layer_in).items():
                        want[self._pname(name, layer, direction)] = shape
            self.__dict__["_want_shapes"] = want
        _checks.parameters(type(self).__name__, self._parameters, want, x)

    def _split_hx(self, hx) -> tuple:
        if isinstance(hx, (tuple, list)):
            raise TypeError(
                f"hx must be a Tensor h0 for {type(self).__name__}, got a {type(hx).__name__}"
            )
        return (hx,)

    def _choose_backend(self, need_trace: bool, device: torch.device) -> str:
        """-> "native", "fused" or "reference"; raises for an explicit backend that can't run."""
        return "native" if self.backend in ("auto", "native") else self._explicit(self.backend)

    def _explicit(self, name: str) -> str:
        if name == "fused":
            raise ValueError(
                f"backend='fused' runs the LSTM only; {type(self).__name__} runs on 'native' "
                "or 'reference'"
            )
        return name

    def forward(self, input, hx=None, *, return_trace: bool = False):
        x, lengths, unbatched = self._normalize_input(input)
        self._check_parameters(x)
        state = self._initial_state(hx, x, unbatched)
        backend = self._choose_backend(return_trace, x.device)
        self._last_backend = backend
        if backend == "native" and not return_trace:
            return self._forward_native(input, state, unbatched)

        layer_input, finals, traces = x, [], []
        for layer in range(self.num_layers):
            outs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                xin = layer_input if direction == 0 else reverse_padded(layer_input, lengths)
                out, s_n, tr = self._run_direction(
                    backend,
                    xin,
                    tuple(s[k] for s in state),
                    self.layer_parameters(layer, direction),
                    lengths,
                    return_trace,
                )
                if direction == 1:
                    out = reverse_padded(out, lengths)
                    if tr is not None:
                        tr = {n: reverse_padded(v, lengths) for n, v in tr.items()}
                outs.append(out)
                finals.append(s_n)
                traces.append(tr)
            layer_input = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)

        output = self._restore_output(input, layer_input, lengths, unbatched)
        state_n = tuple(torch.stack([f[j] for f in finals]) for j in range(len(state)))
        if unbatched:
            state_n = tuple(s.squeeze(1) for s in state_n)
        result = (output, self._pack_state(state_n))
        if return_trace:
            result += (self._make_trace(traces, x, lengths, unbatched),)
        return result

    def _forward_native(self, input, state, unbatched: bool):
        hx = state if self.mode == "lstm" else state[0]
        if unbatched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        output, state_n = native.run_stack(
            self.mode,
            input,
            hx,
            self._flat_weights(),
            self.bias,
            self.num_layers,
            self.dropout,
            self.training,
            self.bidirectional,
            self.batch_first,
        )
        if unbatched:
            output = output.squeeze(0 if self.batch_first else 1)
            state_n = (
                tuple(s.squeeze(1) for s in state_n) if self.mode == "lstm" else state_n.squeeze(1)
            )
        return output, state_n

    def _pack_state(self, state_n: tuple[Tensor, ...]):
        return state_n[0]

    def _restore_output(self, input, out: Tensor, lengths, unbatched: bool):
        """Time-major ``out (T, B, D*P)`` -> the caller's form (packed, batch_first, ...)."""
        if isinstance(input, PackedSequence):
            if input.sorted_indices is not None:
                out = out.index_select(1, input.sorted_indices)
                lengths = lengths.index_select(0, input.sorted_indices.to(lengths.device))
            data = out[step_mask(lengths, out.shape[0]).squeeze(-1)]  # (N, D*P), packed order
            return PackedSequence(
                data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
        if self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(0 if self.batch_first else 1)
        return out

    def _make_trace(self, traces, x: Tensor, lengths, unbatched: bool):
        T, B = x.shape[:2]
        mask = step_mask(lengths, T)
        mask = torch.ones(T, B, dtype=torch.bool, device=x.device) if mask is None else mask[..., 0]
        fields = {}
        for name in self.trace_cls.names():
            if name not in traces[0]:  # a field this cell lacks (sLSTM's n, m): stays None
                continue
            parts = [tr[name] for tr in traces]
            # (L*D, T, B, H); one layer-direction: a view, no copy of the whole trace
            v = parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)
            if self.batch_first:
                v = v.transpose(1, 2)
            fields[name] = v.squeeze(1 if self.batch_first else 2) if unbatched else v
        if self.batch_first:
            mask = mask.transpose(0, 1)
        if unbatched:
            mask = mask.squeeze(0 if self.batch_first else 1)
        return self.trace_cls(
            mask=mask, batch_first=self.batch_first, num_directions=self.num_directions, **fields
        )

    def _run_direction(self, backend, x, state0, p, lengths, need_trace):
        raise NotImplementedError


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
        self.spec = resolve_spec(variant, forget_bias)
        if self.spec.forget_bias != 0.0 and not bias:
            raise ValueError(f"forget_bias={self.spec.forget_bias} needs bias=True; got bias=False")
        if self.spec.normalizer:
            _check_slstm_sizes(self.spec, hidden_size, proj_size)
        self.num_gates = self.spec.num_gates
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            backend,
            device,
            dtype,
        )

    @property
    def variant(self) -> CellSpec:
        return self.spec

    def _param_shapes(self, layer_in: int) -> dict[str, tuple[int, ...]]:
        shapes = super()._param_shapes(layer_in)
        H, gh = self.hidden_size, self.num_gates * self.hidden_size
        if self.spec.num_heads > 1:  # block-diagonal R: (4H, d), see cells.slstm_recurrent
            shapes["weight_hh"] = (gh, H // self.spec.num_heads)
        for gate in self.spec.peephole_gates:
            shapes[f"weight_c{gate}"] = (H,)
        if self.spec.layernorm:
            shapes.update(ln_ih_weight=(gh,), ln_ih_bias=(gh,), ln_hh_weight=(gh,))
            shapes.update(ln_hh_bias=(gh,), ln_c_weight=(H,), ln_c_bias=(H,))
        return shapes

    def reset_parameters(self) -> None:
        """torch.nn's uniform init; layer-norm gains 1, shifts 0; then ``forget_bias``."""
        super().reset_parameters()
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("ln_"):
                    p.fill_(1.0 if "_weight_" in name else 0.0)
                if name.startswith("bias_ih") and self.spec.forget_bias != 0.0:
                    f = self.spec.gates.index("f")
                    p[f * self.hidden_size : (f + 1) * self.hidden_size] += self.spec.forget_bias

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
        name, standard = self.backend, self.spec.is_standard
        if name == "native":
            if not standard:
                raise ValueError(
                    f"backend='native' runs only the standard LSTM, not {self.spec}; use "
                    "backend='auto', 'fused' or 'reference'"
                )
            return "native"
        if name == "reference":
            return "reference"
        if name == "auto" and standard and not need_trace:
            return "native"  # decided before can_run, which may compile the fused kernels
        fused, why = _fused_module()
        if fused is not None:
            ok, why = fused.can_run(self, device)
        if name == "fused":
            if fused is None or not ok:
                raise RuntimeError(f"backend='fused' cannot run: {why}")
            return "fused"
        # auto
        if fused is not None and ok:
            return "fused"
        if standard:
            return "native"  # the trace is replayed from the native outputs
        if why not in _warned:
            _warned.add(why)
            warnings.warn(
                f"gatelab.LSTM(backend='auto') runs variant {self.spec} on the reference "
                f"backend (a Python loop): {why}",
                RuntimeWarning,
                stacklevel=4,
            )
        return "reference"

    def _run_direction(self, backend, x, state0, p, lengths, need_trace):
        if backend == "fused":
            from gatelab.nn.backends import fused as module
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
        new = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            module.batch_first,
            float(module.dropout),
            module.bidirectional,
            module.proj_size,
            device=p.device,
            dtype=p.dtype,
            **kwargs,
        )
        new.load_state_dict(module.state_dict(), strict=True)
        return new

    def to_torch(self) -> nn.LSTM:
        """An equal ``torch.nn.LSTM`` (standard cell only)."""
        if not self.spec.is_standard:
            raise ValueError(f"only the standard LSTM converts to torch.nn.LSTM, not {self.spec}")
        p = next(self.parameters())
        module = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
            self.proj_size,
            device=p.device,
            dtype=p.dtype,
        )
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
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            backend,
            device,
            dtype,
        )
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
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            backend,
            device,
            dtype,
        )

    def _run_direction(self, backend, x, state0, p, lengths, need_trace):
        module = native if backend == "native" else reference
        out, h_n, tr = module.rnn_layer(x, state0[0], p, lengths, need_trace, self.nonlinearity)
        return out, (h_n,), tr
