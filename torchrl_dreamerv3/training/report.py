"""Reports: the open-loop prediction video (SPEC §9), GIF files and return plots.

The open-loop report (reference ``Agent.report``) shows how far the world model can see ahead:
the first ``context`` steps of a replay window are filtered with the posterior, then the prior
rolls forward from the last posterior state with the *recorded* actions, and every state is
decoded. Each video frame is a grid, one row per sequence (up to ``rows``), three panels per
row::

    truth | prediction | error      error = 0.5 + (prediction - truth) / 2   (grey = exact)

Plots use matplotlib with the Agg backend, imported on first use only.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Mapping, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from ..modules import DreamerV3Modules
from ..replay import split_context

__all__ = ["open_loop_report", "open_loop_video", "openloop_mse", "save_gif", "plot_returns", "plot_curves",
           "bin_runs", "read_returns_csv"]


# ---------------------------------------------------------------- open-loop prediction

def _image_key(modules: DreamerV3Modules, window: TensorDictBase, key: NestedKey | None) -> NestedKey:
    """The reported image key: ``key`` if given, else the first uint8 ``(C, H, W)`` observation."""
    def is_image(k):
        value = window.get(k, None)
        return value is not None and value.dtype == torch.uint8 and value.dim() == window.batch_dims + 3
    if key is not None:
        if not is_image(key):
            raise ValueError(f"key {key!r} is not a uint8 (C, H, W) image observation in the window")
        return key
    for k in modules.obs_keys:
        if is_image(k):
            return k
    raise ValueError(f"video reports need an image observation (uint8, (C, H, W)); the observation keys "
                     f"{modules.obs_keys} have none")


def _reco_key(modules: DreamerV3Modules, key: NestedKey) -> NestedKey:
    prefix = modules.keys.reco
    prefix = prefix if isinstance(prefix, tuple) else (prefix,)
    return (*prefix, *(key if isinstance(key, tuple) else (key,)))


@contextlib.contextmanager
def _frozen(modules: torch.nn.Module, device: torch.device):
    """Eval mode and a forked RNG for the duration, restoring both after: reports change no state."""
    flags = [(m, m.training) for m in modules.modules()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            modules.eval()
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def _open_loop_predict(modules: DreamerV3Modules, window: TensorDictBase, context: int | None, key: NestedKey):
    """``(truth uint8 (B, T, C, H, W), prediction float in [0, 1] (B, T, C, H, W), context)``."""
    if window.batch_dims != 2:
        raise ValueError(f"open-loop reports need a replay window (B, T + 1), got batch shape {tuple(window.shape)}")
    k = modules.keys
    data = split_context(window, keys=k)
    T = data.shape[1]
    context = T // 2 if context is None else int(context)
    if not 1 <= context <= T:
        raise ValueError(f"context must be in [1, T={T}], got {context}")
    # Observed part: encoder + posterior filtering over steps 0..context-1.
    post = modules.observe(modules.encoder(data[:, :context]))
    states = [post.select(k.deter, k.stoch)]
    # Imagined part: the prior, driven by the recorded action that led to each later step.
    # As in the reference, the prior does not reset at an ``is_first`` inside the imagined part.
    state = post[:, -1].select(k.deter, k.stoch)
    for t in range(context, T):
        step = state.clone(False).set(k.action, data[:, t].get(k.prev_action))
        state = modules.imagine_step(step).select(k.deter, k.stoch)
        states.append(state.unsqueeze(1))
    latents = torch.cat(states, dim=1)
    pred = modules.decoder(latents).get(_reco_key(modules, key)).float()
    if getattr(modules.cfg, "cnn", "v3") == "k4s2":
        pred = pred + 0.5  # V1/V2 decoders predict the mean of x/255 - 0.5 (SPEC_V1_V2 §1.2)
    pred = pred.clamp(0, 1)
    return data.get(key), pred, context


def open_loop_report(
    modules: DreamerV3Modules,
    window: TensorDictBase,
    context: int | None = None,
    key: NestedKey | None = None,
    *,
    rows: int = 4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Open-loop video and its errors from one forward pass: ``(frames, metrics)``.

    Args:
        modules: the agent (only the world model is used).
        window: a replay window ``(B, T + 1)``; row 0 is the context row (see
            :func:`~torchrl_dreamerv3.replay.split_context`), so the report covers rows ``1..T``.
        context: steps observed with the posterior (default ``T // 2``); the other ``T - context``
            are predicted by the prior from the recorded actions alone.
        key: the image observation to show (default: the first uint8 image of ``modules.obs_keys``).
        rows: sequences shown in the video (the first ``min(rows, B)``); metrics use the whole batch.

    Returns:
        ``frames``: uint8 ``(T, C, rows * H, 3 * W)`` on the CPU (truth | prediction | error per row;
        images with ``C`` not in ``(1, 3)``, e.g. frame stacks, keep their last channel as grey).
        ``metrics``: 0-d tensors ``openl_mse_obs`` (posterior reconstruction, steps ``< context``)
        and ``openl_mse_imag`` (open-loop prediction, steps ``>= context``; absent if ``context == T``),
        mean squared per-pixel error with pixels in ``[0, 1]``.

    Runs without gradient, in eval mode and on a forked RNG: module flags and the global random
    stream are as before the call.
    """
    key = _image_key(modules, window, key)
    with _frozen(modules, window.get(key).device):
        truth, pred, context = _open_loop_predict(modules, window, context, key)
    err = (pred - truth.float() / 255.0).square()
    metrics = {"openl_mse_obs": err[:, :context].mean()}
    if context < truth.shape[1]:
        metrics["openl_mse_imag"] = err[:, context:].mean()
    return _video_grid(truth[:rows], pred[:rows]), metrics


