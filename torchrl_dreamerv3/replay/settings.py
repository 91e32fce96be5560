"""The replay's part of the run plan: one frozen value, read from the config once by the plan."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplaySettings"]


@dataclass(frozen=True)
class ReplaySettings:
    """What the run's replay is: ``size`` env steps over ``streams`` streams, windows of ``slice_len``
    (``batch_length + context``) rows, ``batch_size`` windows a batch; ``online``: fresh windows first (the
    reference's online queue); ``prefetch`` batches sampled ahead in a thread, pinned memory on CUDA,
    ``memmap``: the storage in files under the run directory."""

    size: int
    streams: int
    batch_size: int
    batch_length: int
    slice_len: int
    online: bool = True
    prefetch: int = 0
    pin_memory: bool = False
    memmap: bool = False
