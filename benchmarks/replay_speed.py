"""Time what the replay costs the learner per update: sampling (with and without prefetch) and write-back.

A replay of ``--rows`` env steps (64x64x3 uint8 images plus the V3 latents and flags of a size1m model)
is filled once; then ``--updates`` updates run, each: ``sample`` a batch of 16 windows of 65 rows, move
it to the device (pinned + ``non_blocking`` on CUDA), a stand-in for the learner update that takes
``--update-ms`` and releases the GIL (``time.sleep``, as CUDA work does), and the latent write-back.
Reported per update (medians): the time the loop waits in ``sample`` (what prefetch hides), the
write-back time, and ``overhead_ms``, the whole iteration minus the stand-in update: what the replay
costs the loop, including the wait for the GIL while a prefetch thread samples; and the same for the
replay this project had before (one 2-D storage, uniform ``SliceSampler``, ``storage.set`` write-back)
as ``old``. ``--writer`` adds a thread that keeps writing collector batches,
as in parallel collection.

    python benchmarks/replay_speed.py --rows 20000 --updates 40
    python benchmarks/replay_speed.py --rows 20000 --updates 40 --envs 4 --writer
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers import SliceSampler

from torchrl_dreamerv3.replay.buffer import make_stream_replay

BATCH, LENGTH = 16, 65


def collector_batch(envs: int, steps: int, t0: int) -> TensorDict:
    return TensorDict({
        "image": torch.randint(0, 255, (envs, steps, 3, 64, 64), dtype=torch.uint8),
        "action": torch.zeros(envs, steps, 6), "deter": torch.zeros(envs, steps, 512),
        "stoch": torch.zeros(envs, steps, 32, 4), "is_first": torch.zeros(envs, steps, 1, dtype=torch.bool),
        "is_last": torch.zeros(envs, steps, 1, dtype=torch.bool),
        "is_terminal": torch.zeros(envs, steps, 1, dtype=torch.bool), ("next", "reward"): torch.zeros(envs, steps, 1),
        ("collector", "traj_ids"): torch.arange(envs)[:, None].expand(envs, steps).clone(),
        "step": torch.arange(t0, t0 + steps).expand(envs, steps).clone(),
    }, [envs, steps])


def old_replay(rows: int) -> TensorDictReplayBuffer:
    sampler = SliceSampler(slice_len=LENGTH, traj_key=("collector", "traj_ids"), strict_length=True)
    return TensorDictReplayBuffer(storage=LazyTensorStorage(rows, ndim=2), sampler=sampler,
                                  batch_size=BATCH * LENGTH)


def fill(replay, envs: int, rows: int, old: bool) -> int:
    t = 0
    while t * envs < rows:
        batch = collector_batch(envs, 1000, t)
        replay.extend(batch)
        t += 1000
    return t


def time_updates(replay, args, device, old: bool) -> dict:
    latents = TensorDict({"deter": torch.ones(BATCH, LENGTH - 1, 512),
                          "stoch": torch.ones(BATCH, LENGTH - 1, 32, 4)}, [BATCH, LENGTH - 1])
    waits, backs, totals = [], [], []
    for _ in range(args.updates):
        start = first = time.perf_counter()
        window, info = replay.sample(return_info=True)
        window = window.reshape(BATCH, -1).to(device, non_blocking=True)
        waits.append(time.perf_counter() - start)
        time.sleep(args.update_ms / 1000)  # the update: GIL released, as while CUDA kernels run
        start = time.perf_counter()
        if old:
            index = tuple(i.reshape(BATCH, -1)[:, 1:].reshape(-1) for i in info["index"])
            replay.storage.set(index, latents.reshape(-1), set_cursor=False)
        else:
            replay.write_back(info, latents)
        backs.append(time.perf_counter() - start)
        totals.append(time.perf_counter() - first - args.update_ms / 1000)
    skip = min(3, args.updates - 1)  # the first samples build caches / start the prefetch thread
    return {key: 1000 * statistics.median(values[skip:])
            for key, values in (("sample_ms", waits), ("write_back_ms", backs), ("overhead_ms", totals))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="replay env steps, summed over envs")
    parser.add_argument("--envs", type=int, default=1)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--update-ms", type=float, default=30.0, help="stand-in update time")
    parser.add_argument("--writer", action="store_true", help="a thread keeps writing 16-step batches")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    setups = [("old", None), ("prefetch=0", 0), ("prefetch=1", 1), ("prefetch=2", 2)]
    for name, prefetch in setups:
        old = prefetch is None
        replay = old_replay(args.rows) if old else make_stream_replay(
            capacity=args.rows, streams=args.envs, slice_len=LENGTH, batch_size=BATCH, prefetch=prefetch,
            pin_memory=cuda)
        t = fill(replay, args.envs, args.rows, old)
        stop = threading.Event()

        def write(t=t):
            while not stop.is_set():
                batch = collector_batch(args.envs, 16, t)
                replay.extend(batch)
                t += 16
                time.sleep(0.002)

        writer = threading.Thread(target=write, daemon=True)
        if args.writer:
            writer.start()
        result = time_updates(replay, args, device, old)
        stop.set()
        if args.writer:
            writer.join()
        print(f"{name:11s} rows={args.rows} envs={args.envs} device={device.type} writer={args.writer} "
              + " ".join(f"{k}={v:.2f}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
