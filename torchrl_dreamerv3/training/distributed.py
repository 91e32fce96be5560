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

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from tensordict import TensorDict, TensorDictBase

from ..objectives.actor_loss import ReturnNormalizer

__all__ = [
    "DistContext", "init_distributed", "shutdown_distributed", "is_main_process", "rank_seed",
    "GradSync", "GatheredReturnNormalizer", "all_gather_flat", "DataParallel", "fingerprint", "global_mean",
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


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _buckets(tensors: list[torch.Tensor], bucket_bytes: int) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (dtype, device), each group cut into buckets of about ``bucket_bytes``."""
    groups: dict[tuple, list[list[int]]] = {}
    sizes: dict[tuple, int] = {}
    for i, t in enumerate(tensors):
        key = (t.dtype, t.device)
        nbytes = t.numel() * t.element_size()
        if key not in groups or sizes[key] + nbytes > bucket_bytes:
            groups.setdefault(key, []).append([])
            sizes[key] = 0
        groups[key][-1].append(i)
        sizes[key] += nbytes
    return [bucket for buckets in groups.values() for bucket in buckets]


class GradSync:
    """Averages the ``.grad`` of ``params`` over all ranks: call it after backward, before ``optimizer.step()``.

    Gradients are flattened into buckets of ``bucket_mb`` (one all-reduce each) and written back as
    ``sum / world_size``; all ranks receive the same bytes. A parameter without a gradient stays
    without one (LaProp then skips it, as in one process); on the first call the ranks check that
    the same parameters have gradients, since a mismatch would otherwise pair up the wrong buckets.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], bucket_mb: float = 25.0, group=None):
        self.params = [p for p in params if p.requires_grad]
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.group = group
        self._checked = False

    def __call__(self) -> None:
        world = _world()
        if world == 1:
            return
        owners = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not self._checked:
            seen = [None] * world
            dist.all_gather_object(seen, owners, group=self.group)
            if any(s != owners for s in seen):
                raise RuntimeError("GradSync: the ranks have gradients for different parameters "
                                   f"({[len(s) for s in seen]} of {len(self.params)}); every rank must run the same losses")
            self._checked = True
        grads = [self.params[i].grad for i in owners]
        for bucket in _buckets(grads, self.bucket_bytes):
            parts = [grads[i] for i in bucket]
            flat = torch.cat([g.reshape(-1) for g in parts])
            dist.all_reduce(flat, group=self.group)
            flat.div_(world)
            torch._foreach_copy_(parts, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in parts]), parts)])


def all_gather_flat(x: torch.Tensor, group=None) -> torch.Tensor:
    """Every rank's ``x`` flattened and concatenated in rank order (equal sizes on every rank)."""
    world = _world()
    if world == 1:
        return x.reshape(-1)
    x = x.detach().reshape(-1).contiguous()
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x, group=group)
    return torch.cat(out)


class GatheredReturnNormalizer(ReturnNormalizer):
    """A :class:`ReturnNormalizer` whose percentiles are taken over the returns of all ranks.

    Same buffers (``lo``, ``hi``) and state-dict keys as the normaliser it replaces, so checkpoints of
    single- and multi-rank runs load into each other. The percentile of the gathered returns is the
    percentile of the global batch (sorting ignores the order), as the reference's all-gather gives.
    """

    def __init__(self, base: ReturnNormalizer, gather: Callable[[torch.Tensor], torch.Tensor] = all_gather_flat):
        super().__init__(base.rate, base.limit, base.perclo, base.perchi)
        self.lo, self.hi = base.lo, base.hi
        self.gather = gather

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        super().update(self.gather(returns))


