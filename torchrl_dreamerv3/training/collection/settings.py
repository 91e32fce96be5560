"""The collection's part of the run plan: one frozen value read from the config once."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = ["CollectionSettings", "use_parallel"]


def use_parallel(setting, device) -> bool:
    """``run.async_collect``: ``auto`` (parallel on CUDA), ``true`` or ``false``."""
    if setting == "auto":
        return device.type == "cuda"
    if setting in (True, False):
        return setting
    raise ValueError(f"run.async_collect must be auto, true or false, got {setting!r}")


@dataclass(frozen=True)
class CollectionSettings:
    """How env steps come in: ``envs`` streams of ``steps_per_collect`` steps a batch from a ``collector``
    (``sync``, ``multisync`` or ``ray`` with ``ray_workers``), ``steps`` in all (stream ``i`` seeded
    ``seed + i``), at ``train_ratio`` trained steps per env step after ``prefill`` random ones; ``parallel``:
    in a thread beside the learner at most ``max_ahead`` env steps ahead (``async_collect`` as written)."""

    collector: str
    envs: int
    steps_per_collect: int
    steps: int
    train_ratio: float
    seed: int = 0
    prefill: int = 0
    parallel: bool = False
    async_collect: object = "auto"
    max_ahead: int = 1
    ray_workers: int = 1
    ray_address: str | None = None

    @property
    def per_batch(self) -> int:
        """Env steps of one collected batch (summed over the streams)."""
        return self.envs * self.steps_per_collect

    @classmethod
    def from_config(cls, cfg: DictConfig, device: torch.device) -> "CollectionSettings":
        run = cfg.run
        per_batch = run.envs * run.steps_per_collect
        updates_per_step = run.train_ratio / (cfg.batch_size * cfg.batch_length)
        # auto: 4 collected batches (at least 2 updates' worth), so that the acting policy lags the learner by
        # the same few batches on a 10k-step CartPole run as on Atari
        max_ahead = run.get("max_ahead", "auto")
        max_ahead = max(4 * per_batch, math.ceil(2 / updates_per_step)) if max_ahead == "auto" else int(max_ahead)
        async_collect = run.get("async_collect", "auto")
        if use_parallel(async_collect, device) and max_ahead < 1 / updates_per_step:
            raise ValueError(f"run.max_ahead={max_ahead} env steps is less than one update's worth "
                             f"({1 / updates_per_step:g} env steps at this train ratio); the collector would wait forever")
        return cls(collector=run.collector, envs=int(run.envs), steps_per_collect=int(run.steps_per_collect),
                   steps=int(run.steps), train_ratio=run.train_ratio, seed=int(cfg.seed),
                   prefill=int(run.get("prefill", 0)), parallel=use_parallel(async_collect, device),
                   async_collect=async_collect, max_ahead=max_ahead,
                   ray_workers=int(OmegaConf.select(cfg, "run.ray.workers", default=1)),
                   ray_address=OmegaConf.select(cfg, "run.ray.address", default=None))
