"""The cell spec and the step equations: the one place the gate math lives.

Gate order is PyTorch's everywhere: input, forget, cell candidate, output (``i, f, g, o``).
Every backend is checked against the functions of this module.

The standard LSTM step (``⊙`` is the element-wise product)::

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate, in (0, 1)
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate, in (0, 1)
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)  candidate, in (-1, 1)
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate, in (0, 1)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                    cell state, unbounded
    h_t = o_t ⊙ tanh(c_t)                              hidden state, in (-1, 1)

The output gate is a sigmoid; tanh squashes the *cell state* before the output gate
multiplies it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PRESETS",
    "CellSpec",
    "LSTMGates",
    "gru_step",
    "lstm_input_projection",
    "lstm_step",
    "resolve_spec",
    "rnn_step",
    "slstm_recurrent",
    "slstm_step",
]

LAYERNORM_EPS = 1e-5


@dataclass(frozen=True)
class CellSpec:
    """What an LSTM cell computes. Each field is one change of the standard equations.

    Attributes:
        input_gate: compute ``i``; ``False`` fixes ``i = 1`` (Greff et al. 2017, NIG).
        forget_gate: compute ``f``; ``False`` fixes ``f = 1`` (NFG).
        output_gate: compute ``o``; ``False`` fixes ``o = 1`` (NOG).
        coupled: ``f = 1 - i`` with no forget weights (CIFG, Greff et al. 2017).
        peephole: ``i, f`` also see ``c_{t-1}`` and ``o`` sees ``c_t`` through diagonal
            weights ``weight_ci, weight_cf, weight_co`` (Gers & Schmidhuber 2000).
        candidate_activation: ``"tanh"`` or ``"identity"`` (NIAF).
        output_activation: ``"tanh"`` or ``"identity"`` on the cell before the output gate
            multiplies it (NOAF gives ``h = o ⊙ c``).
        gate_activation: ``"sigmoid"``, or ``"tanh"`` to test by experiment the claim that
            gates could be tanh (they then lie in (-1, 1) and can flip signs).
        layernorm: layer norm on the input and recurrent gate pre-activations, and on
            ``c_t`` before the output activation (Ba et al. 2016).
        forget_bias: added to the forget-gate part of ``bias_ih`` at initialisation
            (Jozefowicz et al. 2015 recommend 1.0). Needs a computed forget gate.
        input_gate_activation: None (use ``gate_activation``), ``"sigmoid"`` or ``"exp"``
            (xLSTM's exponential input gate, outside (0, 1); needs ``normalizer=True``).
        forget_gate_activation: None (use ``gate_activation``), ``"sigmoid"`` or ``"exp"``
            (needs ``normalizer=True``).
        normalizer: the sLSTM cell (Beck et al. 2024, eqs. 8-17): a normalizer state
            ``n_t = f_t n_{t-1} + i_t``, ``h_t = o_t ⊙ c_t / n_t`` (no output
            activation), and the log-space stabilizer ``m_t`` that keeps ``exp`` finite.
            The state is ``(h, c, n, m)``. Needs all four gates, a tanh candidate and no
            peephole, coupling or layer norm.
        num_heads: the recurrent matrix is block-diagonal over ``num_heads`` heads
            (memory mixing within a head only); ``weight_hh`` is then ``(4H, H /
            num_heads)``. Needs ``normalizer=True`` when > 1.
    """

    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    coupled: bool = False
    peephole: bool = False
    candidate_activation: str = "tanh"
    output_activation: str = "tanh"
    gate_activation: str = "sigmoid"
    layernorm: bool = False
    forget_bias: float = 0.0
    input_gate_activation: str | None = None
    forget_gate_activation: str | None = None
    normalizer: bool = False
    num_heads: int = 1

    def __post_init__(self) -> None:
        for name, allowed in (
            ("candidate_activation", ("tanh", "identity")),
            ("output_activation", ("tanh", "identity")),
            ("gate_activation", ("sigmoid", "tanh")),
            ("input_gate_activation", (None, "sigmoid", "exp")),
            ("forget_gate_activation", (None, "sigmoid", "exp")),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"CellSpec.{name}={value!r}; expected one of {allowed}")
        if self.coupled and not (self.input_gate and self.forget_gate):
            raise ValueError(
                "CellSpec(coupled=True) computes f = 1 - i, so it needs input_gate=True and "
                f"forget_gate=True; got input_gate={self.input_gate}, "
                f"forget_gate={self.forget_gate}"
            )
        if self.forget_bias != 0.0 and not self.has_forget_weights:
            raise ValueError(
                f"CellSpec.forget_bias={self.forget_bias!r} needs forget-gate weights, but this "
                "spec has none (forget_gate=False or coupled=True); expected forget_bias=0.0"
            )
        self._check_slstm()

    def _check_slstm(self) -> None:
        """The sLSTM switches compose with each other, not with the Greff variants."""
        if isinstance(self.num_heads, bool) or not isinstance(self.num_heads, int):
            raise TypeError(f"CellSpec.num_heads must be an int >= 1, got {self.num_heads!r}")
        if self.num_heads < 1:
            raise ValueError(f"CellSpec.num_heads={self.num_heads}; expected an int >= 1")
        if not self.normalizer:
            for name in ("input_gate_activation", "forget_gate_activation"):
                if getattr(self, name) == "exp":
                    raise ValueError(
                        f"CellSpec.{name}='exp' needs normalizer=True: an exponential gate "
                        "is unbounded, and only the normalizer n_t and the stabilizer m_t keep "
                        "h_t bounded (xLSTM's sLSTM)"
                    )
            if self.num_heads != 1:
                raise ValueError(
                    f"CellSpec.num_heads={self.num_heads} needs normalizer=True (the sLSTM "
                    "path runs the block-diagonal recurrence); expected num_heads=1"
                )
            return
        clashes = {
            "input_gate": (self.input_gate, True),
            "forget_gate": (self.forget_gate, True),
            "output_gate": (self.output_gate, True),
            "coupled": (self.coupled, False),
            "peephole": (self.peephole, False),
            "layernorm": (self.layernorm, False),
            "candidate_activation": (self.candidate_activation, "tanh"),
            "output_activation": (self.output_activation, "tanh"),
            "gate_activation": (self.gate_activation, "sigmoid"),
        }
        for name, (value, want) in clashes.items():
            if value != want:
                raise ValueError(
                    f"CellSpec(normalizer=True) is the sLSTM cell (h = o * c / n, no output "
                    f"activation); it does not combine with {name}={value!r}: expected "
                    f"{name}={want!r}"
                )

    @property
    def has_forget_weights(self) -> bool:
        return self.forget_gate and not self.coupled

    @property
    def gates(self) -> tuple[str, ...]:
        """The gates with weights, in PyTorch order: a subset of ``("i", "f", "g", "o")``."""
        present = {"i": self.input_gate, "f": self.has_forget_weights, "g": True}
        present["o"] = self.output_gate
        return tuple(k for k in ("i", "f", "g", "o") if present[k])

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    @property
    def peephole_gates(self) -> tuple[str, ...]:
        """Gates with a peephole weight (``weight_c<gate>``)."""
        if not self.peephole:
            return ()
        return tuple(k for k in ("i", "f", "o") if k in self.gates)

    @property
    def input_activation(self) -> str:
        """The input gate's activation: ``sigmoid``, ``tanh`` or ``exp``."""
        return self.input_gate_activation or self.gate_activation

    @property
    def forget_activation(self) -> str:
        """The forget gate's activation: ``sigmoid``, ``tanh`` or ``exp``."""
        return self.forget_gate_activation or self.gate_activation

    @property
    def is_standard(self) -> bool:
        """True when the equations are torch.nn.LSTM's (``forget_bias`` only changes init)."""
        return dataclasses.replace(self, forget_bias=0.0) == CellSpec()

    def describe(self) -> str:
        """The spec's equations as plain text, for docs and reports."""
        if self.normalizer:
            return self._describe_slstm()
        act = "σ" if self.gate_activation == "sigmoid" else "tanh"
        pi = " + w_ci ⊙ c_{t-1}" if "i" in self.peephole_gates else ""
        pf = " + w_cf ⊙ c_{t-1}" if "f" in self.peephole_gates else ""
        po = " + w_co ⊙ c_t" if "o" in self.peephole_gates else ""

        def pre(k: str) -> str:
            if self.layernorm:
                return f"LN(W_i{k} x_t) + LN(W_h{k} h_{{t-1}}) + b_{k}"
            return f"W_i{k} x_t + W_h{k} h_{{t-1}} + b_{k}"

        lines = []
        lines.append(f"i_t = {act}({pre('i')}{pi})" if self.input_gate else "i_t = 1")
        if self.coupled:
            lines.append("f_t = 1 - i_t")
        else:
            lines.append(f"f_t = {act}({pre('f')}{pf})" if self.forget_gate else "f_t = 1")
        cand = "tanh" if self.candidate_activation == "tanh" else ""
        lines.append(f"g_t = {cand}({pre('g')})")
        lines.append("c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t")
        lines.append(f"o_t = {act}({pre('o')}{po})" if self.output_gate else "o_t = 1")
        cell = "LN(c_t)" if self.layernorm else "c_t"
        out = f"tanh({cell})" if self.output_activation == "tanh" else cell
        lines.append(f"h_t = o_t ⊙ {out}")
        return "\n".join(lines)

    def _describe_slstm(self) -> str:
        R = "R_{k}" + (f" (block-diagonal, {self.num_heads} heads)" if self.num_heads > 1 else "")

        def pre(k: str) -> str:
            return f"W_{k} x_t + {R.replace('{k}', k)} h_{{t-1}} + b_{k}"

        def act(kind: str) -> str:
            return "exp" if kind == "exp" else "σ"

        return "\n".join(
            [
                f"i_t = {act(self.input_activation)}({pre('i')})",
                f"f_t = {act(self.forget_activation)}({pre('f')})",
                f"z_t = tanh({pre('z')})",
                f"o_t = σ({pre('o')})",
                "m_t = max(log f_t + m_{t-1}, log i_t)   (m_1 = log i_1 from n_0 = 0)",
                "i'_t = exp(log i_t - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t)",
                "c_t = f'_t ⊙ c_{t-1} + i'_t ⊙ z_t",
                "n_t = f'_t ⊙ n_{t-1} + i'_t",
                "h_t = o_t ⊙ c_t / n_t",
            ]
        )


PRESETS: dict[str, CellSpec] = {
    "standard": CellSpec(),
    "peephole": CellSpec(peephole=True),
    "cifg": CellSpec(coupled=True),
    "nig": CellSpec(input_gate=False),
    "nfg": CellSpec(forget_gate=False),
    "nog": CellSpec(output_gate=False),
    "niaf": CellSpec(candidate_activation="identity"),
    "noaf": CellSpec(output_activation="identity"),
    "layernorm": CellSpec(layernorm=True),
    "tanh_gates": CellSpec(gate_activation="tanh"),
    "slstm": CellSpec(
        input_gate_activation="exp", forget_gate_activation="sigmoid", normalizer=True
    ),
}


def resolve_spec(variant: str | CellSpec, forget_bias: float | None = None) -> CellSpec:
    """A preset name or a CellSpec -> CellSpec, with ``forget_bias`` applied if given."""
    if isinstance(variant, CellSpec):
        spec = variant
    elif isinstance(variant, str):
        if variant not in PRESETS:
            raise ValueError(
                f"unknown LSTM variant {variant!r}; expected a CellSpec or one of "
                f"{', '.join(PRESETS)}"
            )
        spec = PRESETS[variant]
    else:
        raise TypeError(
            f"variant must be a preset name or a CellSpec, got {type(variant).__name__}: "
            f"{variant!r}"
        )
    if forget_bias is not None and forget_bias != spec.forget_bias:
        spec = dataclasses.replace(spec, forget_bias=float(forget_bias))
    return spec


@dataclass
class LSTMGates:
    """Gate activations of one step, each ``(B, H)``; removed gates are their constant."""

    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor
    c: Tensor


def _gate_act(spec: CellSpec, x: Tensor) -> Tensor:
    return torch.sigmoid(x) if spec.gate_activation == "sigmoid" else torch.tanh(x)


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), weight, bias, LAYERNORM_EPS)


