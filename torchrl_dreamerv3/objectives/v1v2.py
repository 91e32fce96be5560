"""What DreamerV1 and DreamerV2 share: unit-Gaussian heads, reward-at-state imagination, the Gaussian critic.

SPEC_V1_V2 §1.3-§1.4, §2.3-§2.4. The generation-specific parts (the KL scheme, the policy objective)
live in :mod:`.dreamerv1` and :mod:`.dreamerv2`; the math in :mod:`torchrl_dreamerv3.functional.returns_v1v2`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictParams
from tensordict.utils import NestedKey
from torch import nn

from ..functional import binary_nll
from ..functional.returns_v1v2 import (
    critic_loss_v1v2,
    discount_target,
    imagination_targets_v1v2,
    imagination_weights_v1v2,
    unit_gaussian_nll,
)
from .common import ActorKeys, DreamerLossBase, ReturnNormalizer, ValueKeys, check_choice
from .imagination import rollout, rollout_with_graph
from .world_model_base import WorldModelLossBase, categorical_metrics, gaussian_metrics

__all__ = ["GaussianWorldModelLoss", "RewardAtStateActorLoss", "GaussianValueLoss", "LATENTS", "REWARD_TRANSFORMS"]

#: ``categorical`` logits ``[..., S, Cl]``; ``gaussian`` ``(mean, std)`` stacked as ``[..., S, 2]``.
LATENTS = ("categorical", "gaussian")
#: Applied to the reward target only: ``none`` or ``tanh`` (V2 Atari, ``clip_rewards``).
REWARD_TRANSFORMS = ("none", "tanh")


class GaussianWorldModelLoss(WorldModelLossBase):
    """The V1/V2 world-model terms but the KL, which subclasses give in ``_kl_term(post, prior)``.

    - ``rec``: unit-Gaussian NLL ``0.5 * SSE`` against ``x/255 - 0.5`` (images) and the raw value
      (vectors) -- the decoder predicts the mean in that space, no sigmoid.
    - ``rew``: ``0.5 * (r - mean)^2`` with the reward head's ``reward_logits`` as the mean
      (``tanh(r)`` with ``reward_transform="tanh"``: V2 on Atari, training only).
    - ``con`` (only with ``cont=True``): Bernoulli NLL on ``gamma * (1 - is_terminal)``.
    - ``kl`` (scale ``kl_scale``): the generation's KL.

    Args:
        world_model, obs_keys: as for :class:`~torchrl_dreamerv3.objectives.WorldModelLoss`.
        rec, rew, con, kl_scale: loss scales. free_nats, free_avg: the KL floor, on the batch mean
            (``free_avg=True``, V1/V2) or per step. unimix: latent uniform mix of the KL metrics (V1/V2: 0).
        gamma: the discount of the continue target. cont: train the discount head (V1: no head).
        latent: ``categorical`` or ``gaussian`` (``post_logits``/``prior_logits`` hold ``(mean, std)``).
        stop_grad_heads: head modules (decoder, reward, cont) re-run on detached ``deter``/``stoch``
            after the world model, so their losses do not reach the representation (V2's ``grad_heads``
            lists the others).
    """

    def __init__(self, world_model: TensorDictModuleBase, obs_keys: Sequence[NestedKey], *, rec: float = 1.0,
                 rew: float = 1.0, con: float = 1.0, kl_scale: float = 1.0, free_nats: float = 1.0,
                 free_avg: bool = True, unimix: float = 0.0, gamma: float = 0.99, cont: bool = True,
                 latent: str = "categorical", stop_grad_heads: Sequence[TensorDictModuleBase] = (),
                 reward_transform: str = "none"):
        super().__init__(world_model, obs_keys)
        self.latent = check_choice("latent", latent, LATENTS)
        self.reward_transform = check_choice("reward_transform", reward_transform, REWARD_TRANSFORMS)
        self.scales = dict(rec=rec, rew=rew, **(dict(con=con) if cont else {}), kl=kl_scale)
        self.free_nats, self.free_avg, self.unimix, self.gamma, self.cont = free_nats, free_avg, unimix, gamma, cont
        self.stop_grad_heads = nn.ModuleList(stop_grad_heads)

    def _rec_target(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        if target.dtype == torch.uint8:
            return self._image_target(target, pred) - 0.5  # input and target in [-0.5, 0.5]
        return target.to(pred.dtype)

    def _rec_error(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return unit_gaussian_nll(pred, target)  # 0.5 * squared error per element

    def _kl_term(self, post: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _run_stop_grad_heads(self, td: TensorDictBase) -> TensorDictBase:
        """Re-runs the listed heads on detached features; their outputs replace the world model's."""
        if len(self.stop_grad_heads):
            state = td.select(self.tensor_keys.deter, self.tensor_keys.stoch).detach()
            for head in self.stop_grad_heads:
                td.update(head(state.clone(False)).select(*head.out_keys))
        return td

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        td = self._run_stop_grad_heads(self.world_model(tensordict))
        keys, shape = self.tensor_keys, td.batch_size
        metrics: dict[str, torch.Tensor] = {}
        reward = self._get(td, keys.reward).reshape(shape)
        if self.reward_transform == "tanh":  # the reward head learns tanh(r); returns stay raw
            reward = torch.tanh(reward)
        terms = dict(rec=self._reconstruction(td, metrics))
        terms["rew"] = unit_gaussian_nll(self._get(td, keys.reward_logits).reshape(shape), reward)
        if self.cont:
            target = discount_target(self._get(td, keys.is_terminal).reshape(shape), self.gamma).to(reward.dtype)
            terms["con"] = binary_nll(self._get(td, keys.cont_logits).reshape(shape), target)
        post, prior = self._get(td, keys.post_logits), self._get(td, keys.prior_logits)
        terms["kl"] = self._kl_term(post, prior)
        if self.latent == "gaussian":
            gaussian_metrics(post, prior, metrics)
        else:
            categorical_metrics(post, prior, self.unimix, metrics)
        return self._scaled(terms, metrics)


