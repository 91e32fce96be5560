"""The compute floor of one learner update: its matrix products, convolutions and max-pools run alone.

One update of ``DreamerV3Learner`` (as ``benchmarks/learner_speed.py`` builds it) is run once under a
``TorchDispatchMode`` that records every call of the FLOP-heavy kernels, forward and backward, with the shapes,
strides and dtypes it got: ``mm``/``addmm``/``bmm``/``baddbmm``, ``convolution``/``convolution_backward`` and
the 2x2 max-pool with its backward. Each distinct call is then replayed alone on fresh random inputs of the same
layout and timed (median of ``--repeats``), and the medians times the call counts are summed.

That sum is what the update costs on this core if everything but those kernels took no time: no change to the
update's Python, layouts, casts or fusion gets below it, only faster kernels or fewer FLOPs. It is optimistic,
since each replayed call finds its inputs warm in the cache, which the update's calls do not. The figure to read
is what a target leaves for everything else (norms, activations, casts, losses, sampling, the optimiser), against
what everything else costs now.

Commands (run from the repository root; one thread, as the targets of ``docs/results.md`` are stated)::

    python benchmarks/update_floor.py --obs image64 --precision bf16 --host-memory keep --compile-norms --target-ms 1000
    python benchmarks/update_floor.py --obs image64 --strided --precision bf16 --host-memory keep --compile-norms --target-ms 800
    python benchmarks/update_floor.py --obs vector17 --precision bf16 --host-memory keep --target-ms 350
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learner_speed import OurLearner  # noqa: E402
from torchrl_builtin import ACTIONS, OBS  # noqa: E402

aten = torch.ops.aten
HEAVY = {  # kernel -> group
    aten.mm.default: "matrix products", aten.addmm.default: "matrix products",
    aten.bmm.default: "matrix products", aten.baddbmm.default: "matrix products",
    aten.convolution.default: "convolutions", aten.convolution_backward.default: "convolutions",
    aten.max_pool2d_with_indices.default: "max-pools", aten.max_pool2d_with_indices_backward.default: "max-pools",
}


# ---------------------------------------------------------------- recording
class _TensorSpec(tuple):
    """``(shape, stride, dtype)`` of a tensor argument: what its replay is built from."""


def _spec(value):
    if isinstance(value, torch.Tensor):
        return _TensorSpec((tuple(value.shape), tuple(value.stride()), value.dtype))
    if isinstance(value, (list, tuple)):
        return tuple(_spec(v) for v in value)  # hashable; aten takes tuples where it takes lists
    return value


class HeavyCalls(TorchDispatchMode):
    """Counts the calls of the :data:`HEAVY` kernels by ``(kernel, argument specs)``; runs every op unchanged."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()
        self.other_calls = 0  # every other kernel call, views and copies included

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HEAVY:
            self.calls[(func, _spec(tuple(args)), tuple(sorted((k, _spec(v)) for k, v in kwargs.items())))] += 1
        else:
            self.other_calls += 1
        return func(*args, **kwargs)


def record(fn) -> tuple[Counter, int]:
    """The heavy calls made by ``fn()`` (its backward included) and the number of its other kernel calls."""
    with HeavyCalls() as heavy:
        fn()
    return heavy.calls, heavy.other_calls


# ---------------------------------------------------------------- replaying
def _tensor(spec: _TensorSpec) -> torch.Tensor:
    shape, stride, dtype = spec
    out = torch.empty_strided(shape, stride, dtype=dtype)
    return out.normal_() if dtype.is_floating_point else out.zero_()


def _build(value):
    if isinstance(value, _TensorSpec):
        return _tensor(value)
    if isinstance(value, tuple):
        return tuple(_build(v) for v in value)
    return value


def _arguments(func, args: tuple, kwargs: tuple) -> tuple[tuple, dict]:
    args, kwargs = _build(args), {k: _build(v) for k, v in kwargs}
    if func is aten.max_pool2d_with_indices_backward.default:
        # indices that point into their windows, as the forward makes them (zeros would all hit one element)
        like, kernel, stride, padding, dilation, ceil = args[1:7]
        args = (*args[:7], aten.max_pool2d_with_indices(like.normal_(), kernel, stride, padding, dilation, ceil)[1])
    return args, kwargs