def lstm_input_projection(spec: CellSpec, x: Tensor, p: dict[str, Tensor | None]) -> Tensor:
    """Input part of the gate pre-activations for all steps at once: one GEMM.

    Args:
        x: ``(T, B, I)``.
        p: one layer-direction's parameters by canonical name (``weight_ih``, ...).
    Returns:
        ``(T, B, G*H)`` with ``G = spec.num_gates``: ``x W_ih^T + b_ih``, or with layer norm
        ``LN(x W_ih^T) + b_ih``.
    """
    if not spec.layernorm:
        return input_projection(x, p)
    xw = _layer_norm(x @ p["weight_ih"].T, p["ln_ih_weight"], p["ln_ih_bias"])  # (T, B, G*H)
    if p.get("bias_ih") is not None:
        xw = xw + p["bias_ih"]
    return xw


def input_projection(x: Tensor, p: dict[str, Tensor | None]) -> Tensor:
    """``x W_ih^T + b_ih`` for all steps at once (one GEMM): the input part of the
    pre-activations of every cell without layer norm (LSTM, GRU, RNN).

    ``x (T, B, I)`` (or ``(B, I)``); returns ``(T, B, G*H)`` (or ``(B, G*H)``).
    """
    xw = x @ p["weight_ih"].T  # (T, B, G*H)
    if p.get("bias_ih") is not None:
        xw = xw + p["bias_ih"]
    return xw