def global_mean(x: torch.Tensor, group=None) -> torch.Tensor:
    """``mean(x)`` over all ranks' equal shards as the value, with the gradient of the local ``mean(x)``.

    After :class:`GradSync` averages the gradients this is the exact gradient of a nonlinearity of the
    global batch mean, e.g. V1/V2's free nats ``max(mean KL, free)``: feed it to the clamp instead of
    ``x.mean()``. Single process: ``x.mean()``.
    """
    local = x.mean()
    if _world() == 1:
        return local
    total = local.detach().clone()
    dist.all_reduce(total, group=group)
    return local + (total / _world() - local.detach())


def fingerprint(*states) -> str:
    """SHA-1 of the bytes of every tensor (and the repr of every other leaf) in ``states``, in order.

    ``states``: modules, state dicts (nested dicts/lists, e.g. an optimiser's) or tensors. Equal
    fingerprints on two ranks mean bitwise-equal state.
    """
    digest = hashlib.sha1()

    def visit(obj):
        if isinstance(obj, torch.nn.Module):
            obj = obj.state_dict()
        if isinstance(obj, torch.Tensor):
            digest.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for key in sorted(obj, key=repr):
                digest.update(repr(key).encode())
                visit(obj[key])
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        else:
            digest.update(repr(obj).encode())

    for state in states:
        visit(state)
    return digest.hexdigest()


class DataParallel:
    """The data-parallel glue of a training loop: attach a learner, agree on counts, reduce metrics.

    Examples:
        >>> from torchrl_dreamerv3.training.distributed import DataParallel, init_distributed
        >>> dp = DataParallel(init_distributed())  # a plain run: one rank, every method is a no-op
        >>> dp.is_main, dp.world_size, dp.env_seed(7), dp.global_sum(5), dp.any(False), dp.all(True)
        (True, 1, 7, 5, False, True)
    """

    def __init__(self, ctx: DistContext | None = None):
        self.ctx = ctx or DistContext()

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

    def global_sum(self, value: int | float) -> int | float:
        """``value`` summed over the ranks (e.g. env steps, for the train ratio over the global step count)."""
        if not self.ctx.enabled:
            return value
        t = torch.tensor(float(value), dtype=torch.float64)
        dist.all_reduce(t)
        return type(value)(t.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any: a stop request reaches all ranks at the same update."""
        if not self.ctx.enabled:
            return bool(flag)
        t = torch.tensor(1 if flag else 0, dtype=torch.int64)
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
        flat = torch.stack([metrics.get(k).detach().float().reshape(()).cpu() for k in keys])
        dist.all_reduce(flat)
        flat /= self.world_size
        return TensorDict({k: v for k, v in zip(keys, flat.unbind(0))}, batch_size=[])

    def in_sync(self, *states) -> bool:
        """Whether ``states`` (see :func:`fingerprint`) are bitwise equal on every rank."""
        if not self.ctx.enabled:
            return True
        seen = [None] * self.world_size
        dist.all_gather_object(seen, fingerprint(*states))
        return len(set(seen)) == 1


def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Overwrites every parameter and buffer of ``module`` (slow critic and normaliser included) with ``src``'s."""
    if not dist.is_initialized():
        return
    seen = set()
    with torch.no_grad():
        for tensor in module.state_dict().values():
            key = (tensor.data_ptr(), tensor.numel(), tensor.dtype)
            if key not in seen:  # shared modules (the losses hold the agent's) appear more than once
                seen.add(key)
                dist.broadcast(tensor, src)


def _warn_batch_mean_clamp(learner) -> None:
    """V1/V2's ``free_avg`` clamps the batch mean of the KL: per rank that is a different loss."""
    wm = learner.world_model_loss
    if getattr(wm, "kl", "dyn_rep") != "dyn_rep" and getattr(wm, "free_avg", False) and wm.free_nats > 0:
        warnings.warn(f"kl={wm.kl!r} with free_avg=True clamps the KL's batch mean at free_nats={wm.free_nats}: "
                      "under data parallelism each rank clamps its own shard's mean, which differs from one "
                      "device's loss when the shard means fall on different sides of the clamp (use "
                      "training.distributed.global_mean in the clamp for the exact loss)", stacklevel=3)
