"""λ-returns, weights and behaviour/critic losses of DreamerV1 and DreamerV2 (SPEC_V1_V2 §0, §1.4, §2.4).

Time is on the LAST axis, as in :mod:`torchrl_dreamerv3.functional.returns`: ``[..., N]``.

**Indexing ("reward at state").** Over imagined states ``z_0..z_{N-1}`` the reward head gives
``r_k = reward(z_k)`` and the discount ``d_k`` (γ, or the discount head's mean, γ folded in); then::

    R_k = r_k + d_k * ((1 - λ) v_{k+1} + λ R_{k+1}),   R_{N-1} := v_{N-1} (bootstrap)

and ``R_0..R_{N-2}`` are the targets, so the critic value ``v(z_k)`` *includes* ``r_k``. DreamerV3
(:func:`~torchrl_dreamerv3.functional.imagination_return`) instead uses ``r_{k+1}, c_{k+1}``: the
recursion over ``(r, d)`` is the same, but V3's critic is shifted by one state (V3's ``v_k`` plays
the role of V2's ``v_{k+1}``).

**Which states.** V1 (``v1:dreamer.py:270-281``) imagines ``H`` states and *drops the start*:
``N = H`` (15 → 14 targets). V2 (``v2:agent.py`` ``imagine``) keeps the start: ``N = H + 1``
(16 → 15 targets), and overwrites the start's discount with the data's ``γ (1 - is_terminal)``.

**Weights.** ``cumprod([1, d_0, ..., d_{N-3}])``, aligned with the targets (length ``N - 1``):
V1's ``cumprod([1, pcont[:-2]])`` and V2's ``seq['weight'][:-1]``; V2's actor uses the first
``N - 2`` of them.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "lambda_return_v1v2",
    "imagination_targets_v1v2",
    "imagination_weights_v1v2",
    "first_discount_from_data",
    "discount_target",
    "unit_gaussian_nll",
    "critic_loss_v1v2",
    "v1_actor_loss",
    "v2_actor_loss",
    "ACTOR_GRADS",
]

#: V2's ``actor_grad`` options; ``auto`` resolves to ``reinforce`` (discrete) / ``dynamics`` (continuous).
ACTOR_GRADS = ("dynamics", "reinforce", "both")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def lambda_return_v1v2(
    reward: torch.Tensor,
    value: torch.Tensor,
    pcont: torch.Tensor | float,
    bootstrap: torch.Tensor,
    lam: float = 0.95,
) -> torch.Tensor:
    """The authors' ``lambda_return`` (``v1:tools.py``, identical in ``v2:other.py``); ``[..., T] -> [..., T]``.

    ``R_t = reward_t + pcont_t ((1 - lam) next_t + lam R_{t+1})`` with ``next = [value_1..value_{T-1},
    bootstrap]`` and ``R_T = bootstrap``. ``value_0`` is never read. ``pcont`` may be a float.
    ``bootstrap`` is ``[...]``. ``lam = 1``: discounted Monte Carlo; ``lam = 0``: one-step TD.
    """
    if not torch.is_tensor(pcont):
        pcont = torch.full_like(reward, float(pcont))
    reward, value, pcont = torch.broadcast_tensors(reward, value, pcont)
    if bootstrap.shape != reward.shape[:-1]:
        raise ValueError(f"bootstrap must be {tuple(reward.shape[:-1])}, got {tuple(bootstrap.shape)}")
    next_values = torch.cat([value[..., 1:], bootstrap.unsqueeze(-1)], -1)
    inputs = (reward + pcont * next_values * (1.0 - lam)).movedim(-1, 0)
    decay = (pcont * lam).movedim(-1, 0)
    ret = bootstrap
    rets = []
    for t in reversed(range(inputs.shape[0])):
        ret = inputs[t] + decay[t] * ret
        rets.append(ret)
    return torch.stack(rets[::-1], -1)


def imagination_targets_v1v2(
    reward: torch.Tensor, value: torch.Tensor, disc: torch.Tensor | float, lam: float = 0.95
) -> torch.Tensor:
    """λ-targets of an imagined trajectory, reward-at-state indexing: ``[..., N] -> [..., N - 1]``.

    ``reward``, ``value``, ``disc`` belong to the same states ``z_0..z_{N-1}``; the last value is
    the bootstrap. V1: states ``1..H`` (start excluded), online critic, ``disc = γ`` (or the pcont
    head). V2: states ``0..H`` (start included), slow target critic, ``disc`` from the discount
    head with ``disc_0`` from data (:func:`first_discount_from_data`).
    """
    if torch.is_tensor(disc):
        disc = disc[..., :-1]
    return lambda_return_v1v2(reward[..., :-1], value[..., :-1], disc, value[..., -1], lam)


def imagination_weights_v1v2(disc: torch.Tensor) -> torch.Tensor:
    """Target-aligned loss weights ``cumprod([1, d_0, ..., d_{N-3}])``: ``[..., N] -> [..., N - 1]``.

    Returned detached (both generations stop their gradient). A weight ``w_k`` is the probability
    that state ``k`` is still alive: the discount of a state says whether the *next* one is valid.
    """
    disc = disc.detach()
    ones = torch.ones_like(disc[..., :1])
    return torch.cumprod(torch.cat([ones, disc[..., :-2]], -1), -1)


def first_discount_from_data(disc: torch.Tensor, is_terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """V2: replace the start state's predicted discount ``disc[..., 0]`` by ``gamma * (1 - is_terminal)``.

    ``disc [..., N]``, ``is_terminal [...]`` (the flag of each imagination start, from replay).
    Only applies when V2 has a discount head; without one the discount is ``gamma`` everywhere.
    """
    first = gamma * (1.0 - is_terminal.to(disc.dtype))
    return torch.cat([first.unsqueeze(-1), disc[..., 1:]], -1)


def discount_target(is_terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """Soft target of the discount head: V2 ``gamma * (1 - is_terminal)``; V1 ``gamma * discount``
    (pass ``1 - discount`` as ``is_terminal``). Train with ``binary_nll`` (V1 scale 10, V2 Atari 5).
    """
    return gamma * (1.0 - is_terminal.float())


def unit_gaussian_nll(
    mean: torch.Tensor, target: torch.Tensor, event_dims: int = 0, constant: bool = False
) -> torch.Tensor:
    """``-log N(target; mean, 1)`` summed over the last ``event_dims`` dims: ``0.5 * SSE`` (+ constant).

    V1/V2 image (``event_dims=3``, summed over C, H, W), reward and critic likelihoods. The constant
    ``0.5 log(2π)`` per element (11291.9167 for a 64x64x3 image) changes no gradient and is off by
    default. V3 uses the SSE without the 0.5.
    """
    nll = 0.5 * (target - mean).square()
    if constant:
        nll = nll + _HALF_LOG_2PI
    if event_dims:
        nll = nll.sum(tuple(range(-event_dims, 0)))
    return nll


def critic_loss_v1v2(
    value_pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, constant: bool = False
) -> torch.Tensor:
    """``mean(sg(w) * -log N(sg(target); value_pred, 1))`` over all elements (scalar).

    All three ``[..., N - 1]`` (target-aligned: the critic is evaluated on ``z_0..z_{N-2}``).
    """
    nll = unit_gaussian_nll(value_pred, target.detach(), constant=constant)
    return (weight.detach() * nll).mean()


def v1_actor_loss(returns: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """V1 dynamics backpropagation: ``-mean(sg(w) * R)`` (scalar). ``returns`` must carry the graph
    through value, reward (and pcont) heads and the imagined dynamics into the actions.
    """
    return -(weight.detach() * returns).mean()


def v2_actor_loss(
    target: torch.Tensor,
    value: torch.Tensor,
    log_prob: torch.Tensor,
    entropy: torch.Tensor,
    weight: torch.Tensor,
    actor_grad: str = "reinforce",
    mix: float = 0.1,
    ent_scale: float = 1e-3,
) -> torch.Tensor:
    """V2's actor loss (``v2:agent.py`` ``ActorCritic.actor_loss``), scalar.

    Over the actor steps ``t = 0..H-2`` (the policy at ``z_t`` chose ``a_{t+1}``, which led to
    ``z_{t+1}``)::

        dynamics:  obj_t = T_{t+1}                                   (gradient through the model)
        reinforce: obj_t = log π(a_{t+1}|z_t) * sg(T_{t+1} - v_slow(z_t))
        both:      obj_t = mix * T_{t+1} + (1 - mix) * reinforce_t   (mix weights *dynamics*)
        loss = -mean(sg(w_t) * (obj_t + ent_scale * H[π(.|z_t)]))

    Args:
        target: λ-targets ``[..., H]`` (``T_0..T_{H-1}``, :func:`imagination_targets_v1v2`).
        value: slow-critic values on all states ``[..., H + 1]``; ``value[..., :-2]`` is the baseline.
        log_prob: ``log π(a_{t+1} | z_t)``, ``[..., H - 1]``. For ``reinforce`` compute it on the
            *detached* action (``v2@6504715``); the ``both`` branch of the reference does not detach.
        entropy: ``H[π(.|z_t)]``, ``[..., H - 1]``.
        weight: target-aligned weights ``[..., H]`` (:func:`imagination_weights_v1v2`).
        actor_grad: ``dynamics`` | ``reinforce`` | ``both``. mix: ``actor_grad_mix`` (0.1).
        ent_scale: ``actor_ent`` (1e-3 Atari, 1e-4 DMC, 2e-3 default).
    """
    steps = target.shape[-1] - 1
    shapes = dict(target=target.shape[-1], value=value.shape[-1], log_prob=log_prob.shape[-1],
                  entropy=entropy.shape[-1], weight=weight.shape[-1])
    expected = dict(target=steps + 1, value=steps + 2, log_prob=steps, entropy=steps, weight=steps + 1)
    if shapes != expected:
        raise ValueError(f"v2_actor_loss: time lengths {shapes}, expected {expected}")
    if actor_grad not in ACTOR_GRADS:
        raise ValueError(f"unknown actor_grad {actor_grad!r}; choose one of {ACTOR_GRADS}")
    future = target[..., 1:]
    if actor_grad == "dynamics":
        objective = future
    else:
        advantage = (future - value[..., :-2]).detach()
        objective = log_prob * advantage
        if actor_grad == "both":
            objective = mix * future + (1.0 - mix) * objective
    objective = objective + ent_scale * entropy
    return -(weight[..., :-1].detach() * objective).mean()