def lstm_step(
    spec: CellSpec,
    xw_t: Tensor,
    h_prev: Tensor,
    c_prev: Tensor,
    p: dict[str, Tensor | None],
) -> tuple[Tensor, Tensor, LSTMGates]:
    """One LSTM step.

    Args:
        xw_t: ``(B, G*H)`` this step's slice of :func:`lstm_input_projection`.
        h_prev: ``(B, P)`` with ``P = proj_size or H``.
        c_prev: ``(B, H)``.
    Returns:
        ``h (B, P), c (B, H), gates``.
    """
    if spec.normalizer:
        raise ValueError(
            f"lstm_step runs the LSTM equations; {spec} is an sLSTM cell: use slstm_step"
        )
    hw = h_prev @ p["weight_hh"].T  # (B, G*H)
    if spec.layernorm:
        hw = _layer_norm(hw, p["ln_hh_weight"], p["ln_hh_bias"])
    pre = xw_t + hw
    if p.get("bias_hh") is not None:
        pre = pre + p["bias_hh"]
    chunks = dict(zip(spec.gates, pre.chunk(spec.num_gates, dim=-1)))
    one = torch.ones_like(c_prev)

    if spec.input_gate:
        pre_i = chunks["i"] + p["weight_ci"] * c_prev if spec.peephole else chunks["i"]
        i = _gate_act(spec, pre_i)
    else:
        i = one
    if spec.coupled:
        f = 1.0 - i
    elif spec.forget_gate:
        pre_f = chunks["f"] + p["weight_cf"] * c_prev if spec.peephole else chunks["f"]
        f = _gate_act(spec, pre_f)
    else:
        f = one
    g = torch.tanh(chunks["g"]) if spec.candidate_activation == "tanh" else chunks["g"]
    c = f * c_prev + i * g
    if spec.output_gate:
        pre_o = chunks["o"] + p["weight_co"] * c if spec.peephole else chunks["o"]
        o = _gate_act(spec, pre_o)
    else:
        o = one
    c_out = _layer_norm(c, p["ln_c_weight"], p["ln_c_bias"]) if spec.layernorm else c
    h = o * (torch.tanh(c_out) if spec.output_activation == "tanh" else c_out)
    if p.get("weight_hr") is not None:
        h = h @ p["weight_hr"].T  # (B, P)
    return h, c, LSTMGates(i=i, f=f, g=g, o=o, c=c)


