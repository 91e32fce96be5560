"""Data-parallel training under ``torchrun``: one model on N ranks, each with its own envs and replay shard.

The reference averages the gradients of its data-parallel devices before the optimiser chain
(``pmean`` in ``embodied/jax/opt.py``), so AGC clips the global gradient, and it all-gathers the
imagined returns before the percentile normaliser (SPEC §6.2, §7). Here the same two points are
explicit collectives, with plain ``torch.distributed`` rather than ``DistributedDataParallel``:

- :class:`GradSync` averages every ``.grad`` (flat buckets, one all-reduce each) between the backward
  pass and ``optimizer.step()``. DDP would do the same sum, but it must wrap the module that is
  called, once per backward: the learner calls seven modules many times per update (the imagination
  steps, the critic with online and slow parameters swapped in, V1/V2's per-group backward passes),
  none through one wrapper. An explicit sync after backward works for every generation and costs
  only the overlap of communication with the backward pass.
- :class:`GatheredReturnNormalizer` all-gathers the returns, so every rank takes the percentiles of
  the global batch and keeps the same ``lo``/``hi``.

Everything else in the state (parameters, slow critic, optimiser moments and counts, the normaliser)
then stays bitwise equal on all ranks, because each rank applies the same update to the same state:
it is broadcast from rank 0 once (:meth:`DataParallel.attach`), and checked with :func:`fingerprint`.
"""
from __future__ import annotations

import dataclasses

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from tensordict import TensorDict, TensorDictBase

from .collectives import (
    GatheredReturnNormalizer, GradSync, all_gather_flat, broadcast_state, fingerprint, global_mean,
)

__all__ = [  # the collectives are re-exported: one import for the loop
    "DistContext", "init_distributed", "shutdown_distributed", "is_main_process", "rank_seed",
    "GradSync", "GatheredReturnNormalizer", "all_gather_flat", "DataParallel", "fingerprint", "global_mean",
    "broadcast_state", "check_supported", "join_ranks",
]

#: Env seeds of rank ``r`` start at ``seed + r * RANK_SEED_STRIDE``: far apart from the ``run.envs``
#: seeds of one rank and from the eval env's ``seed + 10_000``.
RANK_SEED_STRIDE = 100_003


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``device`` and the process group's ``backend``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (torchrun sets it)") from None


