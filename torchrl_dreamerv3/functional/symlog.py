"""Symmetric log / exp squashing (SPEC §2)."""
from __future__ import annotations

import torch

__all__ = ["symlog", "symexp"]


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``, elementwise, any shape (SPEC §2)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * (exp(|x|) - 1)``, the inverse of :func:`symlog` (SPEC §2)."""
    return torch.sign(x) * torch.expm1(torch.abs(x))
