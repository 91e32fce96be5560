"""The agent a run plan describes, for the observations and actions of an env.

``make_agent(plan, env)`` builds the plan's model (``plan.model``, a
:class:`~torchrl_dreamerv3.modules.ModelConfig`) for ``env``; its learner is
:func:`~.learner.make_learner`. Both read the plan (``torchrl_dreamerv3.training.plan``), never the config.
"""
from __future__ import annotations

import torch
from torchrl.envs import EnvBase

from ..envs.any_env import model_observation_keys
from ..modules import DreamerV3Modules, make_dreamer

__all__ = ["make_agent", "observation_shapes", "unbatched_action_spec"]


def observation_shapes(env: EnvBase) -> dict:
    """Shapes of the observation keys the model reads: everything but the stream's flags, stats and carry."""
    spec, batch = env.observation_spec, len(env.batch_size)
    return {k: tuple(spec[k].shape[batch:]) for k in model_observation_keys(env)}


def unbatched_action_spec(env: EnvBase):
    """The action spec of one env (a batched env's first)."""
    batch = len(env.batch_size)
    return env.action_spec[(0,) * batch] if batch else env.action_spec


def make_agent(plan, env: EnvBase, device: torch.device | None = None) -> DreamerV3Modules:
    """The plan's model (``plan.model``) for ``env``'s observations and actions, on ``device`` (the plan's)."""
    action_spec = unbatched_action_spec(env)
    return make_dreamer(observation_shapes(env), action_spec, plan.model).to(device or plan.device)
