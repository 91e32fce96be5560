"""DreamerV2's losses (danijar/dreamerv2 07d906e, SPEC_V1_V2 §2): KL balancing, REINFORCE/dynamics, slow critic."""
from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from ..functional.kl_balance import balanced_categorical_kl, balanced_gaussian_kl
from ..functional.returns_v1v2 import ACTOR_GRADS, first_discount_from_data, v2_actor_loss
from .common import check_choice
from .v1v2 import GaussianValueLoss, GaussianWorldModelLoss, RewardAtStateActorLoss

__all__ = ["DreamerV2WorldModelLoss", "DreamerV2ActorLoss", "DreamerV2ValueLoss", "ACTOR_GRADS"]


class DreamerV2WorldModelLoss(GaussianWorldModelLoss):
    """:class:`~.v1v2.GaussianWorldModelLoss` with V2's balanced KL: one term, ``kl_balance`` (0.8) of its
    gradient to the prior (:func:`~torchrl_dreamerv3.functional.kl_balance.balanced_categorical_kl`, or the
    Gaussian one), free nats on the batch mean of each side (``free_avg=True``) or per step."""

    def __init__(self, *args, kl_balance: float = 0.8, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 < kl_balance < 1.0:
            raise ValueError(f"kl_balance must be in (0, 1), got {kl_balance}")
        self.kl_balance = kl_balance

    def _kl_term(self, post: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        args = dict(balance=self.kl_balance, free=self.free_nats, free_avg=self.free_avg)
        if self.latent == "gaussian":
            (pm, ps), (qm, qs) = post.unbind(-1), prior.unbind(-1)
            loss, _ = balanced_gaussian_kl(pm, ps, qm, qs, **args)
        else:
            loss, _ = balanced_categorical_kl(post, prior, **args)
        return loss


class DreamerV2ActorLoss(RewardAtStateActorLoss):
    """V2's actor over the ``N = H + 1`` imagined states ``s_0..s_H`` (:func:`~..functional.returns_v1v2.v2_actor_loss`).

    - ``actor_grad``: ``reinforce`` ``log pi(sg a_t|s_t) sg(T_{t+1} - v(s_t))``; ``dynamics``
      ``T_{t+1}`` backpropagated through the imagined dynamics, heads and critic (a graph-keeping
      rollout: only the actor's parameters should be stepped with this loss); ``both``:
      ``actor_grad_mix * dynamics + (1 - actor_grad_mix) * reinforce``.
    - ``target_critic``: the critic of the values and the REINFORCE baseline, e.g. the slow critic
      :meth:`~.v1v2.GaussianValueLoss.slow_critic` (V2); ``None`` uses the online critic.
    - ``first_discount_from_data``: replace ``d_0`` by ``gamma (1 - is_terminal)`` of the start (needs ``cont``).
    """

    def __init__(self, *args, actor_grad: str = "reinforce", actor_grad_mix: float = 0.1,
                 target_critic: Callable[[TensorDictBase], TensorDictBase] | None = None,
                 first_discount_from_data: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.actor_grad = check_choice("actor_grad", actor_grad, ACTOR_GRADS)
        if first_discount_from_data and self.cont is None:
            raise ValueError("first_discount_from_data=True needs a cont (discount) head; without one d = gamma")
        self.actor_grad_mix, self.first_discount = actor_grad_mix, first_discount_from_data
        self.target_critic = target_critic  # a callable (e.g. a bound method), not a registered submodule

    def _target_critic(self) -> TensorDictModuleBase:
        return self.target_critic if self.target_critic is not None else self.critic

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        with_graph = self.actor_grad != "reinforce" and torch.is_grad_enabled()
        state_keys, traj, params = self._imagine(tensordict, with_graph)
        with torch.set_grad_enabled(with_graph):
            reward, disc, value = self._heads(traj.select(*state_keys))
        if self.first_discount:
            disc = first_discount_from_data(disc, self._get(tensordict, keys.is_terminal).reshape(-1), self.gamma)
        targets, weight, scale = self._targets(reward, value, disc)
        steps = targets.shape[-1] - 1  # actor steps t = 0..H-2
        dist, entropy = self._policy(traj, params, steps, state_keys, targets)
        actions = traj.get(keys.action)[:, :steps]
        if self.actor_grad == "reinforce":
            actions = actions.detach()  # v2@6504715: no straight-through gradient into log pi
        log_prob = dist.log_prob(actions) if self.actor_grad != "dynamics" else torch.zeros_like(targets[:, 1:])
        loss = v2_actor_loss(targets / scale, value / scale, log_prob, entropy, weight, self.actor_grad,
                             self.actor_grad_mix, self.entropy_coef)
        metrics = self._metrics(entropy, targets, reward, disc, scale, value)
        return self._write(tensordict, traj, targets, value, weight, metrics, loss)


class DreamerV2ValueLoss(GaussianValueLoss):
    """V2's critic: :class:`~.v1v2.GaussianValueLoss` with a slow critic (hard-copied) that gives the targets."""

    def __init__(self, critic, *, value: float = 1.0):
        super().__init__(critic, value=value, slow_critic=True)
