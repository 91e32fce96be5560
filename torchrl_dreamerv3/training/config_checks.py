"""Every setting checked (type and range) before any env is built or any directory made.

``config_problems(cfg)`` lists, for every bad setting, its name, its value and what is allowed;
``check_config(cfg)`` raises them as one :class:`ConfigError` (a ``ValueError``). The run plan
(:mod:`.plan`) adds what only resolving finds (the ``algo.*`` switches, the model preset) to the same sweep. Numbers
must be numbers (``opt.lr=abc`` fails here, not after the first 1,024 env steps); integer settings must be
integers. The ``algo.*`` switches are checked by their own registry, the env/model presets by theirs.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .persistence.checkpoint import list_checkpoints
from .reporting import BACKENDS

__all__ = ["ConfigError", "check_config", "check_resumed_model_size", "config_problems", "RULES"]

_ABSENT = object()


def _rule(kind, low=None, high=None, low_open=False, high_open=False, auto=False):
    return dict(kind=kind, low=low, high=high, low_open=low_open, high_open=high_open, auto=auto)


INT, NUM, BOOL = "an integer", "a number", "true or false"
POSITIVE = dict(low=0, low_open=True)
FRACTION = dict(low=0, high=1)

#: setting -> (type, range); a setting absent from the config is skipped.
RULES = {
    "seed": _rule(INT), "threads": _rule(INT, 0),
    "batch_size": _rule(INT, 1), "batch_length": _rule(INT, 2), "replay_context": _rule(INT, 1, 1),
    "free_nats": _rule(NUM, 0), "horizon": _rule(NUM, 1, low_open=True), "imag_length": _rule(INT, 1),
    "replay.size": _rule(INT, 1), "replay.memmap": _rule(BOOL), "replay.online": _rule(BOOL),
    "run.steps": _rule(INT, 1), "run.train_ratio": _rule(NUM, **POSITIVE), "run.envs": _rule(INT, 1),
    "run.steps_per_collect": _rule(INT, 1), "run.prefill": _rule(INT, 0), "run.log_every": _rule(NUM, 0),
    "run.report_every": _rule(NUM), "run.save_every": _rule(NUM, 0), "run.eval_every": _rule(INT, 0),
    "run.eval_eps": _rule(INT, 1), "run.max_ahead": _rule(INT, 1, auto=True), "run.estimate_after": _rule(NUM, 0),
    "run.ray.workers": _rule(INT, 1),
    "opt.lr": _rule(NUM, **POSITIVE), "opt.agc": _rule(NUM, **POSITIVE), "opt.eps": _rule(NUM, 0),
    "opt.beta1": _rule(NUM, 0, 1, high_open=True), "opt.beta2": _rule(NUM, 0, 1, high_open=True),
    "opt.warmup": _rule(INT, 0),
    "opt3.model_lr": _rule(NUM, **POSITIVE), "opt3.actor_lr": _rule(NUM, **POSITIVE),
    "opt3.critic_lr": _rule(NUM, **POSITIVE), "opt3.eps": _rule(NUM, 0), "opt3.clip": _rule(NUM, **POSITIVE),
    "opt3.weight_decay": _rule(NUM, 0),
    "retnorm.rate": _rule(NUM, 0, 1, low_open=True), "retnorm.limit": _rule(NUM, **POSITIVE),
    "retnorm.perclo": _rule(NUM, 0, 100), "retnorm.perchi": _rule(NUM, 0, 100),
    "slowvalue.rate": _rule(NUM, 0, 1, low_open=True),
    "imag_loss.lam": _rule(NUM, **FRACTION), "imag_loss.actent": _rule(NUM, 0), "imag_loss.slowreg": _rule(NUM, 0),
    "repl_loss.lam": _rule(NUM, **FRACTION),
    "checkpoint.replay": _rule(BOOL), "checkpoint.keep": _rule(INT, 1),
}
LOSS_SCALE = _rule(NUM, 0)
COLLECTORS = ("sync", "multisync", "ray")


def _kind_ok(kind: str, value) -> bool:
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == INT:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and not math.isnan(value)


def _range_text(rule) -> str:
    low = "" if rule["low"] is None else f"{'>' if rule['low_open'] else '>='} {rule['low']}"
    high = "" if rule["high"] is None else f"{'<' if rule['high_open'] else '<='} {rule['high']}"
    return " and ".join(p for p in (low, high) if p)


def _check_value(name: str, value, rule) -> str | None:
    """What is wrong with ``value`` (None: nothing)."""
    if rule["auto"] and value == "auto":
        return None
    allowed = rule["kind"] + (f" {_range_text(rule)}" if _range_text(rule) else "") + (" or auto" if rule["auto"] else "")
    if not _kind_ok(rule["kind"], value):
        hint = f"; write {int(value)}" if rule["kind"] == INT and isinstance(value, float) and value.is_integer() else ""
        return f"{name}={value!r} ({type(value).__name__}) must be {allowed}{hint}"
    low, high = rule["low"], rule["high"]
    too_low = low is not None and (value <= low if rule["low_open"] else value < low)
    too_high = high is not None and (value >= high if rule["high_open"] else value > high)
    if too_low or too_high or (rule["kind"] == NUM and math.isinf(value)):
        return f"{name}={value!r} is out of range: it must be {allowed}"
    return None


def _check_choices(cfg: DictConfig, problems: list[str]) -> None:
    collector = OmegaConf.select(cfg, "run.collector", default=_ABSENT)
    if collector is not _ABSENT and collector not in COLLECTORS:
        problems.append(f"run.collector={collector!r} is unknown; choose one of {list(COLLECTORS)}")
    backend = OmegaConf.select(cfg, "logger.backend", default=_ABSENT)
    if backend is not _ABSENT and backend not in (*BACKENDS, "", None):
        problems.append(f"logger.backend={backend!r} is unknown; choose one of {list(BACKENDS)}")
    device = OmegaConf.select(cfg, "device", default=_ABSENT)
    if device is not _ABSENT and device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            problems.append(f"device={device!r} is not a device; use auto, cpu, cuda or cuda:<index>")


def _check_relations(cfg: DictConfig, problems: list[str]) -> None:
    get = lambda name: OmegaConf.select(cfg, name, default=None)  # noqa: E731
    lo, hi = get("retnorm.perclo"), get("retnorm.perchi")
    if lo is not None and hi is not None and lo >= hi:
        problems.append(f"retnorm.perclo={lo} must be below retnorm.perchi={hi}")
    size, batch, length = get("replay.size"), get("batch_size"), get("batch_length")
    if None not in (size, batch, length) and size < batch * (length + 1):
        problems.append(f"replay.size={size} cannot hold one batch of windows: it must be >= batch_size * "
                         f"(batch_length + 1) = {batch * (length + 1)}")
    envs = get("run.envs")
    if size is not None and envs is not None and size // envs < length + 2:
        problems.append(f"replay.size={size} over run.envs={envs} streams leaves {size // envs} rows per stream; "
                         f"a window needs batch_length + 2 = {length + 2}")


def _check_ray(cfg: DictConfig, problems: list[str]) -> None:
    """``run.collector=ray``: an address that is a string, streams that split over the workers, ray installed."""
    if OmegaConf.select(cfg, "run.collector", default=None) != "ray":
        return
    address = OmegaConf.select(cfg, "run.ray.address", default=None)
    if address is not None and not isinstance(address, str):
        problems.append(f"run.ray.address={address!r} must be null (a local Ray cluster on loopback), auto or "
                         "host:port of a cluster started with `ray start --head`")
    workers, envs = OmegaConf.select(cfg, "run.ray.workers", default=1), OmegaConf.select(cfg, "run.envs", default=1)
    if envs % workers:
        problems.append(f"run.envs={envs} streams do not split over run.ray.workers={workers}: run.envs must be a "
                         "multiple of run.ray.workers (each worker runs run.envs / run.ray.workers streams)")
    if importlib.util.find_spec("ray") is None:
        problems.append('run.collector=ray needs ray, which is not installed: pip install -e ".[distributed]"')


def _check_resume(cfg: DictConfig, problems: list[str]) -> None:
    resume = OmegaConf.select(cfg, "resume", default=None)
    if resume in (None, ""):
        return
    if not isinstance(resume, str):
        problems.append(f"resume={resume!r} must be a run directory (a path)")
    elif not Path(resume).is_dir():
        problems.append(f"resume={resume!r}: no such directory; give a run directory (or its checkpoint/ "
                        "directory) of an earlier run")
    elif not list_checkpoints(Path(resume)):
        problems.append(f"resume={resume!r} holds no checkpoint (no checkpoint/step_*/state.pt nor "
                        "checkpoint/state.pt); was the run saved?")


class ConfigError(ValueError):
    """Every bad setting of a config at once, one per line (a single one: its message alone)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        text = self.problems[0] if len(self.problems) == 1 else (
            f"{len(self.problems)} settings are bad:\n" + "\n".join(f"  {p}" for p in self.problems))
        super().__init__(text)


def config_problems(cfg: DictConfig) -> list[str]:
    """Every setting of ``cfg`` named in :data:`RULES` and ``loss_scales.*`` (type, range), the choices
    (``run.collector``, ``logger.backend``, ``device``), their relations, ``run.ray.*`` and ``resume``: what is
    wrong, one message per setting; creates nothing. Relations are checked once the values have their types."""
    problems = []
    for name, rule in RULES.items():
        value = OmegaConf.select(cfg, name, default=_ABSENT)
        if value is not _ABSENT:
            problems.append(_check_value(name, value, rule))
    scales = OmegaConf.select(cfg, "loss_scales", default=None)
    for key in scales or {}:
        problems.append(_check_value(f"loss_scales.{key}", scales[key], LOSS_SCALE))
    problems = [p for p in problems if p]
    _check_choices(cfg, problems)
    if not problems:
        _check_relations(cfg, problems)
        _check_ray(cfg, problems)
    _check_resume(cfg, problems)
    return problems


def check_config(cfg: DictConfig) -> None:
    """Raises one :class:`ConfigError` naming every problem :func:`config_problems` finds."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems)
