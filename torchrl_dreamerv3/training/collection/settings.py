"""The collection's part of the run plan: one frozen value, read from the config once by the plan."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CollectionSettings"]


@dataclass(frozen=True)
class CollectionSettings:
    """How env steps come in: ``envs`` streams of ``steps_per_collect`` steps a batch (``per_batch`` env steps)
    from a ``collector`` (``sync``, ``multisync`` or ``ray`` with ``ray_workers``), ``steps`` in all (stream
    ``i`` seeded ``seed + i``), at ``train_ratio`` trained steps per env step after ``prefill`` random ones;
    ``parallel``: in a thread beside the learner, at most ``max_ahead`` env steps ahead (``async_collect``
    as written)."""

    collector: str
    envs: int
    steps_per_collect: int
    per_batch: int
    steps: int
    train_ratio: float
    seed: int = 0
    prefill: int = 0
    parallel: bool = False
    async_collect: object = "auto"
    max_ahead: int = 1
    ray_workers: int = 1
    ray_address: str | None = None
