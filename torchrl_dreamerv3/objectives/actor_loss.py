"""DreamerV3's actor loss: imagination from every posterior state, lambda-returns, REINFORCE (SPEC §6.2).

DreamerV1 and DreamerV2 have their own actor losses (:mod:`.dreamerv1`, :mod:`.dreamerv2`).
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from ..functional import imagination_return
from .common import ActorKeys, DreamerLossBase, ReturnNormalizer
from .imagination import imagine, rollout

__all__ = ["ActorLoss", "ReturnNormalizer", "imagine"]


class ActorLoss(DreamerLossBase):
    """REINFORCE policy loss on imagined trajectories with return normalisation.

    Reads the posterior ``deter``/``stoch`` of a ``(B, T)`` batch (every state is a start, ``K = T``),
    imagines ``horizon`` steps, evaluates reward, continue and value heads on ``s_0..s_H``, and writes
    the trajectory with its ``return``, ``weight`` and the critic's ``value_logits`` into
    ``tensordict["imagined"]`` (``(B, T, H+1)``) for :class:`~torchrl_dreamerv3.objectives.ValueLoss`.

    ``loss_policy = -mean(sg(w_i) * (log pi(a_i|s_i) * sg(adv_i) + entropy_coef * H[pi(.|s_i)]))`` with
    ``adv_i = (R_i - v_i) / max(1, hi - lo)`` and ``w_i = prod_{j<=i} c_j`` (the start's continue
    probability included). The percentile EMA is updated from all ``B*T*H`` returns in training mode only.

    Args:
        actor: a ProbabilisticActor over ``(deter, stoch)`` writing ``action`` (``get_dist`` is used).
        critic, reward, cont: modules writing ``state_value``, ``reward_pred``, ``cont_prob``.
        imagine_step: the one-step prior dynamics (reads state + action, writes the next state).
        horizon (15), lam (0.95), entropy_coef (3e-4), policy: the loss scale (1.0).
        normalizer: the return normaliser (a fresh :class:`ReturnNormalizer` by default).
        share_critic: keep the graph of the critic's ``value_logits`` on the trajectory so that
            :class:`~torchrl_dreamerv3.objectives.ValueLoss` reuses this critic pass (True). The
            critic must not be updated in between (autograd raises if it is).
    """

    _AcceptedKeys = ActorKeys
    default_keys = ActorKeys

    def __init__(
        self,
        actor: TensorDictModuleBase,
        critic: TensorDictModuleBase,
        reward: TensorDictModuleBase,
        cont: TensorDictModuleBase,
        imagine_step: TensorDictModuleBase,
        *,
        horizon: int = 15,
        lam: float = 0.95,
        entropy_coef: float = 3e-4,
        policy: float = 1.0,
        normalizer: ReturnNormalizer | None = None,
        share_critic: bool = True,
    ):
        super().__init__()
        if horizon < 2:
            raise ValueError(f"horizon must be >= 2, got {horizon}")
        if cont is None:
            raise ValueError("ActorLoss (DreamerV3) needs a cont module; DreamerV1ActorLoss and DreamerV2ActorLoss "
                             "work without one (discount gamma)")
        self.share_critic = share_critic
        self.actor, self.critic, self.reward, self.cont, self.imagine_step = actor, critic, reward, cont, imagine_step
        self.horizon, self.lam, self.entropy_coef = horizon, lam, entropy_coef
        self.scales = dict(policy=policy)
        self.normalizer = normalizer if normalizer is not None else ReturnNormalizer()

    def _heads(self, traj: TensorDictBase) -> TensorDictBase:
        """Reward and continue (no gradient) and the critic on every imagined state."""
        heads = traj.clone(False)
        with torch.no_grad():
            heads = self.cont(self.reward(heads))
        # The critic pass is shared with ValueLoss: its logits keep their graph and are stored
        # with the trajectory, where ValueLoss reads them instead of running the critic again
        # (same parameters, same states). Here only their detached values are used.
        with torch.set_grad_enabled(self.share_critic and torch.is_grad_enabled()):
            return self.critic(heads)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        state_keys, start = self._starts(tensordict)
        # Reuse the policy pass of the rollout when the actor can rebuild its distribution from
        # parameters (any ProbabilisticTensorDictSequential); otherwise re-run it on the trajectory.
        policy_keys = getattr(self.actor, "dist_params_keys", None)
        traj, policy_params = rollout(start, self.actor, self.imagine_step, self.horizon, state_keys,
                                      keys.action, policy_keys)
        heads = self._heads(traj)
        with torch.no_grad():
            reward, cont, value = (heads.get(k).detach().squeeze(-1)
                                   for k in (keys.reward_pred, keys.cont_prob, keys.state_value))
            returns = imagination_return(reward, cont, value, self.lam)  # (N, H)
            weight = torch.cumprod(cont, dim=1)  # includes the start state's continue probability
            if self.training:
                self.normalizer.update(returns)
            scale = self.normalizer.scale()
            advantage = (returns - value[:, :-1]) / scale

        if policy_params is not None:
            dist = self.actor.build_dist_from_params(policy_params)
        else:
            dist = self.actor.get_dist(traj[:, :-1].clone(False))
        log_prob = dist.log_prob(traj.get(keys.action)[:, :-1])
        entropy = dist.entropy()
        loss = -weight[:, :-1] * (log_prob * advantage + self.entropy_coef * entropy)

        traj.set(keys.ret, torch.cat([returns, value[:, -1:]], 1))
        traj.set(keys.weight, weight)
        if self.share_critic and heads.get(keys.value_logits, None) is not None:
            traj.set(keys.value_logits, heads.get(keys.value_logits))
        tensordict.set(keys.imagined, traj.reshape(*tensordict.batch_size, self.horizon + 1))
        metrics = dict(
            policy_entropy=entropy.mean(), imag_return=returns.mean(), imag_reward=reward.mean(),
            imag_cont=cont.mean(), return_scale=scale, return_lo=self.normalizer.lo, return_hi=self.normalizer.hi,
            advantage=advantage.mean(), advantage_std=advantage.std(),
        )
        return self._scaled(dict(policy=loss), metrics)
