"""Actor loss: imagination from every posterior state, lambda-returns, REINFORCE (SPEC §6.2)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from ..functional import imagination_return, percentile_ema, return_scale
from .common import DreamerLossBase

__all__ = ["ActorLoss", "ReturnNormalizer", "imagine"]


class ReturnNormalizer(nn.Module):
    """EMA of the 5th/95th return percentiles; ``scale = max(limit, hi - lo)`` (SPEC §6.2 retnorm)."""

    def __init__(self, rate: float = 0.01, limit: float = 1.0, perclo: float = 5.0, perchi: float = 95.0):
        super().__init__()
        self.rate, self.limit, self.perclo, self.perchi = rate, limit, perclo, perchi
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        lo, hi = percentile_ema(self.lo, self.hi, returns, self.rate, self.perclo, self.perchi)
        self.lo.copy_(lo)
        self.hi.copy_(hi)

    def scale(self) -> torch.Tensor:
        return return_scale(self.lo, self.hi, self.limit)


@torch.no_grad()
def imagine(
    start: TensorDictBase,
    actor: TensorDictModuleBase,
    imagine_step: TensorDictModuleBase,
    horizon: int,
    state_keys: tuple[NestedKey, ...],
    action_key: NestedKey,
) -> TensorDictBase:
    """Rolls the prior forward ``horizon`` steps from ``start`` (batch ``(N,)``) with actions from ``actor``.

    Returns the trajectory ``(N, horizon + 1)`` of states ``s_0..s_H`` (``s_0`` = start) and the
    actions ``a_0..a_{H-1}`` (the action slot of ``s_H`` is zero: no loss reads it). Everything is
    computed without gradient: the reference stops gradients through states and actions
    (``ac_grads: False``).
    """
    traj, _ = _rollout(start, actor, imagine_step, horizon, state_keys, action_key, policy_keys=None)
    return traj


def _rollout(start, actor, imagine_step, horizon, state_keys, action_key, policy_keys):
    """:func:`imagine`, optionally also returning the policy's distribution parameters ``(N, H)``.

    With ``policy_keys`` (the actor's ``dist_params_keys``) the actor runs with gradient on the
    detached states, and its parameters at ``s_0..s_{H-1}`` are returned with their graph, so
    the actor loss reuses this pass instead of running the policy over the trajectory again.
    States and actions stay gradient-free either way.
    """
    keep = policy_keys is not None and torch.is_grad_enabled()
    state = start.select(*state_keys).detach()
    states, actions, params = [state], [], []
    for _ in range(horizon):
        with torch.set_grad_enabled(keep):
            # LossModule.forward runs under ExplorationType.DETERMINISTIC; imagination must sample
            # (REINFORCE on the policy's mode would only ever reinforce the mode: entropy collapse).
            with set_exploration_type(ExplorationType.RANDOM):
                out = actor(state.clone(False))
        action = out.get(action_key).detach()
        if keep:
            params.append(out.select(*policy_keys))
        actions.append(action)
        with torch.no_grad():
            state = imagine_step(state.clone(False).set(action_key, action)).select(*state_keys)
        states.append(state)
    traj = torch.stack(states, dim=1)
    traj.set(action_key, torch.stack(actions + [torch.zeros_like(actions[0])], dim=1))
    return traj, (torch.stack(params, dim=1) if keep else None)


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
        share_critic: keep the graph of the critic's ``value_logits`` on the trajectory so that
            :class:`~torchrl_dreamerv3.objectives.ValueLoss` reuses this critic pass (True). The
            critic must not be updated in between (autograd raises if it is).
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys read or written by the loss."""

        deter: NestedKey = "deter"
        stoch: NestedKey = "stoch"
        action: NestedKey = "action"
        reward_pred: NestedKey = "reward_pred"
        cont_prob: NestedKey = "cont_prob"
        state_value: NestedKey = "state_value"
        value_logits: NestedKey = "value_logits"
        imagined: NestedKey = "imagined"
        ret: NestedKey = "return"
        weight: NestedKey = "weight"

    default_keys = _AcceptedKeys

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
        self.share_critic = share_critic
        self.actor, self.critic, self.reward, self.cont, self.imagine_step = actor, critic, reward, cont, imagine_step
        self.horizon, self.lam, self.entropy_coef = horizon, lam, entropy_coef
        self.scales = dict(policy=policy)
        self.normalizer = normalizer if normalizer is not None else ReturnNormalizer()

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        state_keys = (keys.deter, keys.stoch)
        for key in state_keys:
            self._get(tensordict, key)
        start = tensordict.select(*state_keys).detach().reshape(-1)
        # Reuse the policy pass of the rollout when the actor can rebuild its distribution from
        # parameters (any ProbabilisticTensorDictSequential); otherwise re-run it on the trajectory.
        policy_keys = getattr(self.actor, "dist_params_keys", None)
        traj, policy_params = _rollout(start, self.actor, self.imagine_step, self.horizon, state_keys,
                                       keys.action, policy_keys)
        heads = traj.clone(False)
        with torch.no_grad():
            heads = self.cont(self.reward(heads))
        # The critic pass is shared with ValueLoss: its logits keep their graph and are stored
        # with the trajectory, where ValueLoss reads them instead of running the critic again
        # (same parameters, same states). Here only their detached values are used.
        with torch.set_grad_enabled(self.share_critic and torch.is_grad_enabled()):
            heads = self.critic(heads)
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
