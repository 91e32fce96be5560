"""The run plan: the Hydra config validated and resolved once, before anything is built.

``make_plan(cfg)`` runs one sweep: the types, ranges, choices and relations of
:mod:`.config_checks`, plus what only resolving finds (the generation's ``algo.*`` switches, the model
preset, precision and compile, the replay and collection settings). It raises one
:class:`~.config_checks.ConfigError` naming every bad value, or returns a frozen :class:`RunPlan`. The
builders (``agent.build.make_agent``, ``agent.learner.make_learner``, ``make_replay``, ``make_collector``)
and the loop read the plan, not the config. A resumed run compares its plan's ``identity`` with the one its checkpoint saved
(:func:`~.persistence.resume.check_resumable`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..agent.generations import GenerationSpec, resolve_switches
from ..agent.settings import LossSettings
from ..modules import ModelConfig
from ..replay.settings import ReplaySettings
from .collection.settings import CollectionSettings
from .compute.settings import Acceleration
from .config_checks import ConfigError, config_problems

__all__ = ["LoopSettings", "RunPlan", "make_plan", "as_plan", "resolve_device", "resolve_size",
           "use_parallel"]


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; a CUDA device where there is none is refused."""
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


def use_parallel(setting, device: torch.device) -> bool:
    """``run.async_collect``: ``auto`` (parallel on CUDA), ``true`` or ``false``."""
    if setting == "auto":
        return device.type == "cuda"
    if setting in (True, False):
        return setting
    raise ValueError(f"run.async_collect must be auto, true or false, got {setting!r}")


def frozen(node) -> Mapping:
    """A read-only plain mapping of a config node (or dict)."""
    return MappingProxyType(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node))


@dataclass(frozen=True)
class LoopSettings:
    """The loop's cadences (seconds, or env steps for evaluation), checkpoints and logger."""

    log_every: float = 60.0
    report_every: float = 300.0
    save_every: float = 900.0
    eval_every: int = 0
    eval_eps: int = 1
    estimate_after: float = 60.0
    checkpoint_replay: bool = False
    checkpoint_keep: int = 1
    logger_backend: str = "csv"
    wandb: Mapping | None = None


@dataclass(frozen=True)
class RunPlan:
    """Everything a run is, resolved: build from it, never from the config again."""

    seed: int
    threads: int
    device: torch.device
    model_size: str  # resolved (size=auto: by device); "<generation> preset" for V1/V2
    size_note: str | None  # said once at the start when size=auto chose
    model: ModelConfig
    generation: GenerationSpec  # with algo.expl_noise applied
    switches: Mapping[str, Any]  # the generation's algo.* switches, defaults filled in
    losses: LossSettings
    replay: ReplaySettings
    collection: CollectionSettings
    compute: Acceleration
    loop: LoopSettings
    env: Mapping  # the env node (a preset name and its settings, or _target_)
    env_name: str
    logdir: Path
    resume: str | None
    identity: Mapping  # what a resumed run must share with the run it continues (see make_plan)
    hparams: Mapping  # the whole config, resolved: logged and saved once


def _logdir(cfg: DictConfig) -> Path:
    if cfg.resume:  # a run dir, its checkpoint/ dir, or one checkpoint/step_* dir
        resume = Path(cfg.resume)
        if resume.name.startswith("step_"):
            resume = resume.parent
        return resume.parent if resume.name == "checkpoint" else resume
    return Path(cfg.logdir)


def _loop(cfg: DictConfig) -> LoopSettings:
    run, logger = cfg.run, cfg.logger
    return LoopSettings(log_every=run.log_every, report_every=run.report_every, save_every=run.save_every,
                        eval_every=run.eval_every, eval_eps=run.eval_eps, estimate_after=run.get("estimate_after", 60),
                        checkpoint_replay=bool(cfg.checkpoint.replay), checkpoint_keep=int(cfg.checkpoint.keep),
                        logger_backend=logger.backend, wandb=frozen(logger.wandb) if "wandb" in logger else None)


def _losses(cfg: DictConfig) -> LossSettings:
    """The loss settings; ``opt`` is the LaProp section until the generation names its own."""
    return LossSettings(scales=frozen(cfg.loss_scales), free_nats=cfg.free_nats, horizon=cfg.horizon,
                        imag_length=cfg.imag_length, imag_lam=cfg.imag_loss.lam, actent=cfg.imag_loss.actent,
                        slowreg=cfg.imag_loss.slowreg, repl_lam=cfg.repl_loss.lam, slow_rate=cfg.slowvalue.rate,
                        retnorm=frozen(cfg.retnorm), opt=frozen(cfg.opt))


def _replay(cfg: DictConfig, cuda: bool) -> ReplaySettings:
    """``replay.prefetch=auto``: 1 on CUDA, 0 on CPU (the reference prefetches one batch; on CPU the thread only
    competes for the cores)."""
    replay = cfg.replay
    online, prefetch = replay.get("online", True), replay.get("prefetch", "auto")
    prefetch = (1 if cuda else 0) if prefetch == "auto" else prefetch
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(f"replay.prefetch must be auto or a number of batches >= 0, got {prefetch!r}")
    return ReplaySettings(size=int(replay.size), streams=int(cfg.run.envs), batch_size=int(cfg.batch_size),
                          batch_length=int(cfg.batch_length), slice_len=int(cfg.batch_length + cfg.replay_context),
                          online=online, prefetch=prefetch, pin_memory=cuda, memmap=bool(replay.memmap))