def open_loop_video(modules: DreamerV3Modules, window: TensorDictBase, context: int | None = None,
                    key: NestedKey | None = None, *, rows: int = 4) -> torch.Tensor:
    """The frames of :func:`open_loop_report`: uint8 ``(T, C, rows * H, 3 * W)``."""
    return open_loop_report(modules, window, context, key, rows=rows)[0]


def openloop_mse(modules: DreamerV3Modules, window: TensorDictBase, context: int | None = None,
                 key: NestedKey | None = None) -> dict[str, torch.Tensor]:
    """The metrics of :func:`open_loop_report` (``openl_mse_obs``, ``openl_mse_imag``)."""
    return open_loop_report(modules, window, context, key)[1]


def _video_grid(truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``(R, T, C, H, W)`` truth uint8 and prediction in [0, 1] -> uint8 ``(T, C, R * H, 3 * W)``."""
    if truth.shape[2] not in (1, 3):
        truth, pred = truth[:, :, -1:], pred[:, :, -1:]
    target = truth.float() / 255.0
    to_uint8 = lambda x: (x * 255.0).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    error = 0.5 + (pred - target) / 2
    panels = torch.cat([truth, to_uint8(pred), to_uint8(error)], dim=-1)  # (R, T, C, H, 3W)
    R, T, C, H, W3 = panels.shape
    return panels.permute(1, 2, 0, 3, 4).reshape(T, C, R * H, W3).cpu()


# ---------------------------------------------------------------- files

def save_gif(frames: torch.Tensor, path: str | os.PathLike, fps: float = 8) -> str:
    """Writes uint8 frames ``(T, C, H, W)`` (``C`` = 1 or 3) as a looping GIF; returns the path.

    Pillow merges consecutive identical frames (adding their durations), so a GIF of a static
    video can hold fewer frames than ``T``.
    """
    from PIL import Image

    if frames.dim() != 4 or frames.shape[1] not in (1, 3) or frames.dtype != torch.uint8:
        raise ValueError(f"save_gif needs uint8 frames (T, C, H, W) with C in (1, 3), got "
                         f"{frames.dtype} {tuple(frames.shape)}")
    array = frames.detach().cpu().permute(0, 2, 3, 1).numpy()
    images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]  # mode L or RGB
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path


def read_returns_csv(path: str | os.PathLike) -> tuple[list[float], list[float]]:
    """``(steps, returns)`` from a ``step,return[,...]`` CSV (a header line, if any, is skipped).

    Reads both :class:`~torchrl_dreamerv3.training.logging.MetricLogger`'s ``episodes.csv`` and
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
