"""Factories that turn a config into the pieces of a run (the ``make_*`` of TorchRL's sota scripts)."""
from __future__ import annotations

import functools

import torch
from omegaconf import DictConfig, OmegaConf
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers import SliceSampler
from torchrl.envs import EnvBase, SerialEnv, TransformedEnv

from ..envs import FLAG_KEYS, STAT_KEYS, make_env
from ..modules import DreamerV3Modules, DreamerV3Policy, make_dreamerv3, make_state_primer, model_config
from .learner import DreamerV3Learner

__all__ = ["resolve_device", "resolve_size", "observation_shapes", "make_train_env", "make_agent", "make_learner",
           "make_collector", "make_replay", "validate_config", "REPLAY_KEYS"]

# What a replay row keeps besides the observations (each frame once: no ("next", obs)).
REPLAY_KEYS = ("action", "deter", "stoch", *FLAG_KEYS, ("next", "reward"), ("collector", "traj_ids"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use device=cpu or device=auto")
    return device


def resolve_size(size: str, device: torch.device) -> tuple[str, str | None]:
    """``size=auto`` picks the reference default (size200m) on CUDA and size1m on CPU; returns (size, note)."""
    if size != "auto":
        return size, None
    if device.type == "cuda":
        return "size200m", "size=auto on CUDA: the reference's default model size200m"
    return "size1m", ("size=auto on CPU: model size1m (the reference's default size200m needs a GPU); "
                      "pass size=size200m (or size12m, ...) to choose another")


def validate_config(cfg: DictConfig) -> None:
    """Fails before any env or model is built, naming the bad setting."""
    checks = [
        (cfg.run.train_ratio > 0, f"run.train_ratio must be > 0, got {cfg.run.train_ratio}"),
        (cfg.run.envs >= 1, f"run.envs must be >= 1, got {cfg.run.envs}"),
        (cfg.run.steps > 0, f"run.steps must be > 0, got {cfg.run.steps}"),
        (cfg.batch_size >= 1 and cfg.batch_length >= 2, f"batch_size >= 1 and batch_length >= 2 needed, got "
                                                       f"{cfg.batch_size} x {cfg.batch_length}"),
        (cfg.replay.size >= cfg.batch_size * (cfg.batch_length + 1), f"replay.size={cfg.replay.size} cannot hold "
                                                                     "one batch of windows"),
        (cfg.replay_context == 1, f"replay_context={cfg.replay_context}: only 1 (the reference default) is supported"),
        (cfg.run.collector in ("sync", "multisync"), f"run.collector must be sync or multisync, got {cfg.run.collector!r}"),
        (cfg.run.steps_per_collect >= 1, f"run.steps_per_collect must be >= 1, got {cfg.run.steps_per_collect}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _env_kwargs(cfg: DictConfig) -> dict:
    kwargs = OmegaConf.to_container(cfg.env, resolve=True)
    return {k: v for k, v in kwargs.items() if v is not None}


def _make_env(env_kwargs: dict, seed: int) -> EnvBase:
    kwargs = dict(env_kwargs)
    return make_env(kwargs.pop("name"), seed=seed, **kwargs)


def make_train_env(cfg: DictConfig, seed_offset: int = 0) -> EnvBase:
    """``run.envs`` streams (a SerialEnv when more than one), seeded ``seed + offset + i``."""
    kwargs = _env_kwargs(cfg)
    if cfg.run.envs == 1:
        return _make_env(kwargs, cfg.seed + seed_offset)
    fns = [functools.partial(_make_env, kwargs, cfg.seed + seed_offset + i) for i in range(cfg.run.envs)]
    return SerialEnv(cfg.run.envs, fns)


def observation_shapes(env: EnvBase) -> dict:
    """Observation keys the model reads: everything but the stream's flags and statistics."""
    spec = env.observation_spec
    skip = set(FLAG_KEYS) | set(STAT_KEYS) | {"deter", "stoch", "prev_action"}
    batch = len(env.batch_size)
    return {k: tuple(spec[k].shape[batch:]) for k in spec.keys() if k not in skip}


def make_agent(cfg: DictConfig, env: EnvBase, device: torch.device) -> DreamerV3Modules:
    size, _ = resolve_size(cfg.model.size, device)
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "size"}
    if isinstance(overrides.get("mults"), list):
        overrides["mults"] = tuple(overrides["mults"])
    batch = len(env.batch_size)
    action_spec = env.action_spec
    if batch:
        action_spec = action_spec[(0,) * batch]
    return make_dreamerv3(observation_shapes(env), action_spec, model_config(size, **overrides)).to(device)


def make_learner(cfg: DictConfig, agent: DreamerV3Modules) -> DreamerV3Learner:
    s = cfg.loss_scales
    loss_kwargs = {
        "world_model": dict(rec=s.rec, rew=s.rew, con=s.con, dyn=s.dyn, rep=s.rep, free_nats=cfg.free_nats,
                            horizon=cfg.horizon),
        "actor": dict(policy=s.policy, horizon=cfg.imag_length, lam=cfg.imag_loss.lam,
                      entropy_coef=cfg.imag_loss.actent),
        "value": dict(value=s.value, repval=s.repval, slowreg=cfg.imag_loss.slowreg, lam=cfg.repl_loss.lam,
                      horizon=cfg.horizon),
    }
    r = cfg.retnorm
    learner = DreamerV3Learner(agent, loss_kwargs=loss_kwargs, opt_kwargs=dict(OmegaConf.to_container(cfg.opt)),
                               slow_rate=cfg.slowvalue.rate)
    learner.actor_loss.normalizer.rate, learner.actor_loss.normalizer.limit = r.rate, r.limit
    learner.actor_loss.normalizer.perclo, learner.actor_loss.normalizer.perchi = r.perclo, r.perchi
    return learner


def with_primer(env: EnvBase, agent: DreamerV3Modules) -> TransformedEnv:
    return TransformedEnv(env, make_state_primer(agent))


def make_collector(cfg: DictConfig, env: EnvBase, policy: DreamerV3Policy, device: torch.device):
    """Sync ``Collector`` (default) or a ``MultiSyncCollector`` with one stream per worker."""
    frames = cfg.run.envs * cfg.run.steps_per_collect
    # The policy's carry comes from make_state_primer, so the collector must not add transforms of its own.
    common = dict(frames_per_batch=frames, total_frames=-1, compact_obs=True, storing_device="cpu",
                  policy_device=device, auto_register_policy_transforms=False)
    if cfg.run.collector == "sync":
        return Collector(env, policy, env_device="cpu", **common)
    agent = policy.agent
    factories = [functools.partial(_primed_env, _env_kwargs(cfg), cfg.seed + i, agent) for i in range(cfg.run.envs)]
    return MultiSyncCollector(factories, policy, cat_results="stack", **common)


def _primed_env(kwargs: dict, seed: int, agent: DreamerV3Modules) -> EnvBase:
    return with_primer(_make_env(kwargs, seed), agent)


def make_replay(cfg: DictConfig, scratch_dir: str | None = None) -> TensorDictReplayBuffer:
    """Windows of ``batch_length + 1`` steps (row 0 = replay context) sampled uniformly from every stream.

    Storage is ``(capacity / envs, envs)``: each stream is a column, contiguous in time, so
    windows run across episode boundaries as in the reference (SPEC §8.1).
    """
    length = cfg.batch_length + cfg.replay_context
    capacity = int(cfg.replay.size)
    storage = (LazyMemmapStorage(capacity, ndim=2, scratch_dir=scratch_dir) if cfg.replay.memmap
               else LazyTensorStorage(capacity, ndim=2))
    sampler = SliceSampler(slice_len=length, traj_key=("collector", "traj_ids"), strict_length=True)
    return TensorDictReplayBuffer(storage=storage, sampler=sampler, batch_size=cfg.batch_size * length)
