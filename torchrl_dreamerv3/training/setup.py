"""The ``make_*`` of TorchRL's sota scripts, for callers that hold a Hydra config (or a run plan).

The builders themselves take the run plan (:mod:`.plan`): :func:`torchrl_dreamerv3.agent.build.make_agent` and
:func:`torchrl_dreamerv3.agent.learner.make_learner`. Here a config is turned into its plan first, so that
``make_agent(cfg, env, device)`` and ``make_learner(cfg, agent)`` keep working.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from torchrl.envs import EnvBase

from ..agent import build, learner
from ..agent.build import observation_shapes, unbatched_action_spec  # noqa: F401  (their old home)
from ..agent.generations import generation_spec  # noqa: F401
from ..modules import DreamerV3Modules
from .loop import REPLAY_KEYS  # noqa: F401  (its old home)
from .persistence.resume import check_resume_config  # noqa: F401  (its old home)
from .plan import RunPlan, as_plan, make_plan, resolve_device, resolve_size  # noqa: F401

__all__ = ["generation_spec", "resolve_device", "resolve_size", "observation_shapes", "make_agent", "make_learner",
           "validate_config", "check_resume_config", "unbatched_action_spec", "REPLAY_KEYS"]


def validate_config(cfg: DictConfig) -> None:
    """Deprecated: :func:`~.plan.make_plan` validates (one sweep naming every bad value) and resolves."""
    make_plan(cfg)


def make_agent(plan: RunPlan | DictConfig, env: EnvBase, device: torch.device | None = None) -> DreamerV3Modules:
    """:func:`torchrl_dreamerv3.agent.build.make_agent` of ``plan`` or of a config's plan (on ``device``)."""
    return build.make_agent(as_plan(plan, device), env, device)


def make_learner(plan: RunPlan | DictConfig, agent: DreamerV3Modules) -> learner.DreamerLearner:
    """:func:`torchrl_dreamerv3.agent.learner.make_learner` of ``plan`` or of a config's plan."""
    return learner.make_learner(as_plan(plan), agent)