def slstm_recurrent(h_prev: Tensor, weight_hh: Tensor, num_heads: int) -> Tensor:
    """``R h_{t-1}`` with ``R`` block-diagonal over heads: ``h_prev (B, H)``,
    ``weight_hh (4H, d)`` with ``d = H / num_heads``; returns ``(B, 4H)``.

    Row ``g*H + k*d + r`` of ``weight_hh`` holds head ``k``'s weights from
    ``h_{k*d .. k*d+d-1}`` into unit ``k*d + r`` of gate ``g``; one head is torch's ``(4H,
    H)``. Reshaped to ``(4, K, d, d)`` and permuted to ``(K, 4d, d)`` it is the xlstm
    package's vanilla ``_recurrent_kernel``.
    """
    if num_heads == 1:
        return h_prev @ weight_hh.T  # (B, 4H)
    B, d = h_prev.shape[0], weight_hh.shape[1]
    hk = h_prev.reshape(B, num_heads, d)  # (B, K, d)
    wk = weight_hh.reshape(4, num_heads, d, d)  # (4, K, d_out, d_in)
    return torch.einsum("bkj,gkrj->bgkr", hk, wk).reshape(B, -1)  # (B, 4H)


def _log_gate(kind: str, pre: Tensor) -> Tensor:
    return pre if kind == "exp" else F.logsigmoid(pre)


