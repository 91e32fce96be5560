"""Main-job throughput with collection in step with learning (sync) or beside it in a thread (parallel).

    python benchmarks/collect_speed.py                       # CartPole (vector) and cartpole_pixels, both modes
    python benchmarks/collect_speed.py --presets cartpole --steps 4000

Each run is ``examples/dreamerv3_atari.py`` with the same preset, model, batch and train ratio, once with
``run.async_collect=false`` and once with ``true``. Printed per run: env steps/s and updates/s over the whole
run (start-up included), and the updates actually run per env step against what ``run.train_ratio`` asks
for (the reference's count: ``(env steps - first training step) * ratio / (B * T)``, plus the first update).
A third run per preset, sync with ``run.train_ratio=0.001`` (one update), times collection alone; the
training time is then ``sync wall - collect wall``, and the parallel mode's ideal is ``max(collect, train)``
instead of their sum (``wall / ideal`` in the table; 1.0 is perfect overlap).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["size=debug", "batch_size=8", "batch_length=16", "run.log_every=30", "run.report_every=1000000",
          "run.eval_every=0", "threads=1", "replay.size=100000", "device=cpu"]
STOPPED = re.compile(r"stopped at (\d+) env steps, (\d+) updates")


def run(preset: str, mode: bool, steps: int, ratio: float) -> dict:
    with tempfile.TemporaryDirectory() as logdir:
        cmd = [sys.executable, str(ROOT / "examples" / "dreamerv3_atari.py"), f"env={preset}", *COMMON,
               f"run.steps={steps}", f"run.train_ratio={ratio}", f"run.async_collect={str(mode).lower()}",
               f"logdir={logdir}"]
        start = time.time()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - start
    found = STOPPED.search(out.stdout)
    if out.returncode or not found:
        raise RuntimeError(f"{preset} async={mode} failed:\n{out.stderr[-2000:]}")
    env_steps, updates = map(int, found.groups())
    first = 8 * 16  # training starts once the replay holds one batch of windows (B x T rows)
    owed = 1 + (env_steps - first) * ratio / (8 * 16)
    return dict(preset=preset, parallel=mode, env_steps=env_steps, updates=updates, wall=wall,
                sps=env_steps / wall, ups=updates / wall, held=updates / owed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["cartpole", "cartpole_pixels"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--ratio", type=float, default=64.0)
    args = parser.parse_args()
    print("| preset | collection | env steps | updates | wall s | env steps/s | updates/s | updates / owed | "
          "wall / ideal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        collect = run(preset, False, args.steps, 0.001)["wall"]
        print(f"| {preset} | collection only | {args.steps} | 1 | {collect:.1f} | {args.steps / collect:.1f} | - | "
              f"- | - |", flush=True)
        sync = None
        for mode in (False, True):
            r = run(preset, mode, args.steps, args.ratio)
            sync = sync or r["wall"]
            ideal = sync if not mode else max(collect, sync - collect)  # sum when sync, max when overlapped
            print(f"| {preset} | {'parallel' if mode else 'sync'} | {r['env_steps']} | {r['updates']} | "
                  f"{r['wall']:.1f} | {r['sps']:.1f} | {r['ups']:.2f} | {r['held']:.3f} | {r['wall'] / ideal:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
