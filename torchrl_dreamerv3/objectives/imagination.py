"""Imagination: the prior rolled forward from posterior states with actions of the policy (SPEC §6.2)."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.envs.utils import ExplorationType, set_exploration_type

__all__ = ["imagine", "rollout", "rollout_with_graph"]


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
    traj, _ = rollout(start, actor, imagine_step, horizon, state_keys, action_key, policy_keys=None)
    return traj


def _stack(states, actions, action_key) -> TensorDictBase:
    traj = torch.stack(states, dim=1)
    traj.set(action_key, torch.stack(actions + [torch.zeros_like(actions[0])], dim=1))
    return traj


def rollout(start, actor, imagine_step, horizon, state_keys, action_key, policy_keys):
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
    return _stack(states, actions, action_key), (torch.stack(params, dim=1) if keep else None)


def rollout_with_graph(start, actor, imagine_step, horizon, state_keys, action_key, policy_keys):
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
    return _stack(states, actions, action_key), (torch.stack(params, dim=1) if policy_keys is not None else None)