def init_distributed(device: str | torch.device | None = None, backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistContext:
    """Joins the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``).

    A plain ``python`` run (no ``WORLD_SIZE``, or 1) initialises nothing and returns a single-process
    context. ``device``: ``None``/``"auto"`` picks ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU;
    ``backend``: ``None`` picks ``nccl`` for CUDA and ``gloo`` for the CPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    if device is None or str(device) == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if world == 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device, backend=backend)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0 and in a single-process run: the rank that logs, evaluates and checkpoints."""
    return not dist.is_initialized() or dist.get_rank() == 0


def rank_seed(seed: int, rank: int) -> int:
    """The base seed of ``rank``'s envs and RNG (rank 0 keeps ``seed``, so one rank reproduces a plain run)."""
    return seed + rank * RANK_SEED_STRIDE


class DataParallel:
    """The data-parallel glue of a training loop: attach a learner, agree on counts, reduce metrics.

    Examples:
        >>> from torchrl_dreamerv3.training.compute.distributed import DataParallel, init_distributed
        >>> dp = DataParallel(init_distributed())  # a plain run: one rank, every method is a no-op
        >>> dp.is_main, dp.world_size, dp.env_seed(7), dp.global_sum(5), dp.any(False), dp.all(True)
        (True, 1, 7, 5, False, True)
    """

    def __init__(self, ctx: DistContext | None = None):
        self.ctx = ctx or DistContext()
        # NCCL reduces CUDA tensors only; gloo takes CPU ones without a copy.
        self._comm = self.ctx.device if self.ctx.backend == "nccl" else torch.device("cpu")

    @property
    def rank(self) -> int:
        return self.ctx.rank

    @property
    def world_size(self) -> int:
        return self.ctx.world_size

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def env_seed(self, seed: int) -> int:
        return rank_seed(seed, self.rank)

    def attach(self, learner, bucket_mb: float = 25.0):
        """Makes ``learner`` data-parallel in place: rank 0's state on every rank, gradient sync, global normaliser.

        Call it after building (and, on resume, after loading) the learner and before the first update.
        The learner calls ``learner.grad_sync()`` between backward and ``optimizer.step()`` when it has that
        hook; otherwise (a ``torch.optim.Optimizer`` such as LaProp) the sync runs as a step pre-hook.
        """
        if not self.ctx.enabled:
            return learner
        broadcast_state(learner)
        sync = GradSync(learner.modules_.parameters(), bucket_mb)
        if hasattr(learner, "grad_sync"):
            learner.grad_sync = sync
        elif isinstance(learner.optimizer, torch.optim.Optimizer):
            learner.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: sync())
        else:
            raise TypeError(f"DataParallel.attach: {type(learner.optimizer).__name__} has no step pre-hook and the "
                            "learner no grad_sync attribute; add the learner's grad_sync hook (docs/scaling.md)")
        actor_loss = learner.actor_loss
        if not isinstance(actor_loss.normalizer, GatheredReturnNormalizer):
            actor_loss.normalizer = GatheredReturnNormalizer(actor_loss.normalizer)
        _warn_batch_mean_clamp(learner)
        return learner

    def from_main(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.ctx.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.ctx.enabled:
            dist.barrier()

    def global_sum(self, value: int | float) -> int | float:
        """``value`` summed over the ranks (e.g. env steps, for the train ratio over the global step count)."""
        if not self.ctx.enabled:
            return value
        t = torch.tensor(float(value), dtype=torch.float64, device=self._comm)
        dist.all_reduce(t)
        return type(value)(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any: a stop request reaches all ranks at the same update."""
        if not self.ctx.enabled:
            return bool(flag)
        t = torch.tensor(1 if flag else 0, dtype=torch.int64, device=self._comm)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def all(self, flag: bool) -> bool:
        """True on every rank when it is true on all (e.g. "the replay shard is ready to train")."""
        return not self.any(not flag)

    def mean_metrics(self, metrics: TensorDictBase) -> TensorDictBase:
        """Scalar metrics averaged over the ranks (one all-reduce); every rank must call it."""
        if not self.ctx.enabled:
            return metrics
        keys = sorted(metrics.keys(True, True))
        flat = torch.stack([metrics.get(k).detach().float().reshape(()).to(self._comm) for k in keys])
        dist.all_reduce(flat)
        flat = (flat / self.world_size).cpu()
        return TensorDict({k: v for k, v in zip(keys, flat.unbind(0))}, batch_size=[])

    def in_sync(self, *states) -> bool:
        """Whether ``states`` (see :func:`fingerprint`) are bitwise equal on every rank."""
        if not self.ctx.enabled:
            return True
        seen = [None] * self.world_size
        dist.all_gather_object(seen, fingerprint(*states))
        return len(set(seen)) == 1


def check_supported(plan, world_size: int) -> None:
    """What the data-parallel path does not support yet (``plan``: a run plan), refused before anything is built."""
    if world_size == 1:
        return
    if plan.collection.async_collect is True:
        raise ValueError("run.async_collect=true is not supported under torchrun yet: every rank must collect the "
                         "same env steps per round (use run.async_collect=false or auto)")
    if plan.collection.collector == "ray":
        raise ValueError("run.collector=ray is not supported under torchrun: every rank would start its own Ray "
                         "workers; use one learner process with run.collector=ray, or torchrun with sync/multisync")
    if plan.loop.checkpoint_replay:
        raise ValueError("checkpoint.replay=true is not supported under torchrun yet (each rank's replay shard "
                         "would need saving); resume refills the replays instead")


def join_ranks(plan):
    """Joins torchrun's process group (nothing to join in a plain run) for a run ``plan``; returns ``(dp, plan)``,
    the plan on this rank's device with rank 0's ``logdir`` (``${now:...}`` resolves per process)."""
    ctx = init_distributed(plan.device)
    dp = DataParallel(ctx)
    check_supported(plan, dp.world_size)
    if not ctx.enabled:
        return dp, plan
    return dp, dataclasses.replace(plan, device=ctx.device, logdir=dp.from_main(plan.logdir))


def _warn_batch_mean_clamp(learner) -> None:
    """V1/V2's ``free_avg`` clamps the batch mean of the KL: per rank that is a different loss."""
    wm = learner.world_model_loss
    # DreamerV3's loss clamps each step (no free_avg); the V1/V2 losses may clamp the batch mean
    if getattr(wm, "free_avg", False) and wm.free_nats > 0:
        warnings.warn(f"{type(wm).__name__} with free_avg=True clamps the KL's batch mean at free_nats={wm.free_nats}: "
                      "under data parallelism each rank clamps its own shard's mean, which differs from one "
                      "device's loss when the shard means fall on different sides of the clamp (use "
                      "training.compute.distributed.global_mean in the clamp for the exact loss)", stacklevel=3)
