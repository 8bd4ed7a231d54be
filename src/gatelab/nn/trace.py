"""Gate traces: every gate activation of every layer, direction, step and unit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

__all__ = ["GRUTrace", "GateTrace", "RNNTrace"]


class _names:
    """``Trace.names()`` lists every field; ``trace.names()`` those the trace holds."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls):
        owner = cls if obj is None else obj
        return lambda: self.fn(owner)


@dataclass
class _Trace:
    """Common part. Each tensor field is ``(L * D, T, B, H)`` for time-major input or
    ``(L * D, B, T, H)`` with ``batch_first=True``; the first axis is ``layer * D +
    direction`` as in ``h_n``. Padded steps are zero; ``mask`` is ``(T, B)`` (or ``(B, T)``)
    bool, True on real steps. Unbatched input drops the batch axis (and the mask's).
    """

    mask: Tensor
    batch_first: bool
    num_directions: int

    @_names
    def names(owner) -> tuple[str, ...]:
        """The traced quantities, in order: on the class every field, on a trace those it
        holds (an LSTM trace has ``normalizer`` and ``stabilizer`` only for the sLSTM)."""
        skip = {"mask", "batch_first", "num_directions"}
        names = tuple(f.name for f in dataclasses.fields(owner) if f.name not in skip)
        if isinstance(owner, type):
            return names
        return tuple(k for k in names if getattr(owner, k) is not None)

    def items(self) -> list[tuple[str, Tensor]]:
        """``(name, tensor)`` for every quantity this trace holds."""
        return [(k, getattr(self, k)) for k in self.names()]

    @property
    def num_layers(self) -> int:
        return getattr(self, self.names()[0]).shape[0] // self.num_directions

    def layer(self, layer: int, direction: int = 0) -> dict[str, Tensor]:
        """The trace of one layer and direction: ``{name: (T, B, H)}``."""
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer={layer}; expected 0 <= layer < {self.num_layers}")
        if not 0 <= direction < self.num_directions:
            raise IndexError(
                f"direction={direction}; expected 0 <= direction < {self.num_directions}"
            )
        return {k: v[layer * self.num_directions + direction] for k, v in self.items()}

    def detach(self):
        return self._map(lambda t: t.detach())

    def to(self, *args, **kwargs):
        return self._map(lambda t: t.to(*args, **kwargs))

    def _map(self, fn):
        values = {k: fn(v) for k, v in self.items()}
        return dataclasses.replace(self, mask=fn(self.mask), **values)


@dataclass
class GateTrace(_Trace):
    """An LSTM's gates. Removed gates appear as their constant (ones for ``nfg``);
    ``cell`` is ``c_t`` (before any layer norm), ``hidden`` is ``h_t`` (projected when
    ``proj_size > 0``, so its last axis is ``proj_size``).

    sLSTM cells (``CellSpec(normalizer=True)``) also fill ``normalizer`` (``n_t``) and
    ``stabilizer`` (``m_t``), None for every other cell. Their ``input_gate`` and
    ``forget_gate`` are the effective, stabilised ``i'_t`` and ``f'_t`` that multiply
    the states, so ``cell[t] = forget_gate[t] * cell[t-1] + input_gate[t] *
    candidate[t]`` and ``normalizer[t] = forget_gate[t] * normalizer[t-1] +
    input_gate[t]`` hold on the trace, and ``hidden = output_gate * cell / normalizer``.
    """

    input_gate: Tensor = None
    forget_gate: Tensor = None
    candidate: Tensor = None
    output_gate: Tensor = None
    cell: Tensor = None
    hidden: Tensor = None
    normalizer: Tensor | None = None
    stabilizer: Tensor | None = None


@dataclass
class GRUTrace(_Trace):
    """A GRU's gates (torch.nn.GRU's equations): ``r``, ``z``, ``n`` and ``h_t``."""

    reset_gate: Tensor = None
    update_gate: Tensor = None
    candidate: Tensor = None
    hidden: Tensor = None


@dataclass
class RNNTrace(_Trace):
    """A vanilla RNN has no gates: its trace is ``h_t``."""

    hidden: Tensor = None
