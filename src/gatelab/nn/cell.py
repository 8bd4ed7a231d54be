"""``LSTMCell``: one step of any LSTM variant, a drop-in for ``torch.nn.LSTMCell``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gatelab.nn import _params
from gatelab.nn.backends import _checks
from gatelab.nn.equations import PRESETS, CellSpec, LSTMGates, lstm_input_projection, lstm_step

__all__ = ["LSTMCell"]


class LSTMCell(nn.Module):
    r"""One LSTM step, a drop-in ``torch.nn.LSTMCell`` with literature variants and gates.

    For the standard cell (``σ`` the sigmoid, ``⊙`` the element-wise product)::

        i = σ(W_ii x + b_ii + W_hi h + b_hi)     input gate, in (0, 1)
        f = σ(W_if x + b_if + W_hf h + b_hf)     forget gate, in (0, 1)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)  candidate, in (-1, 1)
        o = σ(W_io x + b_io + W_ho h + b_ho)     output gate, in (0, 1)
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c')

    ``variant`` changes these equations (see :data:`gatelab.PRESETS`, :class:`CellSpec`).

    Args:
        input_size, hidden_size, bias: as ``torch.nn.LSTMCell``.
        variant: a preset name or a :class:`CellSpec`.
        forget_bias: added to the forget-gate part of ``bias_ih`` at init.
        backend: ``"auto"`` (``"native"`` for the standard cell without gates, as
            ``torch.nn.LSTMCell``, so that second-order gradients work as in torch; else the
            fused C++ step where it can run, else the reference step with one warning),
            ``"fused"``, ``"reference"`` (the equations of
            :mod:`gatelab.nn.equations` in PyTorch), or ``"native"`` (``torch.nn.LSTMCell``'s
            kernel, standard cell only). An explicit backend that cannot run raises.

    Parameters, with ``G`` the gates with weights (4 for the standard cell), stacked in
    ``i, f, g, o`` order without the removed ones: ``weight_ih (G*H, I)``,
    ``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh`` ``(G*H,)``; ``peephole``:
    ``weight_ci, weight_cf, weight_co (H,)``; ``layernorm``: ``ln_ih_weight, ln_ih_bias,
    ln_hh_weight, ln_hh_bias (G*H,)``, ``ln_c_weight, ln_c_bias (H,)``. Every weight starts
    ``U(-1/sqrt(H), 1/sqrt(H))`` as in torch.nn; layer-norm gains 1, shifts 0. For the
    standard cell names, shapes and init equal ``torch.nn.LSTMCell``'s, so their state
    dicts load into each other strictly.

    Shapes:
        input ``(B, I)`` or unbatched ``(I,)``; ``hx = (h, c)`` each ``(B, H)`` (or
        ``(H,)``), zeros when omitted. Returns ``(h', c')``, and with
        ``return_gates=True`` also :class:`gatelab.nn.equations.LSTMGates` (``i, f, g, o, c``,
        removed gates as ones). Fused gates carry no gradient; reference gates do.

    Example::

        >>> cell = gatelab.LSTMCell(8, 16, variant="cifg")
        >>> h, c, gates = cell(torch.randn(3, 8), return_gates=True)
        >>> bool(torch.equal(gates.f, 1 - gates.i))
        True
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        variant: str | CellSpec = "standard",
        forget_bias: float | None = None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _params.check_int("input_size", input_size, 1)
        _params.check_int("hidden_size", hidden_size, 1)
        _params.check_backend(backend)
        self.spec = _params.lstm_spec(variant, forget_bias, bias)
        if self.spec.normalizer:
            raise ValueError(
                f"LSTMCell runs the (0, 1)-gated LSTM cell, whose state is (h, c); got the sLSTM "
                f"cell {variant!r}, whose state is (h, c, n, m): use gatelab.LSTM(variant="
                "'slstm') and step it one time step at a time"
            )
        if backend == "native":
            _params.check_native(self.spec, "LSTM cell")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.bias, self.backend = bool(bias), backend
        self._last_backend: str | None = None
        factory = {"device": device, "dtype": dtype}
        for name, shape in self._param_shapes().items():
            self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's configured shape (computed once: the configuration does not
        change after construction)."""
        shapes = self.__dict__.get("_shapes")
        if shapes is None:
            G, H, I = self.spec.num_gates, self.hidden_size, self.input_size
            shapes = _params.param_shapes(G, H, I, self.bias, spec=self.spec)
            self.__dict__["_shapes"] = shapes
        return shapes

    @property
    def variant(self) -> CellSpec:
        return self.spec

    @property
    def last_backend(self) -> str | None:
        """The backend the last forward ran on (``"fused"``, ``"reference"`` or
        ``"native"``); None before the first forward."""
        return self._last_backend

    def reset_parameters(self) -> None:
        """torch.nn's uniform init; layer-norm gains 1, shifts 0; then ``forget_bias``."""
        named = self.named_parameters()
        _params.init_parameters(named, self.hidden_size, self.spec, draw_layernorm=False)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        preset = next((k for k, v in PRESETS.items() if v == self.spec), None)
        return s + (f", variant={preset!r}" if preset else f", variant={self.spec}")

    # ----------------------------------------------------------------- forward

    def _choose_backend(self, device: torch.device, return_gates: bool) -> str:
        # no native fallback: the native cell's gates come from the reference step
        return _params.choose_lstm_backend(
            self, "LSTMCell", return_gates, device, native_fallback=False, stacklevel=3
        )

    def _check(self, input: Tensor, hx) -> tuple[Tensor, Tensor, Tensor, bool]:
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(
                f"input has shape {tuple(input.shape)}; expected (B, {self.input_size}) or "
                f"unbatched ({self.input_size},)"
            )
        if not input.is_floating_point():
            raise TypeError(f"input has dtype {input.dtype}; expected a floating-point tensor")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            return x, zeros, zeros, unbatched
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx must be a tuple (h, c) for LSTMCell; got {type(hx).__name__}")
        want = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
        state = []
        for name, t in zip(("h", "c"), hx):
            _checks.state("LSTMCell", name, t, want, x)
            state.append(t.unsqueeze(0) if unbatched else t)
        return x, state[0], state[1], unbatched

    def _check_parameters(self, x: Tensor) -> None:
        """Every parameter still has its configured shape (one can be replaced after
        construction) and ``x``'s dtype and device."""
        _checks.parameters("LSTMCell", self._parameters, self._param_shapes(), x)

    def forward(self, input: Tensor, hx=None, *, return_gates: bool = False):
        """One step: ``(h', c')``, plus the gates when ``return_gates=True``."""
        x, h, c, unbatched = self._check(input, hx)
        backend = self._choose_backend(x.device, return_gates)
        self._check_parameters(x)
        self.__dict__["_last_backend"] = backend  # not nn.Module.__setattr__: ~4 us a call
        # the configured parameters from the module's own table, found by the check above
        # (named_parameters costs ~10 us a call, which a step of ~100 us feels)
        p = {name: self._parameters[name] for name in self._param_shapes()}
        if backend == "native" and not return_gates:
            h, c = torch._VF.lstm_cell(x, (h, c), *self._native_weights())
            gates = None
        elif backend == "fused":
            from gatelab.nn.backends import fused

            # everything is checked above (input, state, parameters): the kernels' entry
            # without lstm_layer's second round of the same checks (~30 us a step)
            _, h, c, tr = fused._run_checked(self.spec, x[None], h, c, p, None, return_gates)
            gates = None
            if return_gates:
                gates = LSTMGates(
                    i=tr["input_gate"][0],
                    f=tr["forget_gate"][0],
                    g=tr["candidate"][0],
                    o=tr["output_gate"][0],
                    c=tr["cell"][0],
                )
        else:  # the reference step (also the native backend's gates)
            xw = lstm_input_projection(self.spec, x, p)  # (B, G*H)
            h, c, gates = lstm_step(self.spec, xw, h, c, p)
        if unbatched:
            h, c = h.squeeze(0), c.squeeze(0)
            if gates is not None:
                gates = LSTMGates(*(getattr(gates, k).squeeze(0) for k in "ifgoc"))
        return (h, c, gates) if return_gates else (h, c)

    def _native_weights(self) -> tuple[Tensor, ...]:
        if self.bias:
            return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        return self.weight_ih, self.weight_hh
