"""Factories that turn a config into the pieces of a run (the ``make_*`` of TorchRL's sota scripts)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from torchrl.envs import EnvBase

from ..envs import FLAG_KEYS
from ..envs.any_env import model_observation_keys
from ..modules import GENERATIONS, DreamerV3Modules, make_dreamerv3, model_config
from .config_checks import COLLECTORS
from ..agent.generations import generation_spec, resolve_switches
from ..agent.learner import DreamerV3Learner

__all__ = ["generation_spec", "resolve_device", "resolve_size", "observation_shapes", "make_agent", "make_learner",
           "validate_config", "check_resume_config", "unbatched_action_spec", "REPLAY_KEYS"]

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
        (cfg.run.collector in COLLECTORS, f"run.collector must be sync, multisync or ray, got {cfg.run.collector!r}"),
        (cfg.run.steps_per_collect >= 1, f"run.steps_per_collect must be >= 1, got {cfg.run.steps_per_collect}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    resolve_switches(cfg.get("algo"))  # the generation's rules of what combines, before anything is built


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


def _generation_overrides(generation: str, overrides: dict) -> dict:
    """Model keys applied on top of a V1/V2 preset: those an explicit ``size=`` preset or ``model.*`` set.

    ``size=auto`` sets none, so the generation keeps the authors' sizes; ``size=debug`` shrinks it. A
    Gaussian latent (V1) has one "class" per dimension, so a size preset's ``classes`` is replaced by 1.
    """
    if GENERATIONS[generation].get("latent") == "gaussian" and "classes" in overrides:
        overrides = dict(overrides, classes=1)
    return dict(overrides, generation=generation)


def make_agent(cfg: DictConfig, env: EnvBase, device: torch.device) -> DreamerV3Modules:
    size, _ = resolve_size(cfg.model.size, device)
    # null model keys mean "the preset's value" (configs/config.yaml lists them so model.deter=... always works)
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
                 if k != "size" and v is not None}
    if isinstance(overrides.get("mults"), list):
        overrides["mults"] = tuple(overrides["mults"])
    preset = generation_spec(cfg).model_preset
    if preset != "dreamerv3":
        overrides = _generation_overrides(preset, overrides)
    return make_dreamerv3(observation_shapes(env), unbatched_action_spec(env), model_config(size, **overrides)).to(device)


def unbatched_action_spec(env: EnvBase):
    """The action spec of one env (a batched env's first)."""
    batch = len(env.batch_size)
    return env.action_spec[(0,) * batch] if batch else env.action_spec


def make_learner(cfg: DictConfig, agent: DreamerV3Modules) -> DreamerV3Learner:
    """The learner of ``cfg.algo.generation`` (DreamerV3 without ``algo``), its losses configured from ``cfg``."""
    spec, switches = resolve_switches(cfg.get("algo"))
    learner = DreamerV3Learner(agent, loss_kwargs=spec.loss_config(cfg, agent, switches),
                               opt_kwargs=dict(OmegaConf.to_container(cfg[spec.opt_section])),
                               slow_rate=cfg.slowvalue.rate, generation=spec,
                               hard_interval=switches.get("hard_interval", 100))
    r, normalizer = cfg.retnorm, learner.actor_loss.normalizer
    normalizer.rate, normalizer.limit, normalizer.perclo, normalizer.perchi = r.rate, r.limit, r.perclo, r.perchi
    return learner
