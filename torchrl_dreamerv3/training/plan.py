"""The run plan: the Hydra config validated and resolved once, before anything is built.

``make_plan(cfg)`` runs one sweep: the types, ranges, choices and relations of
:mod:`.config_checks`, plus what only resolving finds (the generation's ``algo.*`` switches, the model
preset, precision and compile, the replay and collection settings). It raises one
:class:`~.config_checks.ConfigError` naming every bad value, or returns a frozen :class:`RunPlan`. The
builders (``setup.make_agent`` / ``make_learner``, ``make_replay``, ``make_collector``) and the loop read
the plan, not the config. A resumed run compares its plan's :meth:`RunPlan.identity` with the one its
checkpoint saved (:func:`check_resumed_plan`).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..agent.generations import GenerationSpec, resolve_switches
from ..agent.settings import LossSettings, frozen
from ..modules import GENERATIONS, ModelConfig, model_config
from ..replay.settings import ReplaySettings
from .collection.settings import CollectionSettings
from .compute.acceleration import Acceleration
from .config_checks import ConfigError, config_problems

__all__ = ["LoopSettings", "RunPlan", "make_plan", "as_plan", "check_resumed_plan", "resolve_device", "resolve_size"]


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

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "LoopSettings":
        run, logger = cfg.run, cfg.logger
        wandb = frozen(logger.wandb) if "wandb" in logger else None
        return cls(log_every=run.log_every, report_every=run.report_every, save_every=run.save_every,
                   eval_every=run.eval_every, eval_eps=run.eval_eps, estimate_after=run.get("estimate_after", 60),
                   checkpoint_replay=bool(cfg.checkpoint.replay), checkpoint_keep=int(cfg.checkpoint.keep),
                   logger_backend=logger.backend, wandb=wandb)


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
    hparams: Mapping = dataclasses.field(default_factory=dict)  # the whole config, resolved: logged once

    @property
    def batch_size(self) -> int:
        return self.replay.batch_size

    @property
    def batch_length(self) -> int:
        return self.replay.batch_length

    def identity(self) -> dict:
        """What a resumed run must share with the run it continues (JSON-able): what shapes the networks
        (env, resolved model, generation), the replay rows and the windows the checkpoint was trained on."""
        ident = dict(env=dict(self.env), model=dataclasses.asdict(self.model), generation=self.generation.name,
                     batch_size=self.batch_size, batch_length=self.batch_length, replay_context=self.replay.context)
        return json.loads(json.dumps(ident, default=str))


def _logdir(cfg: DictConfig) -> Path:
    if cfg.resume:  # a run dir, its checkpoint/ dir, or one checkpoint/step_* dir
        resume = Path(cfg.resume)
        if resume.name.startswith("step_"):
            resume = resume.parent
        return resume.parent if resume.name == "checkpoint" else resume
    return Path(cfg.logdir)


def _model(cfg: DictConfig, spec: GenerationSpec, size: str) -> ModelConfig:
    """The model preset with the config's ``model.*`` (null: the preset's value) on top. For V1/V2 only what
    an explicit ``size=`` or ``model.*`` sets applies (``size=auto`` keeps the authors' sizes); a Gaussian
    latent (V1) has one "class" per dimension, so a size preset's ``classes`` becomes 1."""
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "size" and v is not None}
    if isinstance(overrides.get("mults"), list):
        overrides["mults"] = tuple(overrides["mults"])
    preset = spec.model_preset
    if preset != "dreamerv3":
        if GENERATIONS[preset].get("latent") == "gaussian" and "classes" in overrides:
            overrides["classes"] = 1
        overrides["generation"] = preset
    return model_config(size, **overrides)


