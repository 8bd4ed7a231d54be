"""An ensemble of LSTM -> Dense models trained with different seeds, outputs averaged."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Ensemble", "members"]


class Ensemble(nn.Module):
    """Members trained with different seeds; outputs averaged (probabilities for
    classifiers, returned as log-probabilities so that argmax and softmax still apply).

    ``forward(x, lengths=None) -> (B, out)``, the members' inputs and output size.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        outs = torch.stack([m(x, lengths) for m in self.members])  # (M, B, out)
        if self.config.kind == "classifier":
            return torch.logsumexp(outs.log_softmax(-1), dim=0) - np.log(len(self.members))
        return outs.mean(dim=0)


def members(model: nn.Module) -> list[nn.Module]:
    """The models behind ``model``: an :class:`Ensemble`'s members, else ``[model]``."""
    return list(model.members) if isinstance(model, Ensemble) else [model]
