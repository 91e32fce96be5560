"""Actor loss: imagination from every posterior state, lambda-returns, REINFORCE (SPEC §6.2).

DreamerV3 by default; ``return_indexing="reward_at_state"`` with the switches of
:class:`ActorLoss` gives DreamerV1 (dynamics backpropagation) and DreamerV2 (SPEC_V1_V2 §1.4, §2.4).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from ..functional import imagination_return, percentile_ema, return_scale
from ..functional.returns_v1v2 import (
    first_discount_from_data,
    imagination_targets_v1v2,
    imagination_weights_v1v2,
    v2_actor_loss,
)
from .common import DreamerLossBase, check_choice

__all__ = ["ActorLoss", "ReturnNormalizer", "imagine", "ACTOR_GRADS", "RETURN_INDEXING"]

#: ``reinforce`` (V3, V2 discrete), ``dynamics`` (V1, V2 continuous), ``both`` (V2 option, ``actor_grad_mix``).
ACTOR_GRADS = ("reinforce", "dynamics", "both")
#: ``next_reward`` (V3: ``ret_t = r_{t+1} + ...``) or ``reward_at_state`` (V1/V2: ``R_t = r_t + ...``).
RETURN_INDEXING = ("next_reward", "reward_at_state")


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


def _rollout_with_graph(start, actor, imagine_step, horizon, state_keys, action_key, policy_keys):
    """Imagination that keeps the graph of states and actions, for dynamics backpropagation (V1/V2).

    As in the reference (``actor(sg(feat)).sample()``), the actor reads detached states; its
    actions are reparameterised samples (straight-through one-hot when discrete) and the prior
    steps keep their graph, so a loss on the returns reaches the actor's parameters through the
    dynamics and the heads. The start states carry no gradient. Returns the trajectory
    ``(N, horizon + 1)`` (actions with their graph) and the policy parameters at ``s_0..s_{H-1}``.
    """
    state = start.select(*state_keys).detach()
    states, actions, params = [state], [], []
    for _ in range(horizon):
        with set_exploration_type(ExplorationType.RANDOM):
            out = actor(state.detach().clone(False))
        action = out.get(action_key)
        if policy_keys is not None:
            params.append(out.select(*policy_keys))
        actions.append(action)
        state = imagine_step(state.clone(False).set(action_key, action)).select(*state_keys)
        states.append(state)
    traj = torch.stack(states, dim=1)
    traj.set(action_key, torch.stack(actions + [torch.zeros_like(actions[0])], dim=1))
    return traj, (torch.stack(params, dim=1) if policy_keys is not None else None)


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

    DreamerV1/V2 switches (defaults are DreamerV3; SPEC_V1_V2 §1.4, §2.4):

    - ``return_indexing="reward_at_state"``: targets ``R_k = r_k + d_k((1-λ)v_{k+1} + λR_{k+1})``
      (:func:`~torchrl_dreamerv3.functional.returns_v1v2.imagination_targets_v1v2`) over the ``N``
      imagined states, target-aligned weights ``cumprod([1, d_0..d_{N-3}])``; ``d = cont_prob`` (the
      discount head, γ folded into its target) or ``gamma`` when ``cont`` is ``None``.
    - ``imag_includes_start``: ``N = H + 1`` states ``s_0..s_H`` (V2) or ``N = H`` (V1 drops ``s_0``;
      needs ``actor_grad="dynamics"``). ``first_discount_from_data``: V2 replaces ``d_0`` by
      ``gamma (1 - is_terminal)`` of the start.
    - ``actor_grad``: ``reinforce`` ``log pi(sg a_t|s_t) sg(T_{t+1} - v(s_t))``; ``dynamics``
      ``T_{t+1}`` backpropagated through the imagined dynamics, heads and critic (a separate,
      graph-keeping rollout: only the actor's parameters should be stepped with this loss);
      ``both``: ``actor_grad_mix * dynamics + (1 - actor_grad_mix) * reinforce``.
    - ``critic_for_targets``: ``online`` (V1, V3) or ``slow`` (V2: ``target_critic``, e.g.
      :meth:`ValueLoss.slow_critic`, gives values and the REINFORCE baseline).
    - ``return_norm``: ``percentile`` (V3) or ``none`` (V1/V2).

    In the V1/V2 layout the trajectory written under ``imagined`` has ``N`` states, with the
    ``N - 1`` targets in ``return`` and their weights in ``weight`` (each padded by one step).
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys read or written by the loss."""

        deter: NestedKey = "deter"
        stoch: NestedKey = "stoch"
        action: NestedKey = "action"
        is_terminal: NestedKey = "is_terminal"
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
        cont: TensorDictModuleBase | None,
        imagine_step: TensorDictModuleBase,
        *,
        horizon: int = 15,
        lam: float = 0.95,
        entropy_coef: float = 3e-4,
        policy: float = 1.0,
        normalizer: ReturnNormalizer | None = None,
        share_critic: bool = True,
        return_indexing: str = "next_reward",
        imag_includes_start: bool = True,
        gamma: float = 0.99,
        first_discount_from_data: bool = False,
        actor_grad: str = "reinforce",
        actor_grad_mix: float = 0.1,
        critic_for_targets: str = "online",
        target_critic: Callable[[TensorDictBase], TensorDictBase] | None = None,
        return_norm: str = "percentile",
    ):
        super().__init__()
        self.return_indexing = check_choice("return_indexing", return_indexing, RETURN_INDEXING)
        self.actor_grad = check_choice("actor_grad", actor_grad, ACTOR_GRADS)
        self.critic_for_targets = check_choice("critic_for_targets", critic_for_targets, ("online", "slow"))
        self.return_norm = check_choice("return_norm", return_norm, ("percentile", "none"))
        v3 = return_indexing == "next_reward"
        if v3 and (actor_grad != "reinforce" or critic_for_targets != "online" or not imag_includes_start
                   or first_discount_from_data or cont is None):
            raise ValueError("return_indexing='next_reward' (DreamerV3) supports only actor_grad='reinforce', "
                             "critic_for_targets='online', imag_includes_start=True, first_discount_from_data=False "
                             "and a cont module; use return_indexing='reward_at_state' for the V1/V2 options")
        if not imag_includes_start and actor_grad != "dynamics":
            raise ValueError(f"imag_includes_start=False (DreamerV1) needs actor_grad='dynamics', got {actor_grad!r}: "
                             "REINFORCE needs the start state's value as the first baseline")
        if critic_for_targets == "slow" and target_critic is None:
            raise ValueError("critic_for_targets='slow' needs target_critic (e.g. ValueLoss.slow_critic)")
        if first_discount_from_data and not imag_includes_start:
            raise ValueError("first_discount_from_data=True needs imag_includes_start=True (it replaces the start's discount)")
        if first_discount_from_data and cont is None:
            raise ValueError("first_discount_from_data=True needs a cont (discount) head; without one d = gamma")
        if horizon < 2:
            raise ValueError(f"horizon must be >= 2, got {horizon}")
        self.share_critic = share_critic and v3
        self.actor, self.critic, self.reward, self.cont, self.imagine_step = actor, critic, reward, cont, imagine_step
        self.horizon, self.lam, self.entropy_coef = horizon, lam, entropy_coef
        self.imag_includes_start, self.gamma, self.first_discount = imag_includes_start, gamma, first_discount_from_data
        self.actor_grad_mix = actor_grad_mix
        self.target_critic = target_critic  # a callable (e.g. a bound method), not a registered submodule
        self.scales = dict(policy=policy)
        self.normalizer = normalizer if normalizer is not None else ReturnNormalizer()

    def _starts(self, tensordict: TensorDictBase) -> tuple[tuple[NestedKey, NestedKey], TensorDictBase]:
        """The state keys and every posterior state of the batch, detached and flattened: the imagination starts."""
        state_keys = (self.tensor_keys.deter, self.tensor_keys.stoch)
        for key in state_keys:
            self._get(tensordict, key)  # a clear error naming a missing key
        return state_keys, tensordict.select(*state_keys).detach().reshape(-1)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.return_indexing == "reward_at_state":
            return self._forward_v1v2(tensordict)
        keys = self.tensor_keys
        state_keys, start = self._starts(tensordict)
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

    # ------------------------------------------------------------ DreamerV1 / DreamerV2

    def _heads_v1v2(self, states: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``reward, disc, value`` ``(N, L)`` on ``states``, with the graph when gradients are enabled."""
        keys = self.tensor_keys
        heads = self.reward(states.clone(False))
        reward = heads.get(keys.reward_pred).squeeze(-1)
        if self.cont is not None:
            disc = self.cont(heads).get(keys.cont_prob).squeeze(-1)
        else:
            disc = torch.full_like(reward, self.gamma)
        critic = self.target_critic if self.critic_for_targets == "slow" else self.critic
        value = critic(states.clone(False)).get(keys.state_value).squeeze(-1)
        return reward, disc, value

    def _forward_v1v2(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        state_keys, start = self._starts(tensordict)
        policy_keys = getattr(self.actor, "dist_params_keys", None)
        with_graph = self.actor_grad != "reinforce" and torch.is_grad_enabled()
        if with_graph:
            traj, policy_params = _rollout_with_graph(start, self.actor, self.imagine_step, self.horizon, state_keys,
                                                      keys.action, policy_keys)
        else:
            traj, policy_params = _rollout(start, self.actor, self.imagine_step, self.horizon, state_keys,
                                           keys.action, policy_keys)
        # V1 drops the start state: the N states the returns are computed on.
        states = traj if self.imag_includes_start else traj[:, 1:]
        with torch.set_grad_enabled(with_graph):
            reward, disc, value = self._heads_v1v2(states.select(*state_keys))
        if self.first_discount:
            terminal = self._get(tensordict, keys.is_terminal).reshape(-1)
            disc = first_discount_from_data(disc, terminal, self.gamma)
        targets = imagination_targets_v1v2(reward, value, disc, self.lam)  # (N, L - 1)
        weight = imagination_weights_v1v2(disc)  # (N, L - 1), detached
        with torch.no_grad():
            if self.return_norm == "percentile":
                if self.training:
                    self.normalizer.update(targets.detach())
                scale = self.normalizer.scale()
            else:
                scale = torch.ones((), device=targets.device)

        steps = targets.shape[-1] - (1 if self.imag_includes_start else 0)  # actor steps t = 0..steps-1
        if policy_params is not None:
            dist = self.actor.build_dist_from_params(policy_params[:, :steps])
        else:
            dist = self.actor.get_dist(traj[:, :steps].select(*state_keys).detach().clone(False))
        entropy = _entropy(dist, self.entropy_coef != 0, targets[:, :steps])
        if self.imag_includes_start:
            actions = traj.get(keys.action)[:, :steps]
            if self.actor_grad == "reinforce":
                actions = actions.detach()  # v2@6504715: no straight-through gradient into log pi
            log_prob = dist.log_prob(actions) if self.actor_grad != "dynamics" else torch.zeros_like(targets[:, 1:])
            loss = v2_actor_loss(targets / scale, value / scale, log_prob, entropy, weight, self.actor_grad,
                                 self.actor_grad_mix, self.entropy_coef)
        else:  # V1: T at s_1..s_{H-1}, each reached by the action of the policy step before it
            loss = -(weight * (targets / scale + self.entropy_coef * entropy)).mean()

        imagined = states.detach()
        pad = torch.zeros_like(targets[:, :1])
        imagined.set(keys.ret, torch.cat([targets.detach(), value.detach()[:, -1:]], 1))
        imagined.set(keys.weight, torch.cat([weight, pad], 1))
        tensordict.set(keys.imagined, imagined.reshape(*tensordict.batch_size, imagined.shape[-1]))
        metrics = dict(
            policy_entropy=entropy.mean(), imag_return=targets.mean(), imag_reward=reward.mean(),
            imag_cont=disc.mean(), return_scale=scale, imag_value=value.mean(),
        )
        return self._scaled(dict(policy=loss), metrics)


def _entropy(dist, needed: bool, like: torch.Tensor) -> torch.Tensor:
    """``dist.entropy()``; a distribution without one (e.g. a tanh-normal) gives zeros when no loss needs it."""
    try:
        return dist.entropy()
    except NotImplementedError:
        if needed:
            raise
        return torch.zeros_like(like).detach()
