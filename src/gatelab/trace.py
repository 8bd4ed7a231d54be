"""Gate traces: every gate activation of every layer, direction, step and unit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

__all__ = ["GRUTrace", "GateTrace", "RNNTrace"]


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

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The traced quantities, in order."""
        skip = {"mask", "batch_first", "num_directions"}
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)

    def items(self) -> list[tuple[str, Tensor]]:
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
    ``proj_size > 0``, so its last axis is ``proj_size``)."""

    input_gate: Tensor = None
    forget_gate: Tensor = None
    candidate: Tensor = None
    output_gate: Tensor = None
    cell: Tensor = None
    hidden: Tensor = None


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
