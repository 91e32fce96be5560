"""Main-job throughput with collection in step with learning (sync) or beside it in a thread (parallel).

    python benchmarks/collect_speed.py                       # CartPole (vector) and cartpole_pixels, both modes
    python benchmarks/collect_speed.py --presets cartpole --steps 4000
    python benchmarks/collect_speed.py --presets cartpole --collectors --envs 2   # + sync/multisync/Ray collection

Each run is ``examples/dreamerv3_atari.py`` with the same preset, model, batch and train ratio, once with
``run.async_collect=false`` and once with ``true``. Printed per run: env steps/s and updates/s over the whole
run (start-up included), and the updates actually run per env step against what ``run.train_ratio`` asks
for (the reference's count: ``(env steps - first training step) * ratio / (B * T)``, plus the first update).
A third run per preset, sync with ``run.train_ratio=0.001`` (one update), times collection alone. From the
steady rates (the median of the job's logged env steps/s, start-up excluded): acting costs ``c = 1 / rate``
per env step, training ``t = 1 / sync rate - c``, and the parallel mode's ideal rate is ``1 / max(c, t)``
instead of ``1 / (c + t)`` (``steady rate / ideal``; 1.0 is perfect overlap).
"""
from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["size=debug", "batch_size=8", "batch_length=16", "run.log_every=5", "run.report_every=1000000",
          "run.eval_every=0", "threads=1", "replay.size=100000", "device=cpu"]
STOPPED = re.compile(r"stopped at (\d+) env steps, (\d+) updates")


def run(preset: str, mode: bool, steps: int, ratio: float, extra: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as logdir:
        cmd = [sys.executable, str(ROOT / "examples" / "dreamerv3_atari.py"), f"env={preset}", *COMMON,
               f"run.steps={steps}", f"run.train_ratio={ratio}", f"run.async_collect={str(mode).lower()}",
               f"logdir={logdir}", *extra]
        start = time.time()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - start
        steady = _median_fps(Path(logdir) / "dreamerv3" / "scalars" / "perf" / "fps.csv")
    found = STOPPED.search(out.stdout)
    if out.returncode or not found:
        raise RuntimeError(f"{preset} async={mode} failed:\n{out.stderr[-2000:]}")
    env_steps, updates = map(int, found.groups())
    first = 8 * 16  # training starts once the replay holds one batch of windows (B x T rows)
    owed = 1 + (env_steps - first) * ratio / (8 * 16)
    return dict(preset=preset, parallel=mode, env_steps=env_steps, updates=updates, wall=wall,
                sps=env_steps / wall, ups=updates / wall, held=updates / owed, steady_sps=steady)


def _median_fps(path: Path) -> float:
    """Median of the env steps/s the main job logged (``perf/fps``, every ``run.log_every`` s): start-up excluded."""
    if not path.is_file():
        return float("nan")
    values = [float(line.split(",")[1]) for line in path.read_text().splitlines() if "," in line]
    values = values[1:]  # the first interval holds the start-up
    return statistics.median(values) if values else float("nan")


def compare_collectors(preset: str, steps: int, envs: int, workers: int) -> None:
    """Collection alone (one update) with ``envs`` envs: in-process (sync: a SerialEnv; multisync: one process
    per env) against ``workers`` Ray actors on a local cluster."""
    print(f"\n| {preset}, {envs} envs, collection only | wall s (start-up included) | env steps/s over the run | "
          "env steps/s, median of the logged rate |")
    print("|---|---|---|---|")
    settings = {"sync": (), "multisync": ("run.collector=multisync",),
                f"ray, {workers} workers": ("run.collector=ray", f"run.ray.workers={workers}")}
    for name, extra in settings.items():
        r = run(preset, False, steps, 0.001, (f"run.envs={envs}", *extra))
        print(f"| {name} | {r['wall']:.1f} | {r['sps']:.1f} | {r['steady_sps']:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["cartpole", "cartpole_pixels"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--ratio", type=float, default=64.0)
    parser.add_argument("--collectors", action="store_true",
                        help="also compare in-process collection with Ray workers (needs ray)")
    parser.add_argument("--envs", type=int, default=2, help="envs for --collectors")
    args = parser.parse_args()
    print("| preset | collection | env steps | updates | wall s | env steps/s (run) | env steps/s (steady) | "
          "updates/s | updates / owed | steady rate / ideal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        alone = run(preset, False, args.steps, 0.001)
        print(f"| {preset} | collection only | {alone['env_steps']} | 1 | {alone['wall']:.1f} | {alone['sps']:.1f} | "
              f"{alone['steady_sps']:.1f} | - | - | - |", flush=True)
        # seconds per env step, acting alone (a run too short for two logged rates: its whole-run rate)
        collect = 1.0 / (alone["sps"] if math.isnan(alone["steady_sps"]) else alone["steady_sps"])
        ideal = None
        for mode in (False, True):
            r = run(preset, mode, args.steps, args.ratio)
            if not mode:  # sync: acting + training per env step; the overlap's ideal is the larger of the two
                train = max(0.0, 1.0 / r["steady_sps"] - collect)
                ideal = {False: r["steady_sps"], True: 1.0 / max(collect, train)}
            print(f"| {preset} | {'parallel' if mode else 'sync'} | {r['env_steps']} | {r['updates']} | "
                  f"{r['wall']:.1f} | {r['sps']:.1f} | {r['steady_sps']:.1f} | {r['ups']:.2f} | {r['held']:.3f} | "
                  f"{r['steady_sps'] / ideal[mode]:.2f} |", flush=True)
    if args.collectors:
        compare_collectors(args.presets[0], args.steps, args.envs, workers=args.envs)


if __name__ == "__main__":
    main()
