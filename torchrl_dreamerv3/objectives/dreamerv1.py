"""DreamerV1's losses (danijar/dreamer 56d4d44, SPEC_V1_V2 §1): joint KL, dynamics backpropagation, online critic."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from ..functional import categorical_kl, unimix_log_probs
from ..functional.gaussian import gaussian_kl
from ..functional.kl_balance import joint_kl_loss
from ..functional.returns_v1v2 import v1_actor_loss
from .v1v2 import GaussianValueLoss, GaussianWorldModelLoss, RewardAtStateActorLoss

__all__ = ["DreamerV1WorldModelLoss", "DreamerV1ActorLoss", "DreamerV1ValueLoss"]


class DreamerV1WorldModelLoss(GaussianWorldModelLoss):
    """:class:`~.v1v2.GaussianWorldModelLoss` with V1's KL: ``max(mean KL(q || p), free_nats)``, gradients to both
    sides (:func:`~torchrl_dreamerv3.functional.kl_balance.joint_kl_loss`); ``free_avg=False`` clamps each step."""

    def _kl_term(self, post: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if self.latent == "gaussian":
            (pm, ps), (qm, qs) = post.unbind(-1), prior.unbind(-1)
            value = gaussian_kl(pm, ps, qm, qs)
        else:
            value = categorical_kl(unimix_log_probs(post, self.unimix), unimix_log_probs(prior, self.unimix))
        return joint_kl_loss(value, self.free_nats, self.free_avg)


class DreamerV1ActorLoss(RewardAtStateActorLoss):
    """Dynamics backpropagation over the imagined states ``s_1..s_H`` (V1 drops the start: ``N = H``).

    ``loss_policy = -mean(sg(w_k) * (R_k / scale + entropy_coef * H[pi(.|s_{k-1})]))``
    (:func:`~torchrl_dreamerv3.functional.returns_v1v2.v1_actor_loss`): the returns are backpropagated
    through the critic, the heads and the imagined dynamics into the actor (a graph-keeping rollout: only
    the actor's parameters should be stepped with this loss). The online critic gives the values.
    """

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        with_graph = torch.is_grad_enabled()
        state_keys, traj, params = self._imagine(tensordict, with_graph)
        states = traj[:, 1:]  # the start state is dropped
        with torch.set_grad_enabled(with_graph):
            reward, disc, value = self._heads(states.select(*state_keys))
        targets, weight, scale = self._targets(reward, value, disc)
        # T at s_1..s_{H-1}, each reached by the action of the policy step before it
        _, entropy = self._policy(traj, params, targets.shape[-1], state_keys, targets)
        loss = v1_actor_loss(targets / scale + self.entropy_coef * entropy, weight)
        metrics = self._metrics(entropy, targets, reward, disc, scale, value)
        return self._write(tensordict, states, targets, value, weight, metrics, loss)


class DreamerV1ValueLoss(GaussianValueLoss):
    """V1's critic: :class:`~.v1v2.GaussianValueLoss` without a slow critic (the online critic gives the targets)."""

    def __init__(self, critic, *, value: float = 1.0):
        super().__init__(critic, value=value, slow_critic=False)
