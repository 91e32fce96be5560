"""Categorical, normal and Bernoulli helpers used by the RSSM and the heads (SPEC §3.3, §5)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "unimix_log_probs",
    "sample_onehot_straight_through",
    "categorical_entropy",
    "bounded_normal",
    "normal_log_prob",
    "normal_entropy",
    "binary_nll",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def unimix_log_probs(logits: torch.Tensor, unimix: float = 0.01) -> torch.Tensor:
    """Log-probs ``[..., C]`` of ``(1 - unimix) * softmax(logits) + unimix / C`` (SPEC §3.3).

    Mixing in 1% uniform keeps every class probability >= unimix / C, which bounds the KL
    terms and the log-probs. ``unimix == 0`` is plain ``log_softmax``.
    """
    if unimix == 0.0:
        return torch.log_softmax(logits, -1)
    probs = torch.softmax(logits, -1)
    return torch.log((1.0 - unimix) * probs + unimix / logits.shape[-1])


def sample_onehot_straight_through(
    log_probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One-hot sample ``[..., C]`` of ``Categorical(log_probs)`` with straight-through gradients.

    Forward value is exactly one-hot; the gradient is that of ``p = softmax(log_probs)``
    (SPEC §3.3). Sampling is Gumbel-max, ``argmax(log_probs - log(E))`` with ``E ~ Exp(1)``.
    """
    noise = torch.empty_like(log_probs).exponential_(generator=generator)
    # Guard against E == 0 (log would give -inf and pick that class regardless of p).
    noise = noise.clamp_min_(torch.finfo(noise.dtype).tiny)
    index = torch.argmax(log_probs.detach() - noise.log(), -1, keepdim=True)
    onehot = torch.zeros_like(log_probs).scatter_(-1, index, 1.0)
    probs = torch.softmax(log_probs, -1)
    # Parenthesised so the forward value is exact: (p - p) == 0, whereas 1 + p - p may round.
    return onehot + (probs - probs.detach())


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)``: ``[..., C] -> [...]`` (SPEC §5.3, no unimix)."""
    log_probs = torch.log_softmax(logits, -1)
    return -(log_probs.exp() * log_probs).sum(-1)


def bounded_normal(
    mean_raw: torch.Tensor, std_raw: torch.Tensor, minstd: float = 0.1, maxstd: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous policy parameters (SPEC §5.3): ``mean = tanh(mean_raw)``,
    ``std = (maxstd - minstd) * sigmoid(std_raw + 2) + minstd``. Shapes are unchanged.
    """
    mean = torch.tanh(mean_raw)
    std = (maxstd - minstd) * torch.sigmoid(std_raw + 2.0) + minstd
    return mean, std


def normal_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Diagonal normal log-density summed over the last (action) dim: ``[..., A] -> [...]``."""
    z = (x - mean) / std
    return (-0.5 * z.square() - torch.log(std) - _HALF_LOG_2PI).sum(-1)


def normal_entropy(std: torch.Tensor) -> torch.Tensor:
    """Diagonal normal entropy summed over the last (action) dim: ``[..., A] -> [...]``."""
    return (torch.log(std) + _HALF_LOG_2PI + 0.5).sum(-1)


def binary_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL with soft targets, ``-(t log s(l) + (1 - t) log s(-l))`` (SPEC §5.2).

    Elementwise, any shape; the target is a constant (no gradient).
    """
    target = target.detach().to(logits.dtype)
    return -(target * F.logsigmoid(logits) + (1.0 - target) * F.logsigmoid(-logits))
