"""Side by side with the authors' DreamerV3: the same task, settings and seeds, one core each.

    python benchmarks/side_by_side.py --task cartpole --seeds 0 1 2 3 \\
        --reference ../shared/reference --reference-python "$REF_VENV/bin/python"
    python benchmarks/side_by_side.py --task kung_fu_master --lr 3e-4 --seeds 0 --reference ... --reference-python ...
    python benchmarks/side_by_side.py --task cartpole --seeds 0 1 2 3 --only collect   # tables and plot of runs made

``--reference`` is the folder holding the reference checkout (``dreamerv3-e3f0224/``) and its launcher
(``official_launch.py``, see that folder's README for its venv). Each side runs its seeds one after the other,
our main job (``examples/dreamerv3_atari.py``, 1 thread) pinned to ``--cores[0]`` and the reference (float32, 1
env, XLA on one thread) to ``--cores[1]``, both at once. Runs go to ``runs/side_by_side/<name>/<side>_s<seed>``,
each with its console log beside it. Then the script reads both sides' logs and writes into ``results/``:

- ``side_by_side_<name>_episodes.csv``: side, seed, env step, episode return;
- ``side_by_side_<name>_internals.csv``: side, seed, env step, metric, value (the names below);
- ``side_by_side_<name>.png``: return against env steps, and each internal against env steps;
- ``side_by_side_<name>.md``: per seed the last-10 mean return and the env step where the 10-episode mean
  first reached the target, and the internals per side (median over seeds) in env-step bins.

Both sides log every 60 s the mean of their updates since the last log (the reference's ``train_agg``; ours
``train/...`` csv files, ``MetricMean``). Env steps are agent steps on both sides (the reference logs Atari
frames: divided by the action repeat here). What each name is, and where the two definitions differ:

============== =================================== ====================== =====================================
name           ours (``scalars/train/...``)         reference (``metrics``) note
============== =================================== ====================== =====================================
entropy        ``actor/policy_entropy``             ``train/ent/action``   mean over the imagined steps
loss_rec       ``loss_rec``                         sum of ``train/loss/<obs key>`` sum over pixels / vector dims
loss_rew       ``loss_rew``                         ``train/loss/rew``
loss_con       ``loss_con``                         ``train/loss/con``
loss_dyn       ``loss_dyn``                         ``train/loss/dyn``     max(1 nat, KL), scale 1
loss_rep       ``loss_rep`` / 0.1                   ``train/loss/rep``     ours logs it times its scale 0.1
loss_value     ``loss_value``                       ``train/loss/value``
loss_repval    ``loss_repval`` / 0.3                ``train/loss/repval``  ours logs it times its scale 0.3
loss_policy    ``loss_policy``                      ``train/loss/policy``
adv_std        ``actor/advantage_std``              ``train/adv_std``      (return - slow value) / return scale
imag_reward    ``actor/imag_reward``                ``train/rew``          over the start and the H imagined states
slow_value     ``value/slow_value``                 ``train/slowval``      ours on replay states, the reference
                                                                           on the imagined trajectory
grad_norm      ``opt/grad_norm``                    ``train/opt/grad_norm`` before clipping
============== =================================== ====================== =====================================

The return normaliser's scale is ours alone (``actor/return_scale``): the reference logs the normalised return
(``train/ret``) and not the scale.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from learning import SMALL, seed_summary  # noqa: E402

#: The reference's float32, one-env, one-thread CPU setting, and its output (scope is not installed).
REFERENCE_CPU = ["--jax.platform", "cpu", "--jax.prealloc", "False", "--jax.compute_dtype", "float32",
                 "--run.envs", "1", "--logger.outputs", "jsonl", "--run.log_every", "60", "--run.save_every", "0"]
#: name -> both sides' settings. ``frames``: the reference's logged step per agent step (its logger multiplies the
#: step counter by the action repeat; ``run.steps`` and the train ratio count agent steps).
TASKS = {
    # benchmarks/learning.py's small CartPole settings
    "cartpole": dict(
        ours=["env=cartpole", *SMALL, "run.train_ratio=256"],
        reference=["--configs", "size1m", "--task", "gymnasium_CartPole-v1", "--agent.dyn.rssm.deter", "128",
                   "--agent.dyn.rssm.hidden", "64", "--agent.dyn.rssm.classes", "8", "--batch_size", "16",
                   "--batch_length", "32", "--agent.opt.lr", "3e-4", "--agent.opt.warmup", "100",
                   "--run.train_ratio", "256"],
        steps=10_000, target=450.0, frames=1),
    # the reference's own hyperparameters on CartPole: size1m, lr 4e-5 over a 1,000-update warm-up, 16 x 64, ratio 512
    "cartpole_authors": dict(
        ours=["env=cartpole", "size=size1m", "batch_size=16", "batch_length=64", "opt.lr=4e-5", "opt.warmup=1000",
              "run.train_ratio=512"],
        reference=["--configs", "size1m", "--task", "gymnasium_CartPole-v1", "--batch_size", "16",
                   "--batch_length", "64", "--run.train_ratio", "512"],
        steps=40_000, target=450.0, frames=1),
    # Atari 100k KungFuMaster at a CPU budget: size1m, 16 x 32, train ratio 64
    "kung_fu_master": dict(
        ours=["env=atari100k", "env.task=kung_fu_master", "size=size1m", "batch_size=16", "batch_length=32",
              "run.train_ratio=64"],
        reference=["--configs", "atari100k", "size1m", "--task", "atari100k_kung_fu_master", "--batch_size", "16",
                   "--batch_length", "32", "--run.train_ratio", "64"],
        steps=20_000, target=None, frames=4),
    # Atari 100k RoadRunner, the settings of our 2.5-hour CPU runs (docs/atari100k.md): as KungFuMaster above with
    # lr 3e-4 over a 100-update warm-up; 12k steps (1,500 updates): ours left random play by 10k; the reference
    # needs about 85 min per 1,000 updates on one core, so about 2.1 h
    "road_runner": dict(
        ours=["env=atari100k", "env.task=road_runner", "size=size1m", "batch_size=16", "batch_length=32",
              "run.train_ratio=64", "opt.lr=3e-4", "opt.warmup=100"],
        reference=["--configs", "atari100k", "size1m", "--task", "atari100k_road_runner", "--batch_size", "16",
                   "--batch_length", "32", "--run.train_ratio", "64", "--agent.opt.lr", "3e-4",
                   "--agent.opt.warmup", "100"],
        steps=12_000, target=None, frames=4),
}
#: name -> (our scalar file under scalars/train, the factor that undoes our logged scale, the reference's key)
METRICS = {
    "entropy": ("actor/policy_entropy", 1.0, "train/ent/action"),
    "loss_rec": ("loss_rec", 1.0, None),  # the reference: the sum of its per-observation-key losses
    "loss_rew": ("loss_rew", 1.0, "train/loss/rew"),
    "loss_con": ("loss_con", 1.0, "train/loss/con"),
    "loss_dyn": ("loss_dyn", 1.0, "train/loss/dyn"),
    "loss_rep": ("loss_rep", 1 / 0.1, "train/loss/rep"),
    "loss_value": ("loss_value", 1.0, "train/loss/value"),
    "loss_repval": ("loss_repval", 1 / 0.3, "train/loss/repval"),
    "loss_policy": ("loss_policy", 1.0, "train/loss/policy"),
    "adv_std": ("actor/advantage_std", 1.0, "train/adv_std"),
    "imag_reward": ("actor/imag_reward", 1.0, "train/rew"),
    "slow_value": ("value/slow_value", 1.0, "train/slowval"),
    "grad_norm": ("opt/grad_norm", 1.0, "train/opt/grad_norm"),
    "return_scale": ("actor/return_scale", 1.0, None),
}
#: The reference's loss keys that are not a reconstruction.
_NOT_REC = {"rew", "con", "dyn", "rep", "policy", "value", "repval"}
SIDES = ("ours", "reference")


# ------------------------------------------------------------------------------------------------ running
def _pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


def ours_command(task: dict, seed: int, steps: int, logdir: Path, lr: float | None, core: int | None,
                 extra: tuple[str, ...] = ()) -> list[str]:
    """Our main job with the task's settings; ``extra`` Hydra overrides go last (they win)."""
    lr_override = [f"opt.lr={lr}"] if lr is not None else []
    return [*_pinned(core), sys.executable, str(ROOT / "examples" / "dreamerv3_atari.py"), *task["ours"],
            *lr_override, f"seed={seed}", f"run.steps={steps}", f"logdir={logdir}", "threads=1",
            "run.log_every=60", "run.report_every=1000000", "run.eval_every=0", "device=cpu",
            "precision=float32", *extra]  # the reference's float32 (REFERENCE_CPU), not the default auto


