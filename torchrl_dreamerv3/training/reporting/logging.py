"""Loggers: a TorchRL logger by backend name, and :class:`MetricLogger`, the training loop's front end.

Backends (see :func:`make_logger`): ``csv`` (default; no extra package, no account),
``tensorboard`` (``pip install torchrl_dreamerv3[tensorboard]``), ``wandb`` (offline by default,
``pip install torchrl_dreamerv3[wandb]``) and ``none``.

Files under ``<log_dir>/<exp_name>/`` (the *run dir*) with the ``csv`` backend:

=========================================== ==========================================================
``scalars/<group>/<name>.csv``              one ``step,value`` line per call, no header, appended
                                            (``train/opt/grad_norm`` -> ``scalars/train/opt/grad_norm.csv``)
``texts/hparams0.txt``                      ``key: value`` lines, sorted (nested keys joined with ``/``)
``videos/<name>_<step>.pt``                 ``torch.save`` of the uint8 video ``(1, T, C, H, W)``
``videos/<name>_<step>.gif``                the same video as a GIF (written by :class:`MetricLogger`
                                            for every backend)
``episodes.csv``                            ``step,return,length`` with a header (MetricLogger, every
                                            backend); :func:`~torchrl_dreamerv3.training.reporting.report.read_returns_csv`
                                            reads it
=========================================== ==========================================================

``tensorboard`` writes ``events.out.tfevents.*`` into the run dir; ``wandb`` writes
``<log_dir>/wandb/offline-run-*/`` (upload later with ``wandb sync``). Neither can log videos
without ``moviepy``; the GIF is written anyway.
"""
from __future__ import annotations

import importlib.util
import os
import uuid
import warnings
from collections.abc import Mapping

import torch

from . import BACKENDS
from .report import plot_returns, save_gif

__all__ = ["BACKENDS", "make_logger", "make_metric_logger", "MetricLogger", "MetricMean", "cut_episodes_csv",
           "wandb_resume_kwargs"]

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class MetricMean:
    """The mean of the update metrics since the last :meth:`pop`, as the reference logs its ``train/...`` values
    (its ``train_agg``): a log line then describes every update since the one before, not the last alone.

        >>> import torch
        >>> from tensordict import TensorDict
        >>> mean = MetricMean()
        >>> for loss in (1.0, 2.0, 6.0):
        ...     mean.add(TensorDict({"loss": torch.tensor(loss)}, []))
        >>> mean.pop()["loss"].item(), mean.count
        (3.0, 0)

    The sums stay tensors on the metrics' device (no host sync per update); a key missing from one update is
    averaged over the updates that had it.
    """

    def __init__(self):
        self._sums: dict = {}
        self._counts: dict = {}
        self.count = 0

    def add(self, metrics) -> None:
        items = metrics.items(True, True) if hasattr(metrics, "batch_size") else metrics.items()
        for key, value in items:
            value = value.detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()
            self._counts[key] = self._counts.get(key, 0) + 1
        self.count += 1

    def pop(self) -> dict:
        """``{key: mean}`` since the last call (empty when no update was added), and starts over."""
        means = {key: total / self._counts[key] for key, total in self._sums.items()}
        self._sums, self._counts, self.count = {}, {}, 0
        return means


