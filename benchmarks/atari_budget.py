"""Budget probe: how fast the main job acts and trains on the Atari 100k preset on this machine.

    python benchmarks/atari_budget.py --size debug size1m --seconds 210
    python benchmarks/atari_budget.py --size size1m --seconds 210 -- batch_size=8 batch_length=32

Each probe runs ``examples/dreamerv3_atari.py env=atari100k`` with ``threads=<threads>`` for ``--seconds``
(then SIGTERM: the main job saves and exits) and logs ``perf/fps`` and ``perf/ups`` every 20 s. Two probes
per setting: an *acting* probe (``run.train_ratio=1``: about one update per 1,000 steps, so it measures
env + policy) gives the seconds per env step ``t_step``; the *training* probe at the chosen train ratio
gives steady env steps/s ``fps`` and updates/s ``ups`` (the first interval, with the pre-training fill,
is left out), from which ``t_update = (1 - fps * t_step) / ups``. Then a run of ``S`` env steps with ``U``
updates costs ``S * t_step + U * t_update`` seconds.

On a shared machine the wall-clock rates depend on the load, so each probe also reads the main job's CPU
seconds (``/proc/<pid>/stat``) over the same steady window: ``share = CPU s / wall s`` is the part of a core
it got, and
``t_step_core = t_step * share_acting`` and ``t_update_core = (share_training - fps * t_step_core) / ups``
(CPU seconds per step and per update) estimate one uncontended core.
The load average is printed with each probe.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _read(path: Path) -> list[tuple[float, float]]:
    if not path.is_file():
        return []
    return [tuple(map(float, line.split(","))) for line in path.read_text().split() if line]


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a running process (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe(logdir: Path, seconds: float, overrides: list[str], threads: int) -> dict:
    """Runs the main job for ``seconds``; returns its steady fps / ups (the perf intervals after the first)
    and ``share``, its CPU seconds per wall second over the same window."""
    cmd = [sys.executable, str(ROOT / "examples" / "dreamerv3_atari.py"), "env=atari100k", f"threads={threads}",
           f"logdir={logdir}", "run.log_every=20", "run.eval_every=0", "run.report_every=100000",
           "run.save_every=100000", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    load_start = _load()
    logdir.mkdir(parents=True, exist_ok=True)
    perf = logdir / "dreamerv3" / "scalars" / "perf"
    marks = []  # (wall, cpu) at each new perf line: the steady window runs from the first to the last
    with open(logdir / "probe_stdout.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + seconds
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if len(_read(perf / "ups.csv")) > len(marks):
                try:
                    marks.append((time.time(), _cpu_seconds(proc.pid)))
                except (FileNotFoundError, ProcessLookupError):  # it just exited
                    break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    share = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]) if len(marks) > 1 else float("nan")
    fps, ups = _read(perf / "fps.csv")[1:], _read(perf / "ups.csv")[1:]
    mean = (lambda xs: sum(v for _, v in xs) / len(xs) if xs else float("nan"))
    stopped = re.findall(r"stopped at (\d+) env steps, (\d+) updates", (logdir / "probe_stdout.log").read_text())
    steps, updates = map(int, stopped[-1]) if stopped else (0, 0)
    return {"fps": mean(fps), "ups": mean(ups), "intervals": len(fps), "load": f"{load_start} -> {_load()}",
            "share": share, "steps": steps, "updates": updates, "wall": seconds}


def max_train_ratio(budget_s: float, steps: int, t_step: float, t_update: float, batch_size: int,
                    batch_length: int) -> float:
    """The largest train ratio (trained steps per env step) whose run of ``steps`` env steps fits
    ``budget_s``: ``steps * t_step + steps * ratio / (batch_size * batch_length) * t_update <= budget_s``."""
    return (budget_s / steps - t_step) * batch_size * batch_length / t_update


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", nargs="+", default=["debug", "size1m"])
    parser.add_argument("--seconds", type=float, default=210)
    parser.add_argument("--acting-seconds", type=float, default=90)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default=str(ROOT / "runs" / "atari_budget"))
    parser.add_argument("--budget-hours", type=float, default=2.5, help="for the train-ratio projection")
    parser.add_argument("--batch", type=int, nargs=2, default=[16, 64], metavar=("SIZE", "LENGTH"),
                        help="batch_size batch_length of the probes (for the projection; match any override)")
    parser.add_argument("extra", nargs="*", help="Hydra overrides for every probe (after --)")
    args = parser.parse_args(argv)
    rows = []
    for size in args.size:
        tag = f"{size}{'_' + '_'.join(o.replace('=', '') for o in args.extra) if args.extra else ''}_{int(time.time())}"
        acting = probe(Path(args.runs) / f"{tag}_acting", args.acting_seconds,
                       [f"size={size}", *args.extra, "run.train_ratio=1"], args.threads)
        training = probe(Path(args.runs) / f"{tag}_train", args.seconds, [f"size={size}", *args.extra], args.threads)
        t_step = 1.0 / acting["fps"]
        t_update = (1.0 - training["fps"] * t_step) / training["ups"]
        # per CPU second: the training probe spends share CPU s per wall s on fps steps and ups updates
        t_step_core = t_step * acting["share"]
        t_update_core = (training["share"] - training["fps"] * t_step_core) / training["ups"]
        row = {"size": size, "extra": " ".join(args.extra), "t_step": t_step, "t_update": t_update, **training,
               "acting_load": acting["load"], "acting_share": acting["share"],
               "t_step_core": t_step_core, "t_update_core": t_update_core}
        rows.append(row)
        print(f"{size} {' '.join(args.extra)}: acting {acting['fps']:.1f} env steps/s (load {acting['load']}, "
              f"{acting['share']:.2f} of a core); training {training['fps']:.2f} env steps/s, {training['ups']:.3f} "
              f"updates/s over {training['intervals']} x 20 s ({training['steps']} steps, {training['updates']} "
              f"updates in {training['wall']:.0f} s; load {training['load']}, {training['share']:.2f} of a core); "
              f"t_step {t_step * 1e3:.1f} ms, t_update {t_update:.2f} s; on one full core: t_step "
              f"{row['t_step_core'] * 1e3:.1f} ms, t_update {row['t_update_core']:.2f} s", flush=True)
        for steps in (40_000, 60_000, 100_000):
            ratio = max_train_ratio(args.budget_hours * 3600, steps, t_step_core, t_update_core, *args.batch)
            print(f"  {steps} env steps in {args.budget_hours} h on one core: train ratio <= {ratio:.0f}")
    return rows


if __name__ == "__main__":
    main()
