"""Return plots and the returns CSV reader of the reports (matplotlib with the Agg backend, imported on first use)."""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence

__all__ = ["plot_returns", "plot_curves", "bin_runs", "read_returns_csv"]


def read_returns_csv(path: str | os.PathLike) -> tuple[list[float], list[float]]:
    """``(steps, returns)`` from a ``step,return[,...]`` CSV (a header line, if any, is skipped).

    Reads both :class:`~torchrl_dreamerv3.training.reporting.logging.MetricLogger`'s ``episodes.csv`` and
    TorchRL CSVLogger's ``scalars/episode/return.csv``.
    """
    steps, returns = [], []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            try:
                step, ret = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                continue
            steps.append(step)
            returns.append(ret)
    return steps, returns


# ---------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_return_axes(fig, ax, path, title) -> str:
    """Labels a return-vs-steps plot the same way everywhere and writes it as a PNG."""
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title or "episode return")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_returns(steps: Sequence[float], returns: Sequence[float], path: str | os.PathLike,
                 title: str | None = None, smooth: int | None = None) -> str:
    """PNG of episode return vs env steps: the raw points and a trailing moving average.

    ``smooth`` is the moving-average window in episodes (default ``max(1, n // 10)``, at most 100).
    """
    plt = _pyplot()
    steps, returns = [float(s) for s in steps], [float(r) for r in returns]
    order = sorted(range(len(steps)), key=steps.__getitem__)
    steps, returns = [steps[i] for i in order], [returns[i] for i in order]
    smooth = smooth or min(100, max(1, len(returns) // 10))
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.scatter(steps, returns, s=6, alpha=0.35, label="episode")
        if returns:
            ax.plot(steps, _moving_average(returns, smooth), lw=2, label=f"mean of last {smooth}")
        return _save_return_axes(fig, ax, path, title)
    finally:
        plt.close(fig)


def bin_runs(runs, bins: int = 30):
    """Aligns several runs on a common step grid: ``(centers, mean, low, high, counts)`` lists.

    ``runs``: CSV paths, ``(steps, returns)`` pairs, or a mapping ``name -> either``. Each run's
    returns are averaged within each of ``bins`` equal step bins over ``[0, max step]``; a bin's
    mean/min/max are then taken over the runs with data there (bins with none are dropped).
    """
    values = list(runs.values()) if isinstance(runs, Mapping) else list(runs)
    curves = [read_returns_csv(r) if isinstance(r, (str, os.PathLike)) else r for r in values]
    curves = [([float(s) for s in st], [float(x) for x in rt]) for st, rt in curves]
    top = max((max(st) for st, _ in curves if st), default=0.0) or 1.0
    width = top / bins
    per_run = []
    for steps, returns in curves:
        sums, counts = [0.0] * bins, [0] * bins
        for s, r in zip(steps, returns):
            b = min(bins - 1, int(s / width))
            sums[b] += r
            counts[b] += 1
        per_run.append([sums[b] / counts[b] if counts[b] else math.nan for b in range(bins)])
    centers, mean, low, high, count = [], [], [], [], []
    for b in range(bins):
        vals = [run[b] for run in per_run if not math.isnan(run[b])]
        if vals:
            centers.append((b + 0.5) * width)
            mean.append(sum(vals) / len(vals))
            low.append(min(vals))
            high.append(max(vals))
            count.append(len(vals))
    return centers, mean, low, high, count


def plot_curves(runs, path: str | os.PathLike, title: str | None = None, bins: int = 30,
                label: str | None = None) -> str:
    """PNG of the mean return over runs (seeds) with their min/max spread, aligned by step bins.

    ``runs`` as in :func:`bin_runs`: CSV paths, ``(steps, returns)`` pairs or ``name -> either``.
    """
    plt = _pyplot()
    centers, mean, low, high, _ = bin_runs(runs, bins)
    n = len(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.fill_between(centers, low, high, alpha=0.25, label="min / max")
        ax.plot(centers, mean, lw=2, label=label or f"mean of {n} run{'s' if n != 1 else ''}")
        return _save_return_axes(fig, ax, path, title)
    finally:
        plt.close(fig)