def make_logger(backend: str | None, log_dir: str, exp_name: str, wandb_kwargs: dict | None = None):
    """A TorchRL logger writing to ``<log_dir>/<exp_name>`` (wandb: ``<log_dir>/wandb``), or ``None``.

    Args:
        backend: ``"csv"``, ``"tensorboard"``, ``"wandb"``, or ``"none"`` / ``""`` / ``None`` (no logger).
        log_dir, exp_name: root folder and run name.
        wandb_kwargs: extra ``wandb.init`` arguments; ``mode`` defaults to ``"offline"`` (no network,
            no API key) and ``project`` to ``"torchrl_dreamerv3"``.

    The CSV logger saves videos as ``.pt`` (TorchRL's ``get_logger("csv")`` would pick mp4, which
    needs ``torchcodec``).
    """
    name = (backend or "none").lower()
    if name not in BACKENDS and name != "":
        raise ValueError(f"unknown logger backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if name in ("none", ""):
        return None
    package = _PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ImportError(f"the {name} logger needs the {package!r} package: "
                          f"pip install torchrl_dreamerv3[{name}]  (or use the csv backend)")
    if name == "csv":
        from torchrl.record.loggers import CSVLogger

        return CSVLogger(exp_name=exp_name, log_dir=log_dir, video_format="pt")
    if name == "tensorboard":
        from torchrl.record.loggers import TensorboardLogger

        return TensorboardLogger(exp_name=exp_name, log_dir=log_dir)
    from torchrl.record.loggers import WandbLogger

    kwargs = {"mode": "offline", "project": "torchrl_dreamerv3", **(wandb_kwargs or {})}
    offline = kwargs["mode"] in ("offline", "dryrun")
    return WandbLogger(exp_name=exp_name, save_dir=log_dir, offline=offline, **kwargs)


def wandb_resume_kwargs(run_dir: str | os.PathLike) -> dict:
    """``{"id": ..., "resume": "allow"}`` for ``wandb.init``: the id is kept in ``<run_dir>/wandb_run_id`` (made on
    the first call), so a resumed run continues its own wandb run instead of starting a new one."""
    path = os.path.join(run_dir, "wandb_run_id")
    if os.path.isfile(path):
        run_id = open(path).read().strip()
    else:
        run_id = uuid.uuid4().hex[:12]
        with open(path + ".tmp", "w") as f:
            f.write(run_id + "\n")
        os.replace(path + ".tmp", path)
    return {"id": run_id, "resume": "allow"}


def cut_episodes_csv(path: str | os.PathLike, episodes: int, env_steps: int) -> list[tuple[int, float]]:
    """Cuts ``episodes.csv`` back to a checkpoint: keeps its first ``episodes`` rows (the checkpoint's episode
    counter; rows are appended in order) and drops the rest, written after the checkpoint by a run that
    was then killed. Returns the kept ``(step, return)`` pairs (for ``MetricLogger.episode_returns``).

    Raises ``ValueError`` when a kept row is later than ``env_steps`` or when the file holds fewer rows
    than ``episodes`` (then it is left as it is).
    """
    if not os.path.isfile(path):
        if episodes:
            raise ValueError(f"{path} is missing but the checkpoint counted {episodes} episodes")
        return []
    with open(path) as f:
        header, *lines = f.read().splitlines()
    kept = lines[:episodes]
    pairs = []
    for number, line in enumerate(kept, start=2):
        try:
            step, value = line.split(",")[:2]
            pairs.append((int(step), float(value)))
        except ValueError:
            raise ValueError(f"{path} line {number} is damaged: {line!r}") from None
    if len(pairs) < episodes:
        raise ValueError(f"{path} holds {len(pairs)} episodes but the checkpoint counted {episodes}")
    if pairs and pairs[-1][0] > env_steps:
        raise ValueError(f"{path}: episode {episodes} is logged at step {pairs[-1][0]}, after the checkpoint's "
                         f"{env_steps} env steps")
    if len(lines) > episodes:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write("\n".join([header, *kept]) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return pairs


def make_metric_logger(backend: str | None, log_dir: str, exp_name: str,
                       wandb_kwargs: dict | None = None) -> MetricLogger:
    """:func:`make_logger` wrapped in a :class:`MetricLogger` whose run dir is ``<log_dir>/<exp_name>``."""
    return MetricLogger(make_logger(backend, log_dir, exp_name, wandb_kwargs), os.path.join(log_dir, exp_name))


def _flatten(tree: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{'/'.join(key) if isinstance(key, tuple) else key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


class MetricLogger:
    """Groups metric names, logs videos with a GIF fallback and records episode returns.

    Args:
        logger: a TorchRL logger, or ``None`` to keep only the in-memory record, ``episodes.csv``
            and the GIFs.
        run_dir: folder for ``episodes.csv``, ``returns.png`` and ``videos/*.gif``; ``None`` writes no files.

    Names are ``<prefix>/<name>``; the loop uses the prefixes ``train``, ``episode``, ``eval``,
    ``perf`` and ``report``, so ``opt/grad_norm`` logged with ``prefix="train"`` becomes
    ``train/opt/grad_norm``.
    """

    def __init__(self, logger=None, run_dir: str | os.PathLike | None = None):
        self.logger = logger
        self.run_dir = os.fspath(run_dir) if run_dir is not None else None
        self.episode_returns: list[tuple[int, float]] = []
        self._video_warned = False
        self._missing_warned: set[str] = set()
        if self.run_dir is not None:
            os.makedirs(self.run_dir, exist_ok=True)

    def log_scalars(self, metrics, step: int, prefix: str = "") -> dict[str, float]:
        """Logs each value (a number or a tensor; one ``.item()`` each, multi-element tensors are
        averaged) as ``<prefix>/<name>``; accepts a mapping or a TensorDict (nested keys joined by
        ``/``). Returns the logged ``{name: float}``."""
        items = metrics.items(True, True) if hasattr(metrics, "batch_size") else _flatten(metrics).items()
        logged = {}
        for name, value in items:
            if value is None:
                continue
            name = "/".join(name) if isinstance(name, tuple) else str(name)
            if isinstance(value, torch.Tensor):
                value = (value if value.numel() == 1 else value.float().mean()).item()
            full = f"{prefix.rstrip('/')}/{name}" if prefix else name
            logged[full] = float(value)
            if self.logger is not None:
                self.logger.log_scalar(full, float(value), step=int(step))
        return logged

    def log_episode(self, step: int, episode_return: float, length: int | None = None) -> None:
        """Records one finished episode (memory + ``episodes.csv``) and logs ``episode/return``/``length``."""
        episode_return = float(episode_return)
        self.episode_returns.append((int(step), episode_return))
        metrics = {"return": episode_return} if length is None else {"return": episode_return, "length": length}
        self.log_scalars(metrics, step, prefix="episode")
        if self.run_dir is not None:
            path = os.path.join(self.run_dir, "episodes.csv")
            new = not os.path.exists(path)
            with open(path, "a") as f:
                if new:
                    f.write("step,return,length\n")
                f.write(f"{int(step)},{episode_return},{'' if length is None else int(length)}\n")

    def log_video(self, name: str, frames: torch.Tensor, step: int, fps: float = 8) -> str | None:
        """Logs uint8 frames ``(T, C, H, W)`` through the backend where it can, and always saves
        ``<run_dir>/videos/<name>_<step>.gif``; returns the GIF path (``None`` without a run dir).

        TensorBoard and wandb need ``moviepy`` for videos; without it only the GIF is written (one warning).
        """
        frames = frames.detach().cpu()
        if self.logger is not None:
            try:
                self.logger.log_video(name, frames.unsqueeze(0), step=int(step))
            except Exception as err:  # noqa: BLE001 - TensorBoard raises a bare Exception for moviepy
                missing = isinstance(err, ImportError) or any(p in str(err) for p in ("moviepy", "torchcodec"))
                if not missing:
                    raise
                if not self._video_warned:
                    warnings.warn(f"{type(self.logger).__name__} cannot log videos ({err}); saving GIFs only",
                                  stacklevel=2)
                    self._video_warned = True
        if self.run_dir is None or not self._optional("PIL", "the open-loop GIFs", "atari"):
            return None
        return save_gif(frames, os.path.join(self.run_dir, "videos", f"{name}_{int(step)}.gif"), fps=fps)

    def log_hparams(self, config: Mapping) -> None:
        """Logs a (nested) config; nested keys are joined with ``/``, non-scalars turned into strings."""
        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in _flatten(config).items()}
        if self.logger is not None:
            self.logger.log_hparams(flat)

    def plot_returns(self, path: str | os.PathLike | None = None, title: str | None = None) -> str | None:
        """PNG of the episode returns so far (default ``<run_dir>/returns.png``); ``None`` if nothing to plot."""
        path = path or (os.path.join(self.run_dir, "returns.png") if self.run_dir else None)
        if path is None or not self.episode_returns or not self._optional("matplotlib", "returns.png", "plot"):
            return None
        steps, returns = zip(*self.episode_returns)
        return plot_returns(steps, returns, path, title=title)

    def _optional(self, package: str, what: str, extra: str) -> bool:
        """Whether ``package`` is installed; without it, one warning says what is not written and how to get it
        (episodes.csv and the scalars hold the same numbers)."""
        if importlib.util.find_spec(package) is not None:
            return True
        if package not in self._missing_warned:
            warnings.warn(f"{package} is not installed: {what} not written "
                          f"(pip install 'torchrl_dreamerv3[{extra}]')", stacklevel=3)
            self._missing_warned.add(package)
        return False

    def close(self) -> None:
        """Flushes and closes the backend (finishes the wandb run, closes the TensorBoard writer)."""
        experiment = getattr(self.logger, "experiment", None)
        for method in ("finish", "close"):
            if hasattr(experiment, method):
                getattr(experiment, method)()
                break
