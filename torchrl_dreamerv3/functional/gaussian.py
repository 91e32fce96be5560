"""Diagonal-Gaussian latents and actor output mappings of DreamerV1/V2 (SPEC_V1_V2 §1.1, §1.3-1.4, §2.1, §2.4).

DreamerV1's RSSM (and V2's ``discrete: False`` variant) has a diagonal-Gaussian stochastic state:
a dense layer emits ``2 * stoch`` numbers, split into ``(mean, std_raw)`` in that order, and
``std = act(std_raw) + min_std``. The KL is the one of ``MultivariateNormalDiag``, i.e. summed over
the latent dimensions. V1's world-model loss clamps the KL with free nats *after* the batch mean.

Everything works on arbitrary leading batch dimensions; the latent/action dimension is last.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "STD_ACTS",
    "gaussian_std",
    "gaussian_stats",
    "gaussian_rsample",
    "gaussian_kl",
    "v1_kl_loss",
    "tanh_normal_params",
    "trunc_normal_params",
]

#: ``std_act`` options of V2's ``EnsembleRSSM`` (``v2:nets.py:152-160``); V1 always uses softplus.
STD_ACTS = ("softplus", "sigmoid", "sigmoid2")


def gaussian_std(std_raw: torch.Tensor, act: str = "softplus", min_std: float = 0.1) -> torch.Tensor:
    """Latent std ``act(std_raw) + min_std``, elementwise.

    ``act``: ``softplus`` (V1, and V2's default), ``sigmoid``, or ``sigmoid2`` = ``2 * sigmoid(x / 2)``
    (V2's DMC Gaussian variant). Note the ``+ min_std``: a floor added to the value, not a clamp,
    so the gradient never vanishes (TorchRL's V1 uses ``max(softplus(x), 0.1)`` instead, SPEC_V1_V2 §8b.7).
    At ``std_raw = 0``: softplus gives 0.793147, sigmoid2 gives 1.1 (SPEC_V1_V2 §9.7).
    """
    if act == "softplus":
        std = F.softplus(std_raw)
    elif act == "sigmoid":
        std = torch.sigmoid(std_raw)
    elif act == "sigmoid2":
        std = 2.0 * torch.sigmoid(std_raw / 2.0)
    else:
        raise ValueError(f"unknown std act {act!r}; choose one of {STD_ACTS}")
    return std + min_std


def gaussian_stats(
    x: torch.Tensor, act: str = "softplus", min_std: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)``, each ``[..., S]``, from a dense output ``x [..., 2S]`` split as ``(mean, std_raw)``."""
    if x.shape[-1] % 2:
        raise ValueError(f"gaussian_stats expects an even last dimension (mean, std), got {tuple(x.shape)}")
    mean, std_raw = x.chunk(2, -1)
    return mean, gaussian_std(std_raw, act, min_std)


def gaussian_rsample(
    mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Reparameterised sample ``mean + std * eps`` with ``eps ~ N(0, 1)``; gradients reach both arguments."""
    eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
    return mean + std * eps


def gaussian_kl(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mean_q, std_q) || N(mean_p, std_p))`` of diagonal Gaussians, summed over the last dim.

    ``[..., S] -> [...]``. Per dimension ``log(sp/sq) + (sq^2 + (mq - mp)^2) / (2 sp^2) - 1/2``.
    Gradients flow into both distributions; apply ``.detach()`` to one side for balancing.
    """
    var_ratio = (std_q / std_p).square()
    mean_term = ((mean_q - mean_p) / std_p).square()
    return 0.5 * (var_ratio + mean_term - 1.0 - torch.log(var_ratio)).sum(-1)


def v1_kl_loss(
    post_mean: torch.Tensor,
    post_std: torch.Tensor,
    prior_mean: torch.Tensor,
    prior_std: torch.Tensor,
    free_nats: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV1's KL term ``(loss, kl)`` (``v1:dreamer.py:172-175``).

    ``kl = KL(post || prior)`` per leading index (both distributions get gradients, no balancing);
    ``loss = max(mean(kl), free_nats)`` is a scalar: the free nats are applied to the **batch mean**,
    so when the mean KL is below ``free_nats`` the whole term has zero gradient. Multiply by
    ``kl_scale`` (1.0) outside. Compare TorchRL's default ``mean(max(kl, free_nats))`` (SPEC_V1_V2 §8b.1).
    """
    kl = gaussian_kl(post_mean, post_std, prior_mean, prior_std)
    return torch.clamp_min(kl.mean(), free_nats), kl


def tanh_normal_params(
    mean_raw: torch.Tensor,
    std_raw: torch.Tensor,
    mean_scale: float = 5.0,
    init_std: float = 5.0,
    min_std: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V1's ``tanh_normal`` actor parameters (``v1:models.py:142-176``), before the tanh bijector.

    ``mean = mean_scale * tanh(mean_raw / mean_scale)``;
    ``std = softplus(std_raw + softplus^-1(init_std)) + min_std`` (5.0001 at ``std_raw = 0``).
    """
    raw_init_std = math.log(math.expm1(init_std))
    mean = mean_scale * torch.tanh(mean_raw / mean_scale)
    std = F.softplus(std_raw + raw_init_std) + min_std
    return mean, std


def trunc_normal_params(
    mean_raw: torch.Tensor, std_raw: torch.Tensor, min_std: float = 0.1, init_std: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """V2's ``trunc_normal`` actor parameters (``v2:nets.py`` ``DistLayer``) for a normal truncated to [-1, 1].

    ``mean = tanh(mean_raw)``; ``std = 2 * sigmoid((std_raw + init_std) / 2) + min_std`` (1.1 at 0).
    The truncated-normal distribution itself (reparameterised, samples clipped to ``±(1 - 1e-6)``
    with a straight-through estimator) is not part of this module.
    """
    mean = torch.tanh(mean_raw)
    std = 2.0 * torch.sigmoid((std_raw + init_std) / 2.0) + min_std
    return mean, std