def reference_command(task: dict, seed: int, steps: int, logdir: Path, lr: float | None, core: int | None,
                      launcher: Path, python: str) -> list[str]:
    lr_flag = ["--agent.opt.lr", f"{lr:g}"] if lr is not None else []
    return [*_pinned(core), python, str(launcher), "--logdir", str(logdir), *task["reference"], *REFERENCE_CPU,
            *lr_flag, "--run.steps", str(steps), "--seed", str(seed)]  # agent steps: only its logger counts frames


def reference_paths(reference: Path) -> tuple[Path, Path]:
    """``(launcher, source tree)`` from the folder holding both, or from the tree itself."""
    folder = reference if (reference / "official_launch.py").exists() else reference.parent
    launcher, trees = folder / "official_launch.py", sorted(folder.glob("dreamerv3-*"))
    if not launcher.exists() or not trees:
        raise SystemExit(f"--reference {reference}: expected official_launch.py and a dreamerv3-<commit>/ tree there "
                         f"(see ../shared/reference/README.md)")
    return launcher, (reference if reference.name.startswith("dreamerv3-") else trees[0])


def run_side(commands: list[tuple[int, list[str], Path]], env: dict, side: str) -> None:
    """Runs one side's seeds one after the other; each console output goes to ``<run dir>.log``."""
    for seed, cmd, logdir in commands:
        logdir.parent.mkdir(parents=True, exist_ok=True)
        log = logdir.with_suffix(".log")
        print(f"[{side} seed {seed}] {' '.join(cmd)}\n  console: {log}", flush=True)
        start = time.time()
        with open(log, "w") as out:
            code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        print(f"[{side} seed {seed}] {'done' if code == 0 else f'FAILED (exit {code}), see {log}'} "
              f"after {(time.time() - start) / 60:.1f} min", flush=True)


