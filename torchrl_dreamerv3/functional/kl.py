"""KL terms of the world-model loss (SPEC §3.3-3.4)."""
from __future__ import annotations

import torch

from .distributions import unimix_log_probs

__all__ = ["categorical_kl", "dyn_rep_kl"]


def categorical_kl(lhs_log_probs: torch.Tensor, rhs_log_probs: torch.Tensor) -> torch.Tensor:
    """``KL(lhs || rhs)`` of ``S`` independent categoricals: ``[..., S, C] -> [...]``.

    Summed over the classes and over the ``S`` latents (the reference's ``Agg(..., sum)``).
    Inputs are normalised log-probs (e.g. from :func:`unimix_log_probs`).
    """
    kl = lhs_log_probs.exp() * (lhs_log_probs - rhs_log_probs)
    return kl.sum((-2, -1))


def dyn_rep_kl(
    post_logits: torch.Tensor,
    prior_logits: torch.Tensor,
    unimix: float = 0.01,
    free_nats: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamics and representation losses ``(dyn, rep)``, each ``[...]`` (SPEC §3.4).

    ``dyn = max(KL(sg(post) || prior), free_nats)`` trains the prior only;
    ``rep = max(KL(post || sg(prior)), free_nats)`` trains the posterior only. Both sides
    are unimixed; logits are ``[..., S, C]``. The clamp is elementwise per leading index, so
    below ``free_nats`` a step contributes a constant and no gradient.
    """
    post = unimix_log_probs(post_logits, unimix)
    prior = unimix_log_probs(prior_logits, unimix)
    dyn = categorical_kl(post.detach(), prior)
    rep = categorical_kl(post, prior.detach())
    return dyn.clamp_min(free_nats), rep.clamp_min(free_nats)