def _resolve(cfg: DictConfig, device: torch.device | None, problems: list[str], typed: bool) -> dict:
    """Each part of the plan; a part that fails adds its message and leaves the ones that need it out.
    ``typed``: the checked settings have their types and ranges (else the parts built from them wait)."""
    parts: dict[str, Any] = {}

    def part(name, build):
        try:
            parts[name] = build()
        except (ValueError, TypeError) as error:
            problems.append(str(error))

    part("device", lambda: device if device is not None else resolve_device(cfg.device))
    part("generation", lambda: resolve_switches(cfg.get("algo")))
    if "device" in parts:
        dev = parts["device"]
        part("size", lambda: resolve_size(cfg.model.size, dev))
        part("compute", lambda: Acceleration.from_config(cfg, dev))
    if not typed:
        return parts
    part("loop", lambda: LoopSettings.from_config(cfg))
    if "generation" in parts:
        part("losses", lambda: LossSettings.from_config(cfg, parts["generation"][0].opt_section))
    if "device" in parts:
        part("replay", lambda: ReplaySettings.from_config(cfg, parts["device"].type == "cuda"))
        part("collection", lambda: CollectionSettings.from_config(cfg, parts["device"]))
    if "size" in parts and "generation" in parts:
        part("model", lambda: _model(cfg, parts["generation"][0], parts["size"][0]))
    return parts


def make_plan(cfg: DictConfig, device: torch.device | None = None) -> RunPlan:
    """The plan of ``cfg``, after one sweep that names every bad value (:class:`ConfigError`); creates nothing.
    ``device``: use this device instead of resolving ``cfg.device`` (a torchrun rank's)."""
    problems = config_problems(cfg)
    parts = _resolve(cfg, device, problems, typed=not problems)
    if problems:
        raise ConfigError(problems)
    spec, switches = parts["generation"]
    noise = (cfg.get("algo") or {}).get("expl_noise", spec.expl_noise)
    size, note = parts["size"]
    if spec.name != "dreamerv3":  # one size per earlier generation; size presets only shrink it
        size, note = f"{spec.name} preset" + ("" if cfg.model.size == "auto" else f" with size={cfg.model.size}"), None
    env = frozen(OmegaConf.to_container(cfg.env, resolve=True))
    return RunPlan(seed=int(cfg.seed), threads=int(cfg.threads or 0), device=parts["device"], model_size=size,
                   size_note=note, model=parts["model"], generation=dataclasses.replace(spec, expl_noise=float(noise)),
                   switches=MappingProxyType(dict(switches)), losses=parts["losses"], replay=parts["replay"],
                   collection=parts["collection"], compute=parts["compute"], loop=parts["loop"], env=env,
                   env_name=str(env.get("name", "custom")), logdir=_logdir(cfg), resume=cfg.resume or None,
                   hparams=frozen(OmegaConf.to_container(cfg, resolve=True)))


def as_plan(plan_or_cfg: RunPlan | DictConfig, device: torch.device | None = None) -> RunPlan:
    """``plan_or_cfg`` itself when it is a plan, else the plan of that config (for callers that hold one)."""
    return plan_or_cfg if isinstance(plan_or_cfg, RunPlan) else make_plan(plan_or_cfg, device)


def _flat(node, prefix: str) -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}


def check_resumed_plan(plan: RunPlan, saved: dict) -> None:
    """Fails, naming each differing entry, when ``plan`` cannot continue the run whose checkpoint saved the
    identity ``saved`` (:meth:`RunPlan.identity`); a mismatch would otherwise surface as a shape error deep
    inside ``load_state_dict``, or not at all (a switch, a loss setting of the generation)."""
    now, then = _flat(plan.identity(), ""), _flat(saved, "")
    differing = [f"{k}={now.get(k)!r} (the run has {then.get(k)!r})" for k in sorted(set(now) | set(then))
                 if now.get(k) != then.get(k)]
    if differing:
        raise ValueError(
            "resume: this config cannot continue the saved run; differing settings: " + "; ".join(differing)
            + ". Pass the run's own overrides again, or start from its saved config: "
            "python examples/dreamerv3_atari.py --config-path <run dir, absolute> --config-name config resume=<run dir>")
