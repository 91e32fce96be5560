"""KL balancing of DreamerV2 and the joint KL of DreamerV1 (SPEC_V1_V2 §1.3, §2.3, §8).

DreamerV2 (``v2:nets.py`` ``EnsembleRSSM.kl_loss``) computes the same KL twice with opposite
stop-gradients and mixes the two copies::

    lhs, rhs = (post, prior)          # forward=False (every shipped config)
    value_lhs = KL(lhs || sg(rhs))    # trains lhs = posterior only
    value_rhs = KL(sg(lhs) || rhs)    # trains rhs = prior only
    loss = mix * F(value_lhs) + (1 - mix) * F(value_rhs),   mix = 1 - balance

so the prior receives ``balance`` (0.8) and the posterior ``1 - balance`` of the gradient while the
loss *value* equals the KL. ``F`` is the free-nats clamp: with ``free_avg=True`` (every config)
``F(v) = max(mean(v), free)`` -- the clamp acts on the **batch mean**, separately for each side;
with ``free_avg=False`` it is ``mean(max(v, free))``. ``balance == 0.5`` is a special case in the
reference: a plain KL with gradients to both sides and the clamp applied **per element**
(``max(value, free).mean()``, regardless of ``free_avg``).

DreamerV1 has no balancing: ``max(mean(KL(post || prior)), 3.0)`` with both gradients.
The resulting loss is a scalar; the world-model loss multiplies it by the KL scale ``beta``
(V2: 0.1 on Atari, 1.0 on DMC; V1: 1.0).

V2's categorical KL has no unimix and is computed in float32.
"""
from __future__ import annotations

import torch

from .gaussian import gaussian_kl
from .kl import categorical_kl

__all__ = [
    "free_nats_clamp",
    "joint_kl_loss",
    "balance_kl",
    "balanced_categorical_kl",
    "balanced_gaussian_kl",
    "balance_to_dyn_rep",
    "dyn_rep_to_balance",
]


def free_nats_clamp(value: torch.Tensor, free: float, free_avg: bool = True) -> torch.Tensor:
    """Scalar ``max(mean(value), free)`` if ``free_avg`` (V1/V2) else ``mean(max(value, free))``.

    With ``free_avg`` a batch whose *mean* KL is below ``free`` contributes a constant and no
    gradient at all; per element (V3, TorchRL's V1 default) only the low-KL elements drop out.
    """
    if free_avg:
        return torch.clamp_min(value.mean(), free)
    return torch.clamp_min(value, free).mean()


def joint_kl_loss(kl: torch.Tensor, free: float = 3.0, free_avg: bool = True) -> torch.Tensor:
    """Unbalanced KL loss, gradients to both distributions (V1: ``free=3.0, free_avg=True``).

    ``kl`` must carry the graph of both posterior and prior; same as :func:`free_nats_clamp`.
    """
    return free_nats_clamp(kl, free, free_avg)


def balance_kl(
    value_lhs: torch.Tensor,
    value_rhs: torch.Tensor,
    balance: float = 0.8,
    free: float = 0.0,
    free_avg: bool = True,
    forward: bool = False,
) -> torch.Tensor:
    """Mix the two stop-gradient copies of a KL into V2's balanced loss (scalar).

    Args:
        value_lhs: ``KL(lhs || sg(rhs))`` per leading index; gradients reach ``lhs`` only.
        value_rhs: ``KL(sg(lhs) || rhs)``, numerically equal; gradients reach ``rhs`` only.
        balance: fraction of the gradient that goes to the prior (0.8).
        free, free_avg: free nats, applied to each side separately (see the module docstring).
        forward: the reference's ``forward`` flag: ``False`` means ``lhs = post``, ``rhs = prior``;
            ``True`` means ``KL(prior || post)`` with ``lhs = prior``. Either way the prior gets
            ``balance`` and the posterior ``1 - balance``.

    This is the general ``balance != 0.5`` branch; use :func:`balanced_categorical_kl` or
    :func:`balanced_gaussian_kl`, which also handle ``balance == 0.5`` like the reference.
    """
    mix = balance if forward else 1.0 - balance
    loss_lhs = free_nats_clamp(value_lhs, free, free_avg)
    loss_rhs = free_nats_clamp(value_rhs, free, free_avg)
    return mix * loss_lhs + (1.0 - mix) * loss_rhs


def _balanced(kl_fn, post, prior, balance, free, free_avg, forward):
    """Shared body: ``post``/``prior`` are tuples of tensors fed to ``kl_fn(*lhs, *rhs)``."""
    lhs, rhs = (prior, post) if forward else (post, prior)
    if balance == 0.5:
        value = kl_fn(*lhs, *rhs)
        return torch.clamp_min(value, free).mean(), value
    value_lhs = kl_fn(*lhs, *(x.detach() for x in rhs))
    value_rhs = kl_fn(*(x.detach() for x in lhs), *rhs)
    return balance_kl(value_lhs, value_rhs, balance, free, free_avg, forward), value_lhs


def _cat_kl(lhs_logits: torch.Tensor, rhs_logits: torch.Tensor) -> torch.Tensor:
    return categorical_kl(torch.log_softmax(lhs_logits, -1), torch.log_softmax(rhs_logits, -1))


def balanced_categorical_kl(
    post_logits: torch.Tensor,
    prior_logits: torch.Tensor,
    balance: float = 0.8,
    free: float = 0.0,
    free_avg: bool = True,
    forward: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V2's balanced KL of ``S`` categorical latents: logits ``[..., S, C]`` -> ``(loss, kl)``.

    ``loss`` is a scalar (see the module docstring); ``kl`` ``[...]`` is the per-step KL summed over
    the latents (the reference's ``kl_value``, for metrics; it carries the lhs gradient only).
    No unimix (plain softmax), computed in float32. Defaults are V2 Atari; V2 DMC uses ``free=1.0``.
    """
    post = (post_logits.float(),)
    prior = (prior_logits.float(),)
    return _balanced(_cat_kl, post, prior, balance, free, free_avg, forward)


def balanced_gaussian_kl(
    post_mean: torch.Tensor,
    post_std: torch.Tensor,
    prior_mean: torch.Tensor,
    prior_std: torch.Tensor,
    balance: float = 0.8,
    free: float = 0.0,
    free_avg: bool = True,
    forward: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V2's balanced KL for its diagonal-Gaussian latent variant: ``[..., S]`` -> ``(loss, kl [...])``.

    Same structure as :func:`balanced_categorical_kl` with the ``MultivariateNormalDiag`` KL.
    """
    post = (post_mean.float(), post_std.float())
    prior = (prior_mean.float(), prior_std.float())
    return _balanced(gaussian_kl, post, prior, balance, free, free_avg, forward)


def balance_to_dyn_rep(balance: float, scale: float) -> tuple[float, float]:
    """V2's ``(balance alpha, kl scale beta)`` as V3-style ``(dyn, rep)`` scales: ``(alpha*beta, (1-alpha)*beta)``.

    V2 Atari ``(0.8, 0.1)`` -> ``(0.08, 0.02)``; V2 DMC ``(0.8, 1.0)`` -> ``(0.8, 0.2)``.
    (Equal only up to where the free nats are applied: V2 clamps batch means, V3 each step.)
    """
    return balance * scale, (1.0 - balance) * scale


def dyn_rep_to_balance(dyn: float, rep: float) -> tuple[float, float]:
    """Inverse of :func:`balance_to_dyn_rep`: V3's ``(1.0, 0.1)`` is ``alpha = 0.909``, ``beta = 1.1``."""
    total = dyn + rep
    return dyn / total, total
