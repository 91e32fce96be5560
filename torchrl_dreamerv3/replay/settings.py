"""The replay's part of the run plan: one frozen value read from the config once."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

__all__ = ["ReplaySettings"]


@dataclass(frozen=True)
class ReplaySettings:
    """What the run's replay is: ``size`` env steps over ``streams`` streams, windows of ``batch_length +
    context`` rows, ``batch_size`` windows a batch; ``prefetch`` batches sampled ahead in a thread, pinned
    memory on CUDA, ``memmap``: the storage in files under the run directory."""

    size: int
    streams: int
    batch_size: int
    batch_length: int
    context: int = 1
    online: bool = True
    prefetch: int = 0
    pin_memory: bool = False
    memmap: bool = False

    @property
    def slice_len(self) -> int:
        return self.batch_length + self.context

    @classmethod
    def from_config(cls, cfg: DictConfig, cuda: bool) -> "ReplaySettings":
        """``replay.*``, ``run.envs``, ``batch_size``, ``batch_length``, ``replay_context``; ``replay.prefetch=auto``:
        1 on CUDA, 0 on CPU (the reference prefetches one batch; on CPU the thread only competes for the cores)."""
        replay = cfg.replay
        online = replay.get("online", True)
        if online not in (True, False):
            raise ValueError(f"replay.online must be true or false, got {online!r}")
        prefetch = replay.get("prefetch", "auto")
        if prefetch == "auto":
            prefetch = 1 if cuda else 0
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"replay.prefetch must be auto or a number of batches >= 0, got {prefetch!r}")
        return cls(size=int(replay.size), streams=int(cfg.run.envs), batch_size=int(cfg.batch_size),
                   batch_length=int(cfg.batch_length), context=int(cfg.replay_context), online=online,
                   prefetch=prefetch, pin_memory=cuda, memmap=bool(replay.memmap))
