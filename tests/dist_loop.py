"""A minimal data-parallel loop for ``torchrun`` (the SIGINT/resume test of test_distributed.py).

Every rank trains the debug learner on its own synthetic windows; a stop request is agreed with
``DataParallel.any`` after each update; rank 0 saves; a resumed run continues the counters.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dist_workers import make_learner  # noqa: E402
from test_objectives import VEC, _window  # noqa: E402

from torchrl_dreamerv3.training.persistence.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from torchrl_dreamerv3.training.compute.distributed import (  # noqa: E402
    DataParallel, init_distributed, rank_seed, shutdown_distributed,
)
from torchrl_dreamerv3.training.collection.ratio import TrainRatio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--max-updates", type=int, required=True)
    parser.add_argument("--ready-at", type=int, default=3, help="rank 0 touches <dir>/ready after this many updates")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dp = DataParallel(init_distributed("cpu"))
    learner, ratio, counters = make_learner(seed=0), TrainRatio(1, 1, 1), dict(env_steps=0, updates=0)
    if args.resume:
        loaded = load_checkpoint(args.dir, learner=learner, ratio=ratio)
        counters.update({k: loaded[k] for k in counters})
    dp.attach(learner)
    print(f"rank {dp.rank} started at {counters['updates']} updates, step {learner.optimizer.param_groups[0]['step']}",
          flush=True)
    torch.manual_seed(rank_seed(0, dp.rank) + counters["updates"])
    agent, stop = learner.modules_, []
    signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))  # like the trainer's _StopRequest
    while counters["updates"] < args.max_updates:
        learner.update(_window(agent, VEC, B=2, T=4, seed=1000 * dp.rank + counters["updates"]))
        counters["updates"] += 1
        counters["env_steps"] = counters["updates"]  # one synthetic env step per update (names the checkpoint)
        if dp.is_main and counters["updates"] == args.ready_at:
            Path(args.dir, "ready").touch()
        if dp.any(bool(stop)):
            break
    if dp.is_main:
        save_checkpoint(args.dir, learner=learner, counters=counters, ratio=ratio)
    in_sync = dp.in_sync(learner, learner.optimizer.state_dict())  # also a barrier after the save
    print(f"rank {dp.rank} got {len(stop)} signal(s)", flush=True)
    print(f"rank {dp.rank} stopped at {counters['updates']} updates, in_sync={in_sync}", flush=True)
    shutdown_distributed()


if __name__ == "__main__":
    main()
