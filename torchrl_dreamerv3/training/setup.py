"""Factories that turn a run plan into the agent and its learner (the ``make_*`` of TorchRL's sota scripts).

Each takes the :class:`~.plan.RunPlan` (or, for callers that hold one, a Hydra config, whose plan is made
first) and reads nothing else from the config.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torchrl.envs import EnvBase

from ..agent.generations import generation_spec
from ..agent.learner import DreamerLearner
from ..envs import FLAG_KEYS
from ..envs.any_env import model_observation_keys
from ..modules import DreamerV3Modules, make_dreamer
from .plan import RunPlan, as_plan, make_plan, resolve_device, resolve_size

__all__ = ["generation_spec", "resolve_device", "resolve_size", "observation_shapes", "make_agent", "make_learner",
           "validate_config", "check_resume_config", "unbatched_action_spec", "REPLAY_KEYS"]

# What a replay row keeps besides the observations (each frame once: no ("next", obs)).
REPLAY_KEYS = ("action", "deter", "stoch", *FLAG_KEYS, ("next", "reward"), ("collector", "traj_ids"))


def validate_config(cfg: DictConfig) -> None:
    """Deprecated: :func:`~.plan.make_plan` validates (one sweep naming every bad value) and resolves."""
    make_plan(cfg)


#: Settings a resumed run must share with the run it continues: they shape the networks, the replay
#: rows and the windows the checkpoint was trained on.
RESUME_FIXED = ("env", "model", "algo.generation", "batch_size", "batch_length", "replay_context")


def check_resume_config(cfg: DictConfig, saved: DictConfig) -> None:
    """Fails, naming each differing setting, when ``cfg`` cannot continue the run saved with ``saved``.

    A resume given only ``resume=<run>`` composes the default config; without this check the
    mismatch shows up as a shape error deep inside ``load_state_dict``.
    """
    def flat(node, prefix):
        if not OmegaConf.is_config(node):
            return {prefix: node}
        return {k: v for key in node for k, v in flat(node[key], f"{prefix}.{key}").items()}

    differing = []
    for name in RESUME_FIXED:
        now, then = (OmegaConf.select(c, name) for c in (cfg, saved))
        now, then = flat(now, name), flat(then, name)
        # model.size is compared resolved (config_checks.check_resumed_model_size): auto may name the same size
        differing += [f"{k}={now.get(k)!r} (the run has {then.get(k)!r})" for k in sorted(set(now) | set(then))
                      if now.get(k) != then.get(k) and k != "model.size"]
    if differing:
        raise ValueError(
            "resume: this config cannot continue the saved run; differing settings: " + "; ".join(differing)
            + ". Pass the run's own overrides again, or start from its saved config: "
            "python examples/dreamerv3_atari.py --config-path <run dir, absolute> --config-name config resume=<run dir>")


def observation_shapes(env: EnvBase) -> dict:
    """Shapes of the observation keys the model reads: everything but the stream's flags, stats and carry."""
    spec, batch = env.observation_spec, len(env.batch_size)
    return {k: tuple(spec[k].shape[batch:]) for k in model_observation_keys(env)}


def make_agent(plan: RunPlan | DictConfig, env: EnvBase, device: torch.device | None = None) -> DreamerV3Modules:
    """The plan's model (``plan.model``) for ``env``'s observations and actions, on ``device`` (the plan's)."""
    plan = as_plan(plan, device)
    return make_dreamer(observation_shapes(env), unbatched_action_spec(env), plan.model).to(device or plan.device)


def unbatched_action_spec(env: EnvBase):
    """The action spec of one env (a batched env's first)."""
    batch = len(env.batch_size)
    return env.action_spec[(0,) * batch] if batch else env.action_spec


def make_learner(plan: RunPlan | DictConfig, agent: DreamerV3Modules) -> DreamerLearner:
    """The learner of the plan's generation, its losses, optimiser and return normaliser set from ``plan.losses``."""
    plan = as_plan(plan)
    spec, switches, settings = plan.generation, plan.switches, plan.losses
    learner = DreamerLearner(agent, loss_kwargs=spec.loss_config(settings, agent, switches),
                               opt_kwargs=dict(settings.opt), slow_rate=settings.slow_rate, generation=spec,
                               hard_interval=switches.get("hard_interval", 100))
    r, normalizer = settings.retnorm, learner.actor_loss.normalizer
    normalizer.rate, normalizer.limit, normalizer.perclo, normalizer.perchi = r["rate"], r["limit"], r["perclo"], r["perchi"]
    return learner