def _entropy(dist, needed: bool, like: torch.Tensor) -> torch.Tensor:
    """``dist.entropy()``; a distribution without one (e.g. a tanh-normal) gives zeros when no loss needs it."""
    try:
        return dist.entropy()
    except NotImplementedError:
        if needed:
            raise
        return torch.zeros_like(like).detach()


class RewardAtStateActorLoss(DreamerLossBase):
    """Imagination with reward-at-state λ-targets; subclasses give the states and the policy objective.

    Targets ``R_k = r_k + d_k((1-λ)v_{k+1} + λR_{k+1})``
    (:func:`~torchrl_dreamerv3.functional.returns_v1v2.imagination_targets_v1v2`) over the imagined
    states, target-aligned weights ``cumprod([1, d_0..d_{N-3}])``; ``d = cont_prob`` (the discount
    head, γ folded into its target) or ``gamma`` when ``cont`` is ``None``. The trajectory written under
    ``imagined`` has ``N`` states, with the ``N - 1`` targets in ``return`` and their weights in
    ``weight`` (each padded by one step), for :class:`GaussianValueLoss`.

    Args:
        actor, critic, reward, cont, imagine_step: as for :class:`~torchrl_dreamerv3.objectives.ActorLoss`;
            ``cont`` may be ``None``.
        horizon, lam, entropy_coef, policy (the loss scale), gamma: see above.
        normalize_returns: divide targets and values by the percentile scale of ``normalizer`` (off in V1/V2).
    """

    _AcceptedKeys = ActorKeys
    default_keys = ActorKeys

    def __init__(self, actor: TensorDictModuleBase, critic: TensorDictModuleBase, reward: TensorDictModuleBase,
                 cont: TensorDictModuleBase | None, imagine_step: TensorDictModuleBase, *, horizon: int = 15,
                 lam: float = 0.95, entropy_coef: float = 0.0, policy: float = 1.0, gamma: float = 0.99,
                 normalize_returns: bool = False, normalizer: ReturnNormalizer | None = None):
        super().__init__()
        if horizon < 2:
            raise ValueError(f"horizon must be >= 2, got {horizon}")
        self.actor, self.critic, self.reward, self.cont, self.imagine_step = actor, critic, reward, cont, imagine_step
        self.horizon, self.lam, self.entropy_coef, self.gamma = horizon, lam, entropy_coef, gamma
        self.normalize_returns = normalize_returns
        self.scales = dict(policy=policy)
        self.normalizer = normalizer if normalizer is not None else ReturnNormalizer()

    def _imagine(self, tensordict: TensorDictBase, with_graph: bool):
        """``(state_keys, trajectory, policy parameters)``; with the graph for dynamics backpropagation."""
        state_keys, start = self._starts(tensordict)
        policy_keys = getattr(self.actor, "dist_params_keys", None)
        roll = rollout_with_graph if with_graph else rollout
        traj, params = roll(start, self.actor, self.imagine_step, self.horizon, state_keys, self.tensor_keys.action,
                            policy_keys)
        return state_keys, traj, params

    def _target_critic(self) -> TensorDictModuleBase:
        return self.critic

    def _heads(self, states: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``reward, disc, value`` ``(N, L)`` on ``states``, with the graph when gradients are enabled."""
        keys = self.tensor_keys
        heads = self.reward(states.clone(False))
        reward = heads.get(keys.reward_pred).squeeze(-1)
        if self.cont is not None:
            disc = self.cont(heads).get(keys.cont_prob).squeeze(-1)
        else:
            disc = torch.full_like(reward, self.gamma)
        value = self._target_critic()(states.clone(False)).get(keys.state_value).squeeze(-1)
        return reward, disc, value

    def _targets(self, reward, value, disc):
        """λ-targets ``(N, L - 1)``, their detached weights and the return scale."""
        targets = imagination_targets_v1v2(reward, value, disc, self.lam)
        weight = imagination_weights_v1v2(disc)
        with torch.no_grad():
            if self.normalize_returns:
                if self.training:
                    self.normalizer.update(targets.detach())
                scale = self.normalizer.scale()
            else:
                scale = torch.ones((), device=targets.device)
        return targets, weight, scale

    def _policy(self, traj: TensorDictBase, params, steps: int, state_keys, like: torch.Tensor):
        """The policy's distribution at ``s_0..s_{steps-1}`` and its entropy (zeros if it has none and none is needed)."""
        if params is not None:
            dist = self.actor.build_dist_from_params(params[:, :steps])
        else:
            dist = self.actor.get_dist(traj[:, :steps].select(*state_keys).detach().clone(False))
        return dist, _entropy(dist, self.entropy_coef != 0, like[:, :steps])

    def _write(self, tensordict, states, targets, value, weight, metrics, loss):
        keys = self.tensor_keys
        imagined = states.detach()
        pad = torch.zeros_like(targets[:, :1])
        imagined.set(keys.ret, torch.cat([targets.detach(), value.detach()[:, -1:]], 1))
        imagined.set(keys.weight, torch.cat([weight, pad], 1))
        tensordict.set(keys.imagined, imagined.reshape(*tensordict.batch_size, imagined.shape[-1]))
        return self._scaled(dict(policy=loss), metrics)

    @staticmethod
    def _metrics(entropy, targets, reward, disc, scale, value) -> dict:
        return dict(policy_entropy=entropy.mean(), imag_return=targets.mean(), imag_reward=reward.mean(),
                    imag_cont=disc.mean(), return_scale=scale, imag_value=value.mean())


class GaussianValueLoss(DreamerLossBase):
    """Unit-Gaussian critic on the imagined states ``s_0..s_{N-2}`` with target-aligned weights (V1/V2).

    The critic's ``state_value`` is the mean; ``loss_value = mean(sg(w_i) * 0.5 * (v(s_i) - sg(R_i))^2)``
    (:func:`~torchrl_dreamerv3.functional.returns_v1v2.critic_loss_v1v2`) over the targets that a
    :class:`RewardAtStateActorLoss` wrote under ``imagined``. There is no slow-critic regulariser and no
    replay term; the slow critic (``slow_critic=True``, V2) only provides targets (:meth:`slow_critic`),
    kept by a hard copy.
    """

    _AcceptedKeys = ValueKeys
    default_keys = ValueKeys
    critic_network: TensorDictModule
    critic_network_params: TensorDictParams
    target_critic_network_params: TensorDictParams  # only with slow_critic=True

    def __init__(self, critic: TensorDictModule, *, value: float = 1.0, slow_critic: bool = True):
        super().__init__()
        self.convert_to_functional(critic, "critic_network", create_target_params=slow_critic)
        self.scales = dict(value=value)

    def slow_critic(self, states: TensorDictBase) -> TensorDictBase:
        """The slow (target) critic on ``states``: the critic run with ``target_critic_network_params``."""
        with self.target_critic_network_params.to_module(self.critic_network):
            return self.critic_network(states)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        imagined = self._get(tensordict, keys.imagined)
        steps = imagined.shape[-1] - 1
        states = imagined.select(keys.deter, keys.stoch).detach()
        pred = self.critic_network(states.clone(False)).get(keys.state_value).squeeze(-1)[..., :steps]
        targets = self._get(imagined, keys.ret)[..., :steps]
        weight = self._get(imagined, keys.weight)[..., :steps]
        return self._scaled(dict(value=critic_loss_v1v2(pred, targets, weight)), dict(value_pred=pred.mean()))