# ------------------------------------------------------------------------------------------------ reading
def read_ours(logdir: Path) -> tuple[list[tuple[int, float]], dict[str, list[tuple[int, float]]]]:
    """``(episodes, internals)`` of one of our runs: ``[(env step, return)]`` and ``name -> [(env step, value)]``."""
    episodes = []
    path = logdir / "episodes.csv"
    if path.exists():
        with open(path) as f:
            episodes = [(int(row["step"]), float(row["return"])) for row in csv.DictReader(f)]
    scalars = next(logdir.glob("*/scalars/train"), None)
    internals = {}
    for name, (file, factor, _) in METRICS.items():
        path = scalars / f"{file}.csv" if scalars is not None else None
        if path is not None and path.exists():
            with open(path) as f:
                internals[name] = [(int(float(s)), float(v) * factor) for s, v in csv.reader(f)]
    return episodes, internals


def read_reference(logdir: Path, frames: int):
    """The same from the reference's ``scores.jsonl`` and ``metrics.jsonl`` (steps divided by ``frames``)."""
    episodes, internals = [], {}
    if (logdir / "scores.jsonl").exists():
        for line in open(logdir / "scores.jsonl"):
            row = json.loads(line)
            episodes.append((row["step"] // frames, float(row["episode/score"])))
    if not (logdir / "metrics.jsonl").exists():
        return episodes, internals
    for line in open(logdir / "metrics.jsonl"):
        row = json.loads(line)
        if "train/opt/grad_norm" not in row:
            continue
        step = row["step"] // frames
        for name, (_, _, key) in METRICS.items():
            if key is not None and key in row:
                internals.setdefault(name, []).append((step, float(row[key])))
        rec = [v for k, v in row.items() if k.startswith("train/loss/") and k.split("/", 2)[2] not in _NOT_REC]
        if rec:
            internals.setdefault("loss_rec", []).append((step, float(sum(rec))))
    return episodes, internals


def until(run: tuple, steps: int) -> tuple:
    """``run`` (episodes, internals) cut at ``steps`` env steps: a side stopped after the others (or a longer run
    read again) compares over the same steps."""
    episodes, internals = run
    return ([e for e in episodes if e[0] <= steps],
            {name: [p for p in points if p[0] <= steps] for name, points in internals.items()})


# ------------------------------------------------------------------------------------------------ reporting
def write_csvs(name: str, runs: dict, results: Path) -> None:
    with open(results / f"side_by_side_{name}_episodes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["side", "seed", "env_step", "return"])
        for (side, seed), (episodes, _) in sorted(runs.items()):
            writer.writerows((side, seed, s, r) for s, r in episodes)
    with open(results / f"side_by_side_{name}_internals.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["side", "seed", "env_step", "metric", "value"])
        for (side, seed), (_, internals) in sorted(runs.items()):
            for metric, points in internals.items():
                writer.writerows((side, seed, s, metric, f"{v:.6g}") for s, v in points)


def binned_medians(runs: dict, side: str, metric: str, edges: list[int]) -> list[float | None]:
    """Per env-step bin: the median over seeds of each seed's mean value in the bin."""
    out = []
    for lo, hi in zip(edges, edges[1:]):
        means = []
        for (s, _), (_, internals) in runs.items():
            values = [v for step, v in internals.get(metric, []) if s == side and lo <= step < hi]
            if values:
                means.append(sum(values) / len(values))
        out.append(median(means) if means else None)
    return out


def summary_markdown(name: str, task: dict, runs: dict, steps: int) -> str:
    lines = [f"# Side by side: {name}", ""]
    target = task["target"]
    lines += ["| side | seed | episodes | last-10 mean return | env steps to the 10-episode mean reaching "
              f"{target if target is not None else '-'} |", "|---|---|---|---|---|"]
    for side in SIDES:
        curves = {seed: tuple(map(list, zip(*episodes))) for (s, seed), (episodes, _) in sorted(runs.items())
                  if s == side and episodes}
        for (seed, n, last10, reached) in seed_summary(curves, target if target is not None else math.inf):
            lines.append(f"| {side} | {seed} | {n} | {last10:.1f} | "
                         f"{f'{reached:,}' if reached is not None else 'not reached'} |")
    edges = [0, 1_000, 2_000, 4_000, 7_000, steps + 1] if steps > 7_000 else [0, steps // 4, steps // 2, steps + 1]
    header = " | ".join(f"{lo:,}-{hi - 1:,}" for lo, hi in zip(edges, edges[1:]))
    lines += ["", f"Internals, median over seeds of each seed's mean in the env-step bin (ours / reference):", "",
              f"| metric | {header} |", "|---" * len(edges) + "|"]
    for metric in METRICS:
        cells = []
        for ours, ref in zip(binned_medians(runs, "ours", metric, edges), binned_medians(runs, "reference", metric, edges)):
            cells.append(f"{_fmt(ours)} / {_fmt(ref)}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def _moving_mean(points: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """``(step, mean of the last window values)`` from the window-th point on: the target criterion's curve."""
    values = [v for _, v in points]
    return [(points[i][0], sum(values[i - window + 1:i + 1]) / window) for i in range(window - 1, len(points))]


def plot(name: str, task: dict, runs: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["return", *METRICS]
    cols = 5
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(4 * cols, 3 * math.ceil(len(panels) / cols)))
    colors = {"ours": "tab:blue", "reference": "tab:orange"}
    window = 10 if task["target"] is not None else 1  # the target's criterion; Atari's few episodes as they are
    for ax, panel in zip(axes.flat, panels):
        for (side, seed), (episodes, internals) in sorted(runs.items()):
            points = _moving_mean(episodes, window) if panel == "return" else internals.get(panel, [])
            if points:
                xs, ys = zip(*points)
                label = side if seed == min(s for (sd, s) in runs if sd == side) else None
                ax.plot(xs, ys, color=colors[side], lw=0.8, alpha=0.7, label=label)
        if panel == "return" and task["target"] is not None:
            ax.axhline(task["target"], color="gray", ls="--", lw=1)
        if panel in ("loss_rec", "grad_norm", "adv_std", "imag_reward", "slow_value"):
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(("return" + (f" ({window}-episode mean)" if window > 1 else "")) if panel == "return" else panel,
                     fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    axes.flat[0].set_xlabel("env steps", fontsize=8)
    fig.suptitle(f"{name}: ours (blue) and the authors' DreamerV3 (orange), one line per seed", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="cartpole")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=None, help="agent steps per seed (default: the task's)")
    parser.add_argument("--lr", type=float, default=None, help="both sides' learning rate (default: the task's)")
    parser.add_argument("--only", choices=["ours", "reference", "collect"], default=None,
                        help="run one side only, or only read the runs made into the tables and plot")
    parser.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "reference",
                        help="folder with official_launch.py and the dreamerv3-<commit>/ tree")
    parser.add_argument("--reference-python", default=os.environ.get("REF_VENV", "") + "/bin/python"
                        if os.environ.get("REF_VENV") else None, help="the reference venv's python (or set REF_VENV)")
    parser.add_argument("--cores", type=int, nargs=2, default=[0, 1], metavar=("OURS", "REFERENCE"))
    parser.add_argument("--name", default=None, help="results/side_by_side_<name>* (default: task[_lr<lr>])")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "side_by_side")
    parser.add_argument("--ours-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra Hydra overrides for our side only, e.g. run.steps_per_collect=1 (name the run)")
    parser.add_argument("--reference-from", default=None, metavar="NAME",
                        help="read the reference's runs from runs/side_by_side/NAME (e.g. to test an override of ours "
                             "against reference runs already made)")
    args = parser.parse_args()

    task, steps = TASKS[args.task], args.steps or TASKS[args.task]["steps"]
    name = args.name or (args.task + (f"_lr{args.lr:g}" if args.lr is not None else ""))
    rundir = args.runs / name
    reference_dir = args.runs / (args.reference_from or name)
    sides = {"ours": ["ours"], "reference": ["reference"], "collect": []}.get(args.only, list(SIDES))
    threads = []
    if "ours" in sides:
        cmds = [(s, ours_command(task, s, steps, rundir / f"ours_s{s}", args.lr, args.cores[0],
                                 tuple(args.ours_overrides)), rundir / f"ours_s{s}") for s in args.seeds]
        threads.append(threading.Thread(target=run_side, args=(cmds, dict(os.environ), "ours")))
    if "reference" in sides:
        if not args.reference_python or not Path(args.reference_python).exists():
            raise SystemExit("--reference-python: the reference venv's python is needed (or set REF_VENV); "
                             "see ../shared/reference/README.md for the install")
        launcher, tree = reference_paths(args.reference)
        env = dict(os.environ, OFFICIAL_SRC=str(tree), XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
                   OMP_NUM_THREADS="1")
        cmds = [(s, reference_command(task, s, steps, reference_dir / f"reference_s{s}", args.lr, args.cores[1],
                                      launcher, args.reference_python), reference_dir / f"reference_s{s}")
                for s in args.seeds]
        threads.append(threading.Thread(target=run_side, args=(cmds, env, "reference")))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    runs = {}
    for seed in args.seeds:
        runs[("ours", seed)] = until(read_ours(rundir / f"ours_s{seed}"), steps)
        runs[("reference", seed)] = until(read_reference(reference_dir / f"reference_s{seed}", task["frames"]), steps)
    missing = [f"{side} seed {seed}" for (side, seed), (episodes, _) in runs.items() if not episodes]
    if missing:
        print(f"no episodes yet for: {', '.join(missing)} (under {rundir})")
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    write_csvs(name, runs, results)
    text = summary_markdown(name, task, runs, steps)
    (results / f"side_by_side_{name}.md").write_text(text)
    plot(name, task, runs, results / f"side_by_side_{name}.png")
    print(text)
    print(f"wrote results/side_by_side_{name}{{_episodes.csv,_internals.csv,.md,.png}}")


if __name__ == "__main__":
    main()
