"""The collectives of data-parallel training: gradient all-reduce, gathered return percentiles, state checks.

Each works in a single process too (no process group: a no-op or the local value). See
:mod:`torchrl_dreamerv3.training.compute.distributed` for why these two points need a collective and the rest does not.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist

from ...objectives.actor_loss import ReturnNormalizer

__all__ = ["GradSync", "GatheredReturnNormalizer", "all_gather_flat", "global_mean", "fingerprint", "broadcast_state"]


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
