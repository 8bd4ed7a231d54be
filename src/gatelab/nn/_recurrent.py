"""The recurrent base of :class:`gatelab.nn.layers.LSTM`, ``GRU`` and ``RNN``: arguments,
parameters by layer and direction, input forms (packed, ``batch_first``, unbatched), the
layer loop over directions with dropout between layers, and trace assembly.

A subclass says what its cell is (``mode``, ``num_gates``, ``trace_cls``, its state and
``_run_direction``: one layer-direction on the chosen backend).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from gatelab.nn import _params
from gatelab.nn.backends import _checks, native
from gatelab.nn.masks import reverse_padded, step_mask
from gatelab.nn.trace import RNNTrace


class _Recurrent(nn.Module):
    """What LSTM, GRU and RNN share: arguments, parameters, input forms, layer loop."""

    mode = ""  # "lstm", "gru", "rnn_tanh", "rnn_relu"
    num_gates = 1
    trace_cls: type = RNNTrace

    def __init__(self, shape: tuple, proj_size: int, backend: str, device, dtype) -> None:
        """``shape``: torch.nn's first seven arguments, ``(input_size, hidden_size,
        num_layers, bias, batch_first, dropout, bidirectional)``, as each layer's public
        signature received them."""
        super().__init__()
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional = shape
        self.input_size = _params.check_int("input_size", input_size, 1)
        self.hidden_size = _params.check_int("hidden_size", hidden_size, 1)
        self.num_layers = _params.check_int("num_layers", num_layers, 1)
        self.proj_size = _params.check_int("proj_size", proj_size, 0)
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
        self.backend = _params.check_backend(backend)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        factory = {"device": device, "dtype": dtype}
        for full, shape in self._layout()[0].items():
            self.register_parameter(full, nn.Parameter(torch.empty(shape, **factory)))
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
        G, H, spec = self.num_gates, self.hidden_size, getattr(self, "spec", None)
        return _params.param_shapes(G, H, layer_in, self.bias, self.proj_size, spec)

    @staticmethod
    def _pname(name: str, layer: int, direction: int) -> str:
        return f"{name}_l{layer}{'_reverse' if direction else ''}"

    def reset_parameters(self) -> None:
        """torch.nn's rule: every parameter ``~ U(-1/sqrt(H), 1/sqrt(H))``; an LSTM's
        layer-norm gains 1, shifts 0, then its ``forget_bias``."""
        spec = getattr(self, "spec", None)
        _params.init_parameters(self.named_parameters(), self.hidden_size, spec)

    def layer_parameters(self, layer: int, direction: int = 0) -> dict[str, Tensor]:
        """One layer-direction's parameters by canonical name (``weight_ih``, ...), read
        from the module's own table by the configured names (``named_parameters`` costs
        ~10 us a call, which a one-step forward feels)."""
        table = self._parameters
        return {
            name: table[full]
            for name, full in self._layout()[1][layer, direction]
            if table.get(full) is not None
        }

    def _layout(self) -> tuple[dict[str, tuple[int, ...]], dict[tuple[int, int], list]]:
        """From the configuration, computed once (it does not change after construction):
        every parameter's full name -> its shape, and ``(layer, direction)`` -> its
        parameters' ``(canonical, full)`` names."""
        layout = self.__dict__.get("_layout_cache")
        if layout is None:
            shapes, names = {}, {}
            for layer in range(self.num_layers):
                layer_in = self.input_size if layer == 0 else self.output_size * self.num_directions
                for direction in range(self.num_directions):
                    names[layer, direction] = []
                    for name, shape in self._param_shapes(layer_in).items():
                        full = self._pname(name, layer, direction)
                        shapes[full] = shape
                        names[layer, direction].append((name, full))
            layout = self.__dict__["_layout_cache"] = (shapes, names)
        return layout

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
        _checks.parameters(type(self).__name__, self._parameters, self._layout()[0], x)

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
        self.__dict__["_last_backend"] = backend  # not nn.Module.__setattr__: ~4 us a call
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
        if len(finals) == 1:  # one layer-direction: a view, no copy
            state_n = tuple(s.unsqueeze(0) for s in finals[0])
        else:
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
        # the backend's dict names the trace's fields; those it lacks (an LSTM's n, m) stay None
        for name in traces[0]:
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
