"""Output wrappers that turn head logits into the predictions the losses and imagination read."""
from __future__ import annotations

import torch
from torch import nn

from ..functional import bounded_normal, symexp_twohot_bins, twohot_mean

__all__ = ["TwoHotPredictor", "BinaryPredictor", "BoundedNormalParams"]


class TwoHotPredictor(nn.Module):
    """``(deter, stoch) -> (logits, mean)``: symexp-twohot logits and their expectation ``(..., 1)``."""

    def __init__(self, head: nn.Module, bins: int):
        super().__init__()
        self.head = head
        self.register_buffer("bins", symexp_twohot_bins(bins), persistent=False)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor):
        logits = self.head(deter, stoch)
        return logits, twohot_mean(logits, self.bins).unsqueeze(-1)


class BinaryPredictor(nn.Module):
    """``(deter, stoch) -> (logit, probability)``, both ``(..., 1)``."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor):
        logit = self.head(deter, stoch)
        return logit, torch.sigmoid(logit)


class BoundedNormalParams(nn.Module):
    """``(deter, stoch) -> (loc, scale)`` of the bounded-normal policy (SPEC §5.3)."""

    def __init__(self, head: nn.Module, minstd: float = 0.1, maxstd: float = 1.0):
        super().__init__()
        self.head, self.minstd, self.maxstd = head, minstd, maxstd

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor):
        mean_raw, std_raw = self.head(deter, stoch)
        return bounded_normal(mean_raw, std_raw, self.minstd, self.maxstd)