def slstm_step(
    spec: CellSpec,
    xw_t: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor],
    p: dict[str, Tensor | None],
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]]:
    """One sLSTM step (Beck et al. 2024, eqs. 8-17; the xlstm package's vanilla step)::

        z = tanh(z~)   i = exp(i~) or σ(i~)   f = σ(f~) or exp(f~)   o = σ(o~)
        m_t = max(log f + m_{t-1}, log i)      (m_t = log i where n_{t-1} = 0)
        i' = exp(log i - m_t)   f' = exp(log f + m_{t-1} - m_t)   (f' <= 1 at that step)
        c_t = f' c_{t-1} + i' z    n_t = f' n_{t-1} + i'    h_t = o c_t / n_t

    ``i~, f~, z~, o~`` are ``xw_t + R h_{t-1} + b_hh``. ``c_t / n_t`` does not depend on
    ``m``, so the stabilizer changes neither outputs nor gradients; it is detached here
    (the xlstm package lets gradients through it: they cancel). The first step's ``m``
    follows the package (``m = i~`` when ``n = 0``), per unit. Gradients of the returned
    ``c`` and ``n`` are therefore those at fixed ``m``: exact for anything computed from
    the state later (outputs, continued sequences), which sees ``c e^m`` and ``n e^m``.

    Args:
        xw_t: ``(B, 4H)`` = ``x_t W_ih^T + b_ih``.
        state: ``(h, c, n, m)``, each ``(B, H)``.
    Returns:
        The new state and the trace ``{input_gate: i', forget_gate: f', candidate: z,
        output_gate: o, cell, normalizer, stabilizer}``, each ``(B, H)``.
    """
    h_prev, c_prev, n_prev, m_prev = state
    pre = xw_t + slstm_recurrent(h_prev, p["weight_hh"], spec.num_heads)  # (B, 4H)
    if p.get("bias_hh") is not None:
        pre = pre + p["bias_hh"]
    pre_i, pre_f, pre_z, pre_o = pre.chunk(4, dim=-1)
    log_i = _log_gate(spec.input_activation, pre_i)
    log_f_m = _log_gate(spec.forget_activation, pre_f) + m_prev.detach()
    first = n_prev == 0
    m = torch.where(first, log_i, torch.maximum(log_f_m, log_i)).detach()
    i = torch.exp(log_i - m)
    # log f + m_{t-1} <= m_t except where n_{t-1} = 0 (m_t = log i): there f' = min(., 1)
    # as in the package, clamped in log space so that exp cannot overflow.
    f = torch.exp(torch.clamp(log_f_m - m, max=0.0))
    z = torch.tanh(pre_z)
    o = torch.sigmoid(pre_o)
    c = f * c_prev + i * z
    n = f * n_prev + i
    h = o * (c / n)
    trace = {"input_gate": i, "forget_gate": f, "candidate": z, "output_gate": o}
    trace.update(cell=c, normalizer=n, stabilizer=m)
    return (h, c, n, m), trace