def replay(calls: Counter, repeats: int = 5) -> list[tuple[str, str, int, float, float]]:
    """``(group, kernel, calls, ms, flops)`` per distinct call: the median of ``repeats`` runs alone and the FLOPs
    of PyTorch's counter (none for the max-pools), each times its count."""
    rows = []
    for (func, args, kwargs), count in calls.items():
        built_args, built_kwargs = _arguments(func, args, kwargs)
        out = func(*built_args, **built_kwargs)  # first touch of the output's pages, kernel selection
        formula = flop_registry.get(func._overloadpacket)
        flops = formula(*built_args, **built_kwargs, out_val=out) if formula is not None else 0
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            func(*built_args, **built_kwargs)
            times.append(time.perf_counter() - start)
        rows.append((HEAVY[func], func.__name__, count, statistics.median(times) * 1e3 * count, flops * count))
    return rows


def by_group(rows) -> dict[str, tuple[int, float, float]]:
    """``group -> (calls, ms, flops)``, largest time first."""
    groups: dict[str, list] = {}
    for group, _, count, ms, flops in rows:
        entry = groups.setdefault(group, [0, 0.0, 0.0])
        entry[0] += count
        entry[1] += ms
        entry[2] += flops
    return dict(sorted(((g, tuple(v)) for g, v in groups.items()), key=lambda item: -item[1][1]))


# ---------------------------------------------------------------- the update
def _eager_norms(learner: OurLearner) -> None:
    """Compiled channel norms off for the recording, which then sees eager kernels only; the norms call no heavy
    kernel, so the recorded calls are those of the compiled update too."""
    from torchrl_dreamerv3.nets.layers import ChannelRMSNorm

    for module in learner.agent.modules():
        if isinstance(module, ChannelRMSNorm):
            module.compiled_min_numel = None


def measure(args) -> dict:
    learner = OurLearner(args)
    for _ in range(args.warmup):
        learner.update()
    times = []
    for _ in range(args.updates):
        start = time.perf_counter()
        learner.update()
        times.append(time.perf_counter() - start)
    _eager_norms(learner)
    calls, other_calls = record(learner.update)
    return dict(description=learner.description, update_ms=statistics.median(times) * 1e3,
                rows=replay(calls, args.repeats), other_calls=other_calls)


def report(result: dict, target_ms: float | None, updates: int) -> None:
    update, groups = result["update_ms"], by_group(result["rows"])
    floor = sum(ms for _, ms, _ in groups.values())
    print(result["description"])
    print(f"update, median of {updates}: {update:9.1f} ms")
    print("the heavy kernels of one update, each call run alone at its shapes (sum of medians):")
    for group, (count, ms, flops) in groups.items():
        rate = f"{flops / 1e9:6.1f} GFLOP at {flops / 1e6 / ms:4.0f} GFLOP/s" if flops else ""
        print(f"  {group:16s} {count:6d} calls {ms:9.1f} ms  {100 * ms / update:5.1f} % of the update  {rate}")
    print(f"  {'floor':16s} {'':12s} {floor:9.1f} ms  {100 * floor / update:5.1f} % of the update")
    other = result["other_calls"]
    print(f"everything else now: {update - floor:9.1f} ms in {other} other kernel calls "
          f"({1e3 * (update - floor) / max(other, 1):.1f} us per call)")
    if target_ms is not None:
        left, rest = target_ms - floor, update - floor
        verdict = (f"everything else must take at most {left:.1f} ms; it takes {rest / left:.1f}x that now"
                   if left > 0 else f"below the floor by {-left:.1f} ms")
        print(f"target {target_ms:.0f} ms: {verdict}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="size1m", help="size preset: debug, size1m, size12m, ...")
    p.add_argument("--obs", default="vector17", choices=sorted(OBS))
    p.add_argument("--action", default="disc6", choices=sorted(ACTIONS))
    p.add_argument("--strided", action="store_true", help="stride-2 encoder/decoder (model_config(strided=True))")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "f32", "bf16"])
    p.add_argument("--host-memory", default="system", choices=["keep", "system"])
    p.add_argument("--compile-norms", action="store_true", help="the main job's compiled channel norms (bf16, CPU)")
    p.add_argument("--updates", type=int, default=3, help="timed updates")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates first")
    p.add_argument("--repeats", type=int, default=5, help="runs of each distinct heavy call")
    p.add_argument("--target-ms", type=float, default=None, help="a per-update target to hold against the floor")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    # what OurLearner also reads: the CPU eager update of DreamerV3
    args.device, args.algo, args.compile, args.compile_mode = "cpu", "dreamerv3", False, "default"
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    report(measure(args), args.target_ms, args.updates)


if __name__ == "__main__":
    main()
