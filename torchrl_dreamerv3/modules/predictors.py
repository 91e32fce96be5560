"""Output wrappers that turn head logits into the predictions the losses and imagination read."""
from __future__ import annotations

import torch
from torch import nn

from ..functional import bounded_normal, symexp_twohot_bins, twohot_mean

__all__ = ["TwoHotPredictor", "NormalPredictor", "BinaryPredictor", "ConstantContinue", "BoundedNormalParams",
           "ActorNormalParams"]


class TwoHotPredictor(nn.Module):
    """``(deter, stoch) -> (logits, mean)``: symexp-twohot logits and their expectation ``(..., 1)``."""

    def __init__(self, head: nn.Module, bins: int):
        super().__init__()
        self.head = head
        self.register_buffer("bins", symexp_twohot_bins(bins), persistent=False)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor):
        logits = self.head(deter, stoch)
        return logits, twohot_mean(logits, self.bins).unsqueeze(-1)


class NormalPredictor(nn.Module):
    """``(deter, stoch) -> (mean, mean)``: V1/V2's unit-variance Normal head, ``(..., 1)``.

    It fills both slots of the two-hot interface (``*_logits`` and the prediction) with the same
    tensor, so the modules keep one set of keys across generations.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor):
        mean = self.head(deter, stoch)
        return mean, mean


class ConstantContinue(nn.Module):
    """No continue head (V1 without ``pcont``, V2 on DMC): ``cont_prob = 1`` everywhere, no parameters.

    Imagination then discounts with gamma alone, as the reference does. ``cont_logits`` is a large
    finite logit (sigmoid rounds to exactly 1; a loss that forgets to skip it stays finite); the
    world-model loss must skip the continue term when ``cfg.cont_head`` is False.
    """

    LOGIT = 1e4

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor):
        logit = deter.new_full((*deter.shape[:-1], 1), self.LOGIT)
        return logit, torch.ones_like(logit)


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


class ActorNormalParams(nn.Module):
    """``(deter, stoch) -> (loc, scale)`` through ``mapping(mean_raw, std_raw)``.

    V1: :func:`~torchrl_dreamerv3.functional.gaussian.tanh_normal_params` (pre-tanh loc and scale);
    V2: :func:`~torchrl_dreamerv3.functional.gaussian.trunc_normal_params`.
    """

    def __init__(self, head: nn.Module, mapping):
        super().__init__()
        self.head, self.mapping = head, mapping

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor):
        mean_raw, std_raw = self.head(deter, stoch)
        return self.mapping(mean_raw, std_raw)

    def extra_repr(self) -> str:
        return f"mapping={getattr(self.mapping, '__name__', self.mapping)}"