def gru_step(
    xw_t: Tensor, h_prev: Tensor, p: dict[str, Tensor | None], reset_after: bool = True
) -> tuple[Tensor, dict]:
    """One GRU step, torch.nn.GRU's equations (gate order ``r, z, n``)::

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))          reset_after=True
        n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)          reset_after=False
        h' = (1 - z) ⊙ n + z ⊙ h

    ``reset_after=False`` is Cho et al. (2014)'s original GRU and Keras's
    ``GRU(reset_after=False)``, whose single bias sits outside the reset gate as ``b_hn``
    does here. ``xw_t`` is ``(B, 3H)`` = ``x W_ih^T + b_ih``. Returns ``h' (B, H)`` and the
    gates.
    """
    if not reset_after:
        return _gru_step_reset_before(xw_t, h_prev, p)
    hw = h_prev @ p["weight_hh"].T  # (B, 3H)
    if p.get("bias_hh") is not None:
        hw = hw + p["bias_hh"]
    x_r, x_z, x_n = xw_t.chunk(3, dim=-1)
    h_r, h_z, h_n = hw.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    h = (1.0 - z) * n + z * h_prev
    return h, {"reset_gate": r, "update_gate": z, "candidate": n}


def _gru_step_reset_before(xw_t: Tensor, h_prev: Tensor, p: dict[str, Tensor | None]):
    """:func:`gru_step` with ``reset_after=False``: ``r`` scales ``h`` before ``W_hn``."""
    w_hrz, w_hn = p["weight_hh"].split([2 * h_prev.shape[-1], h_prev.shape[-1]])
    hw = h_prev @ w_hrz.T  # (B, 2H)
    b_hh = p.get("bias_hh")
    if b_hh is not None:
        b_hrz, b_hn = b_hh.split([2 * h_prev.shape[-1], h_prev.shape[-1]])
        hw = hw + b_hrz
    x_r, x_z, x_n = xw_t.chunk(3, dim=-1)
    h_r, h_z = hw.chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    h_n = (r * h_prev) @ w_hn.T  # (B, H)
    if b_hh is not None:
        h_n = h_n + b_hn
    n = torch.tanh(x_n + h_n)
    h = (1.0 - z) * n + z * h_prev
    return h, {"reset_gate": r, "update_gate": z, "candidate": n}


def rnn_step(
    xw_t: Tensor, h_prev: Tensor, p: dict[str, Tensor | None], nonlinearity: str = "tanh"
) -> Tensor:
    """One Elman RNN step: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``; ``xw_t`` is ``(B, H)``."""
    pre = xw_t + h_prev @ p["weight_hh"].T
    if p.get("bias_hh") is not None:
        pre = pre + p["bias_hh"]
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)