def _collection(cfg: DictConfig, device: torch.device) -> CollectionSettings:
    """``run.max_ahead=auto``: 4 collected batches (at least 2 updates' worth), so that the acting policy lags the
    learner by the same few batches on a 10k-step CartPole run as on Atari."""
    run = cfg.run
    per_batch, updates_per_step = run.envs * run.steps_per_collect, run.train_ratio / (cfg.batch_size * cfg.batch_length)
    max_ahead = run.get("max_ahead", "auto")
    max_ahead = max(4 * per_batch, math.ceil(2 / updates_per_step)) if max_ahead == "auto" else int(max_ahead)
    async_collect = run.get("async_collect", "auto")
    parallel = use_parallel(async_collect, device)
    if parallel and max_ahead < 1 / updates_per_step:
        raise ValueError(f"run.max_ahead={max_ahead} env steps is less than one update's worth "
                         f"({1 / updates_per_step:g} env steps at this train ratio); the collector would wait forever")
    return CollectionSettings(
        collector=run.collector, envs=int(run.envs), steps_per_collect=int(run.steps_per_collect), per_batch=per_batch,
        steps=int(run.steps), train_ratio=run.train_ratio, seed=int(cfg.seed), prefill=int(run.get("prefill", 0)),
        parallel=parallel, async_collect=async_collect, max_ahead=max_ahead,
        ray_workers=int(OmegaConf.select(cfg, "run.ray.workers", default=1)),
        ray_address=OmegaConf.select(cfg, "run.ray.address", default=None))


def _model_overrides(cfg: DictConfig) -> dict:
    """The config's ``model.*`` that are set (null: the preset's value; ``size`` picks the preset)."""
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "size" and v is not None}
    if isinstance(overrides.get("mults"), list):
        overrides["mults"] = tuple(overrides["mults"])
    return overrides


def _settings(cfg: DictConfig, device: torch.device | None, problems: list[str], typed: bool) -> dict:
    """Every part of the plan, each read once; a part that fails adds its message (and the parts that need it
    wait). ``typed``: the checked settings have their types and ranges (else the parts read from them wait)."""
    parts: dict[str, Any] = {}

    def attempt(name, read):
        try:
            parts[name] = read()
        except (ValueError, TypeError) as error:
            problems.append(str(error))

    parts.update(env=frozen(cfg.env), logdir=_logdir(cfg), hparams=frozen(cfg))
    attempt("device", lambda: resolve_device(cfg.device) if device is None else device)
    if "device" in parts:
        attempt("size", lambda: resolve_size(cfg.model.size, parts["device"]))
    if typed and "device" in parts:
        attempt("loop", lambda: _loop(cfg))
        attempt("replay", lambda: _replay(cfg, parts["device"].type == "cuda"))
        attempt("collection", lambda: _collection(cfg, parts["device"]))
        attempt("losses", lambda: _losses(cfg))
    overrides = _model_overrides(cfg)
    # what the generation's registry entry and the compute settings resolve
    attempt("generation", lambda: resolve_switches(cfg.get("algo")))
    if "generation" in parts:
        spec = parts["generation"][0]
        if "size" in parts:
            attempt("model", lambda: spec.model(parts["size"][0], overrides))
        if "losses" in parts:  # the generation's optimiser section: opt (LaProp) or opt3 (three Adams)
            opt = MappingProxyType(OmegaConf.to_container(cfg[spec.opt_section], resolve=True))
            parts["losses"] = dataclasses.replace(parts["losses"], opt=opt)
    if "device" in parts:
        attempt("compute", lambda: Acceleration.from_config(cfg, parts["device"]))
    return parts


def make_plan(cfg: DictConfig, device: torch.device | None = None) -> RunPlan:
    """The plan of ``cfg``, after one sweep that names every bad value (:class:`ConfigError`); creates nothing.
    ``device``: use this device instead of resolving ``cfg.device``."""
    problems = config_problems(cfg)
    parts = _settings(cfg, device, problems, typed=not problems)
    if problems:
        raise ConfigError(problems)
    (spec, switches), (size, note), env, replay = parts["generation"], parts["size"], parts["env"], parts["replay"]
    if spec.name != "dreamerv3":  # one size per earlier generation; size presets only shrink it
        size, note = f"{spec.name} preset" + ("" if cfg.model.size == "auto" else f" with size={cfg.model.size}"), None
    noise = (cfg.get("algo") or {}).get("expl_noise", spec.expl_noise)
    # what a resumed run must share with the run it continues (JSON-able): what shapes the networks (env,
    # resolved model, generation), the replay rows and the windows the checkpoint was trained on
    identity = dict(env=dict(env), model=dataclasses.asdict(parts["model"]), generation=spec.name,
                    batch_size=replay.batch_size, batch_length=replay.batch_length,
                    replay_context=replay.slice_len - replay.batch_length)
    return RunPlan(seed=int(cfg.seed), threads=int(cfg.threads or 0), device=parts["device"], model_size=size,
                   size_note=note, model=parts["model"], generation=dataclasses.replace(spec, expl_noise=float(noise)),
                   switches=MappingProxyType(dict(switches)), losses=parts["losses"], replay=replay,
                   collection=parts["collection"], compute=parts["compute"], loop=parts["loop"], env=env,
                   env_name=str(env.get("name", "custom")), logdir=parts["logdir"], resume=cfg.resume or None,
                   identity=MappingProxyType(json.loads(json.dumps(identity, default=str))), hparams=parts["hparams"])


def as_plan(plan_or_cfg: RunPlan | DictConfig, device: torch.device | None = None) -> RunPlan:
    """``plan_or_cfg`` itself when it is a plan, else the plan of that config (for callers that hold one)."""
    return plan_or_cfg if isinstance(plan_or_cfg, RunPlan) else make_plan(plan_or_cfg, device)
