"""Categorical, normal and Bernoulli helpers used by the RSSM and the heads (SPEC §3.3, §5)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "unimix_log_probs",
    "unimix_probs",
    "sample_onehot_straight_through",
    "sample_unimix_onehot",
    "categorical_entropy",
    "bounded_normal",
    "normal_log_prob",
    "normal_entropy",
    "binary_nll",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# PyTorch's CPU (log-)softmax kernels vectorise along the class axis, which is slow for the few
# classes per latent of the small presets (4 in size1m: ~6x slower than the explicit formula
# below). Below this many classes on CPU we write the same formula out.
_SMALL_CLASSES = 16
# Probabilities, log-probs and losses are float32 whatever the compute dtype (bf16 autocast casts
# matmul outputs to bf16): each function below upcasts its inputs first; .float() of a float32
# tensor is the tensor itself, so the float32 path is unchanged.


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits, -1)``, computed as ``exp(x - max) / sum`` for few classes on CPU."""
    logits = logits.float()
    if logits.shape[-1] >= _SMALL_CLASSES or logits.device.type != "cpu":
        return torch.softmax(logits, -1)
    e = (logits - logits.detach().amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits, -1)``, computed as ``x - max - log(sum(exp(x - max)))`` for few classes on CPU."""
    logits = logits.float()
    if logits.shape[-1] >= _SMALL_CLASSES or logits.device.type != "cpu":
        return torch.log_softmax(logits, -1)
    shifted = logits - logits.detach().amax(-1, keepdim=True)
    return shifted - shifted.exp().sum(-1, keepdim=True).log()


def unimix_log_probs(logits: torch.Tensor, unimix: float = 0.01) -> torch.Tensor:
    """Log-probs ``[..., C]`` of ``(1 - unimix) * softmax(logits) + unimix / C`` (SPEC §3.3).

    Mixing in 1% uniform keeps every class probability >= unimix / C, which bounds the KL
    terms and the log-probs. ``unimix == 0`` is plain ``log_softmax``.
    """
    if unimix == 0.0:
        return _log_softmax(logits)
    return torch.log(unimix_probs(logits, unimix))


def unimix_probs(logits: torch.Tensor, unimix: float = 0.01) -> torch.Tensor:
    """Probabilities ``[..., C]`` of ``(1 - unimix) * softmax(logits) + unimix / C`` (no log)."""
    probs = _softmax(logits)
    if unimix == 0.0:
        return probs
    return probs * (1.0 - unimix) + unimix / logits.shape[-1]


def sample_unimix_onehot(
    logits: torch.Tensor, unimix: float = 0.01, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Straight-through one-hot sample ``[..., C]`` of the unimixed categorical of ``logits``.

    Same distribution and same gradient as
    ``sample_onehot_straight_through(unimix_log_probs(logits, unimix))``, but cheaper, which
    matters because the RSSM samples at every step: it works on the probabilities directly
    (no log, no second softmax) and draws one uniform number per categorical instead of one
    exponential per class. The class is found by inverse CDF, ``#{i: cdf_i <= u}`` with
    ``u ~ U[0, cdf_C)``. The gradient is that of ``p``: ``softmax(log p) == p`` on the simplex,
    so this is the same straight-through estimator. The straight-through term is skipped when
    no gradient is needed (imagination), where it would add exactly zero.
    """
    probs = unimix_probs(logits, unimix)
    cdf = probs.detach().cumsum(-1)
    # Scaling by the last CDF entry keeps u below it even when rounding makes the sum < 1.
    u = torch.rand(cdf.shape[:-1] + (1,), dtype=cdf.dtype, device=cdf.device, generator=generator)
    index = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)
    # A NaN logit makes the CDF NaN and searchsorted answer C (one past the end). On the CPU that is a clear
    # error here; on an accelerator the check would cost a sync per step, so the index is clamped (a valid
    # one-hot) and the loop's finite checks report the NaN's source.
    out_of_range = index >= cdf.shape[-1]
    if not cdf.is_cuda and bool(out_of_range.any()):
        raise ValueError(f"sample_unimix_onehot: {int(out_of_range.sum())} of {out_of_range.numel()} categoricals "
                         "have non-finite (NaN/inf) logits; an input upstream (an observation?) is not finite")
    index = index.clamp_max_(cdf.shape[-1] - 1)
    onehot = torch.zeros_like(cdf).scatter_(-1, index, 1.0)
    if not probs.requires_grad:
        return onehot
    return onehot + (probs - probs.detach())


def sample_onehot_straight_through(
    log_probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One-hot sample ``[..., C]`` of ``Categorical(log_probs)`` with straight-through gradients.

    Forward value is exactly one-hot; the gradient is that of ``p = softmax(log_probs)``
    (SPEC §3.3). Sampling is Gumbel-max, ``argmax(log_probs - log(E))`` with ``E ~ Exp(1)``.
    """
    log_probs = log_probs.float()
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
    log_probs = _log_softmax(logits)
    return -(log_probs.exp() * log_probs).sum(-1)


def bounded_normal(
    mean_raw: torch.Tensor, std_raw: torch.Tensor, minstd: float = 0.1, maxstd: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous policy parameters (SPEC §5.3): ``mean = tanh(mean_raw)``,
    ``std = (maxstd - minstd) * sigmoid(std_raw + 2) + minstd``. Shapes are unchanged.
    """
    mean_raw, std_raw = mean_raw.float(), std_raw.float()
    mean = torch.tanh(mean_raw)
    std = (maxstd - minstd) * torch.sigmoid(std_raw + 2.0) + minstd
    return mean, std


def normal_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Diagonal normal log-density summed over the last (action) dim: ``[..., A] -> [...]``."""
    x, mean, std = x.float(), mean.float(), std.float()
    z = (x - mean) / std
    return (-0.5 * z.square() - torch.log(std) - _HALF_LOG_2PI).sum(-1)


def normal_entropy(std: torch.Tensor) -> torch.Tensor:
    """Diagonal normal entropy summed over the last (action) dim: ``[..., A] -> [...]``."""
    return (torch.log(std) + _HALF_LOG_2PI + 0.5).sum(-1)


def binary_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL with soft targets, ``-(t log s(l) + (1 - t) log s(-l))`` (SPEC §5.2).

    Elementwise, any shape; the target is a constant (no gradient).
    """
    logits = logits.float()
    target = target.detach().to(logits.dtype)
    return -(target * F.logsigmoid(logits) + (1.0 - target) * F.logsigmoid(-logits))
