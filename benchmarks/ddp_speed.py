"""Data-parallel learner throughput: N gloo ranks x 1 thread against 1 process x 1 thread, equal per-rank batch.

Each rank runs ``DreamerV3Learner.update`` on its own synthetic replay window ``(B, T + 1)`` with the
gradient all-reduce and the all-gathered return percentiles of ``training/compute/distributed.py``
(communication included). Throughput = trained transitions per second = ranks * B * T * updates / wall
time, timed between two barriers after ``--warmup`` updates. The last line is ``scaling: X.XX``
(N-rank throughput over 1-rank throughput; ideal N), and the scaling the all-reduce alone would allow
(``N * t_update / (t_update + t_allreduce)``). The ranks meet at a barrier before each all-reduce, so the time
spent waiting for a slower rank (a busy machine) is reported apart from the all-reduce itself, and rank 0's
CPU time per update next to its wall time: on a busy machine the wall time grows, the CPU time should not.

    python benchmarks/ddp_speed.py --size size1m --obs vector17 --batch-size 16 --batch-length 64 --updates 5 --repeats 3
    python benchmarks/ddp_speed.py --size size12m --obs image64 --updates 3    # bigger all-reduce

Run it on a quiet machine: each rank needs a core of its own (``--ranks`` cores in all).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchrl.data import OneHot

from torchrl_dreamerv3.modules import make_dreamerv3
from torchrl_dreamerv3.training import DreamerV3Learner
from torchrl_dreamerv3.training.compute.distributed import DataParallel, init_distributed, shutdown_distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learner_speed import OBS_KEY, make_window  # noqa: E402
from torchrl_builtin import OBS  # noqa: E402


def _shapes(obs: str) -> dict:
    shape = OBS[obs]
    return {OBS_KEY[obs]: shape if isinstance(shape, tuple) else (shape,)}


def run_rank(rank: int, world: int, port: int, args, out: dict | None) -> dict:
    """Times ``args.updates`` updates on this rank; rank 0 returns the wall time and the sync share."""
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        torch.manual_seed(rank)
        shapes = _shapes(args.obs)
        agent = make_dreamerv3(shapes, OneHot(6), args.size)
        learner = DataParallel(ctx).attach(DreamerV3Learner(agent))
        window = make_window(agent, shapes, args.batch_size, args.batch_length, "cpu")
        sync_time = [0.0, 0.0]  # waiting for the slower rank, then the all-reduce itself
        if learner.grad_sync is not None:
            sync = learner.grad_sync

            def timed_sync():
                start = time.perf_counter()
                dist.barrier()
                mid = time.perf_counter()
                sync()
                sync_time[0] += mid - start
                sync_time[1] += time.perf_counter() - mid
            learner.grad_sync = timed_sync
        for _ in range(args.warmup):
            learner.update(window.clone())
        if world > 1:
            dist.barrier()
        sync_time[:] = [0.0, 0.0]
        cpu_start, start = time.process_time(), time.perf_counter()
        for _ in range(args.updates):
            learner.update(window.clone())
        if world > 1:
            dist.barrier()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        result = dict(wall=wall, cpu=cpu, wait=sync_time[0], sync=sync_time[1], params=agent.parameter_counts()["total"])
        if out is not None and rank == 0:
            out.update(result)
        return result
    finally:
        shutdown_distributed()


def throughput(world: int, args) -> dict:
    if world == 1:
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            os.environ.pop(name, None)
        result = run_rank(0, 1, 0, args, None)
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with mp.Manager() as manager:
            out = manager.dict()
            mp.spawn(run_rank, args=(world, port, args, out), nprocs=world, join=True)
            result = dict(out)
    transitions = world * args.batch_size * args.batch_length * args.updates
    result.update(world=world, tps=transitions / result["wall"])
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="size1m")
    parser.add_argument("--obs", default="vector17", choices=sorted(OBS_KEY))
    parser.add_argument("--batch-size", type=int, default=16, help="per rank")
    parser.add_argument("--batch-length", type=int, default=64)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="alternate 1-rank and N-rank runs; keep each one's fastest")
    args = parser.parse_args(argv)
    print(f"size={args.size} obs={args.obs} per-rank batch {args.batch_size}x{args.batch_length}, "
          f"{args.updates} timed updates after {args.warmup}; load average {os.getloadavg()[0]:.2f}")
    runs = [[throughput(world, args) for world in (1, args.ranks)] for _ in range(args.repeats)]
    results = [min((run[i] for run in runs), key=lambda r: r["wall"]) for i in range(2)]
    for r in results:
        print(f"ranks={r['world']}: {r['tps']:.0f} trained transitions/s, {r['wall'] / args.updates:.3f} s/update "
              f"(rank 0 on the CPU {r['cpu'] / args.updates:.3f} s/update); "
              f"per update: waiting for the other rank {r['wait'] / args.updates * 1e3:.1f} ms, gradient all-reduce "
              f"{r['sync'] / args.updates * 1e3:.1f} ms ({r['params']:,} parameters)")
    one, many = results
    bound = args.ranks * (one["wall"] / (one["wall"] + many["sync"]))  # the sync alone on dedicated cores
    by_cpu = args.ranks * one["cpu"] / many["cpu"]  # rank 0's work per update, all-reduce included, on a core of its own
    print(f"scaling: {many['tps'] / one['tps']:.2f} (by CPU time per update: {by_cpu:.2f}; "
          f"the all-reduce alone would allow {bound:.2f})")


if __name__ == "__main__":
    main()
