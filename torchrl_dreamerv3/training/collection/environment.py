"""Where a run's envs come from: a preset name, a gymnasium id, a Hydra ``_target_``, or a Python factory.

Every source ends as a seeded :class:`~torchrl_dreamerv3.envs.EpisodeStream`; ``run.envs`` of them
are stacked into one ``SerialEnv`` (``run.collector=sync``), spread over worker processes
(``run.collector=multisync``, which needs a picklable factory) or over Ray actors (``run.collector=ray``,
:mod:`.ray_collection`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from omegaconf import OmegaConf
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.envs import EnvBase, SerialEnv, TransformedEnv

from ...envs import make_env
from ...envs.any_env import as_episode_stream, check_observation_spec
from ...modules import DreamerV3Modules, DreamerV3Policy, make_state_primer
from .settings import CollectionSettings

__all__ = ["EnvFactory", "env_factory", "make_train_env", "make_eval_env", "with_primer", "make_collector"]

#: ``seed -> env``: any TorchRL env (wrapped into an EpisodeStream when it is not one).
EnvFactory = Callable[[int], EnvBase]


def _preset_env(env_cfg: dict, seed: int) -> EnvBase:
    kwargs = dict(env_cfg)
    return make_env(kwargs.pop("name"), seed=seed, **kwargs)


def _target_env(env_cfg: dict, seed: int) -> EnvBase:
    from hydra.utils import instantiate

    kwargs = {k: v for k, v in env_cfg.items() if k != "name"}
    return instantiate(kwargs)


def _seeded_stream(make: EnvFactory, seed: int) -> EnvBase:
    stream = as_episode_stream(make(seed))
    stream.set_seed(seed)
    return stream


def env_factory(plan, env_fn: EnvFactory | None = None) -> EnvFactory:
    """``seed -> EpisodeStream`` for this run: ``env_fn`` if given, else ``env._target_``, else the preset.
    ``plan``: the run plan, or a Hydra config (both hold the ``env`` node)."""
    if env_fn is not None:
        return functools.partial(_seeded_stream, env_fn)
    env = OmegaConf.to_container(plan.env, resolve=True) if OmegaConf.is_config(plan.env) else dict(plan.env)
    env_cfg = {k: v for k, v in env.items() if v is not None}
    if "_target_" in env_cfg:
        return functools.partial(_seeded_stream, functools.partial(_target_env, env_cfg))
    return functools.partial(_preset_env, env_cfg)  # presets come seeded


def make_train_env(make: EnvFactory, envs: int, seed: int) -> EnvBase:
    """``envs`` streams seeded ``seed + i`` (a ``SerialEnv`` when more than one); observations checked."""
    env = make(seed) if envs == 1 else SerialEnv(envs, [functools.partial(make, seed + i) for i in range(envs)])
    check_observation_spec(env)
    return env


def make_eval_env(make: EnvFactory, seed: int, agent: DreamerV3Modules) -> EnvBase:
    """One stream on seeds of its own (``seed + 10_000``), with the policy's state primer."""
    return with_primer(make(seed + 10_000), agent)


def with_primer(env: EnvBase, agent: DreamerV3Modules) -> TransformedEnv:
    return TransformedEnv(env, make_state_primer(agent))


def _primed_env(make: EnvFactory, seed: int, agent: DreamerV3Modules) -> EnvBase:
    return with_primer(make(seed), agent)


def _primed_streams(make: EnvFactory, agent: DreamerV3Modules, first_seed: int, streams: int) -> EnvBase:
    return with_primer(make_train_env(make, streams, first_seed), agent)


def make_collector(settings: CollectionSettings, make: EnvFactory, env: EnvBase, policy: DreamerV3Policy,
                   device: torch.device, version: Callable[[], int] | None = None):
    """Sync ``Collector`` over ``env`` (default), a ``MultiSyncCollector`` with one stream per worker, or Ray
    actors (``run.collector=ray``) that get ``policy``'s weights whenever ``version()`` (the update count) moved.
    ``settings``: the run plan's :class:`CollectionSettings`."""
    s = settings
    frames = s.per_batch
    # The policy's carry comes from make_state_primer, so the collector must not add transforms of its own.
    common = dict(frames_per_batch=frames, total_frames=-1, compact_obs=True, storing_device="cpu",
                  policy_device=device, auto_register_policy_transforms=False)
    if s.collector == "sync":
        return Collector(with_primer(env, policy.agent), policy, env_device="cpu", **common)
    if not env.is_closed:  # the workers build their own (a SerialEnv whose workers never started is closed)
        env.close()
    if s.collector == "ray":
        from .ray_collection import make_ray_collector  # ray is an optional extra

        return make_ray_collector(s, functools.partial(_primed_streams, make, policy.agent), policy, version)
    factories = [functools.partial(_primed_env, make, s.seed + i, policy.agent) for i in range(s.envs)]
    return MultiSyncCollector(factories, policy, cat_results="stack", **common)
