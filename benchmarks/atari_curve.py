"""Return against env steps of main-job Atari runs, beside a random agent with the same preprocessing.

    python benchmarks/atari_curve.py --runs runs/atari_cpu/kung_fu_master_seed0 runs/atari_cpu/kung_fu_master_seed1 \
        --random results/atari_random_kung_fu_master.csv --name atari_cpu_kung_fu_master

Reads each run's ``episodes.csv`` (training episodes of the stochastic policy, as the reference scores Atari)
and the random agent's CSV of ``benchmarks/atari_random.py``. Prints and writes ``results/<name>.md``: per seed
and over the seeds, the mean return ± std over episodes in equal bins of ``--bin`` env steps, the last bin
against random (difference and its standard error), and the reference-style score (the last of 29 bins,
``atari_scores.final_score``). Plots ``results/<name>.png``: each episode, a moving average per seed and the
random agent's mean ± std.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from atari_scores import final_score  # noqa: E402
from torchrl_dreamerv3.training.reporting.report import read_returns_csv  # noqa: E402


def read_random(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(row["return"]) for row in csv.DictReader(f)]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def binned(steps: list[float], returns: list[float], width: int, top: float) -> list[list[float]]:
    """Returns of the episodes that ended in ``(k * width, (k + 1) * width]`` for each bin ``k``."""
    bins = [[] for _ in range(max(1, math.ceil(top / width)))]
    for s, r in zip(steps, returns):
        bins[min(len(bins) - 1, max(0, math.ceil(s / width) - 1))].append(r)
    return bins


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:,.0f} ± {s:,.0f} ({len(values)})"


def table(runs: dict[str, tuple[list[float], list[float]]], random: list[float], width: int) -> list[str]:
    top = max(max(st) for st, _ in runs.values())
    per_run = {name: binned(st, rt, width, top) for name, (st, rt) in runs.items()}
    names = list(runs)
    lines = ["| env steps | " + " | ".join(names) + " | all seeds |", "|---" * (len(names) + 2) + "|"]
    for k in range(len(next(iter(per_run.values())))):
        cells = [_cell(per_run[n][k]) for n in names]
        pooled = [r for n in names for r in per_run[n][k]]
        lines.append(f"| {k * width:,}-{(k + 1) * width:,} | " + " | ".join(cells) + f" | {_cell(pooled)} |")
    lines.append(f"| random agent | " + " | ".join("" for _ in names) + f" | {_cell(random)} |")
    last = [r for n in names for r in per_run[n][-1]]
    (lm, ls), (rm, rs) = mean_std(last), mean_std(random)
    se = math.sqrt(ls ** 2 / max(1, len(last)) + rs ** 2 / max(1, len(random)))
    score = final_score(list(runs.values()))
    lines += ["", f"Last bin against random: {lm:,.0f} - {rm:,.0f} = {lm - rm:+,.0f} (standard error {se:,.0f}; "
              f"{(lm - rm) / se if se else float('inf'):.1f} standard errors), {lm / rm if rm else float('inf'):.1f}x "
              f"the random mean.", f"Reference-style score (last of 29 bins, mean over seeds): {score:,.1f}."]
    return lines


def plot(runs: dict[str, tuple[list[float], list[float]]], random: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, (steps, returns)) in enumerate(runs.items()):
        color = f"C{i}"
        ax.scatter(steps, returns, s=8, alpha=0.35, color=color)
        window = max(1, min(10, len(returns) // 4))
        smooth = [statistics.fmean(returns[max(0, j - window + 1):j + 1]) for j in range(len(returns))]
        ax.plot(steps, smooth, color=color, label=f"{name} ({window}-episode mean)")
    m, s = mean_std(random)
    ax.axhline(m, color="k", linestyle="--", label=f"random agent {m:,.0f} ± {s:,.0f}")
    ax.axhspan(m - s, m + s, color="k", alpha=0.08)
    ax.set_xlabel("env steps (agent steps, action repeat 4)")
    ax.set_ylabel("training episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="main-job run directories (episodes.csv)")
    parser.add_argument("--random", required=True, help="atari_random.py CSV of the same game")
    parser.add_argument("--bin", type=int, default=5000, help="env steps per table row")
    parser.add_argument("--name", default="atari_curve")
    parser.add_argument("--title", default=None)
    parser.add_argument("--results", default=str(ROOT / "results"))
    args = parser.parse_args(argv)
    runs = {Path(r).name: read_returns_csv(Path(r) / "episodes.csv") for r in args.runs}
    empty = [n for n, (st, _) in runs.items() if not st]
    if empty:
        parser.error(f"no finished episode in {empty}")
    random = read_random(Path(args.random))
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    lines = table(runs, random, args.bin)
    command = "python benchmarks/atari_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"{args.name}.md").write_text("\n".join([f"`{command}`", "", *lines]) + "\n")
    plot(runs, random, out / f"{args.name}.png", args.title or args.name)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
