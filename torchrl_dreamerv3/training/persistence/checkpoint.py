"""Checkpoints written whole or not at all: learner, optimiser, counters, RNG and (opt-in) the replay rows.

Layout under ``<run>/checkpoint/``::

    step_000012345/        a complete checkpoint: state.pt, counters.json, replay/ (see replay_io)
    step_000012361.tmp/    being written (a kill leaves it behind; loading ignores it, the next save removes it)
    latest                 the newest complete checkpoint's name (for people; loading does not need it)

A save writes a ``.tmp`` directory, fsyncs every file, renames it to ``step_<env steps>`` and then updates
``latest`` (write-then-rename), so the previous checkpoint stays loadable until the new one is complete;
the newest ``keep`` are kept. Loading takes the newest complete checkpoint and, if it is damaged, falls
back to the one before (saying so). The pre-rotation layout (``checkpoint/state.pt``) still loads.

TorchRL's ``torchrl.checkpoint.Checkpoint``/``CheckpointRotation`` (0.14.1) are not used: they do not
fsync, and their replay adapter (``dumps``) writes the buffer's whole capacity and checks nothing on load.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ...durable import CheckpointError, fsync_path, fsync_tree, write_text_atomic
from ...replay.io import load_replay, save_replay

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint_dir", "list_checkpoints", "read_counters", "read_info",
           "CheckpointError"]

STATE_FILE = "state.pt"
REPLAY_DIR = "replay"
LATEST = "latest"
INFO_FILE = "info.json"  # counters and meta as JSON: readable without loading the weights
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _root(path: Path) -> Path:
    """``<run>/checkpoint`` from a run dir, its checkpoint dir or one step dir."""
    if _STEP_DIR.match(path.name):
        return path.parent
    return path / "checkpoint" if (path / "checkpoint").is_dir() else path


def list_checkpoints(path: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under a run dir (or its ``checkpoint/`` dir), newest first; an old-layout
    ``checkpoint/state.pt`` comes last. Temporary (``.tmp``) directories are not listed."""
    path = Path(path)
    if _STEP_DIR.match(path.name) and path.is_dir():
        return [path]
    root = _root(path)
    steps = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()] if root.is_dir() else []
    found = sorted(steps, key=lambda p: int(_STEP_DIR.match(p.name).group(1)), reverse=True)
    return found + ([root] if (root / STATE_FILE).is_file() else [])


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The newest complete checkpoint of a run dir or its ``checkpoint`` dir."""
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"no checkpoint found in {path} (looked for {Path(path) / 'checkpoint'}/step_*/"
                                f"{STATE_FILE} and {STATE_FILE})")
    return found[0]


def save_checkpoint(directory: str | os.PathLike, *, learner, counters: dict, ratio, replay=None, keep: int = 2,
                    meta: dict | None = None) -> Path:
    """Publishes ``<directory>/step_<env steps>`` whole (see the module doc); returns its path.

    ``meta``: small JSON-able facts about the run (e.g. the resolved model size, the wandb run id).
    """
    if keep < 1:
        raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("step_*.tmp"):  # left by a killed save; the run lock says no one else writes here
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{int(counters['env_steps']):09d}"
    tmp = root / f"{name}.tmp"
    tmp.mkdir()
    state = {"learner": learner.state_dict(), "optimizer": learner.optimizer.state_dict(),
             "ratio": ratio.state_dict(), "counters": dict(counters), "rng": _rng_state(),
             "has_replay": replay is not None, "meta": dict(meta or {})}
    if replay is not None:
        save_replay(replay, tmp / REPLAY_DIR)
    torch.save(state, tmp / STATE_FILE)
    (tmp / INFO_FILE).write_text(json.dumps({"counters": dict(counters), "meta": dict(meta or {})}))
    fsync_tree(tmp)
    _publish(tmp, root / name)
    write_text_atomic(root / LATEST, name + "\n")
    for old in list_checkpoints(root)[keep:]:
        if old != root:  # an old-layout checkpoint in root itself is left alone
            shutil.rmtree(old)
    return root / name


def _publish(tmp: Path, final: Path) -> None:
    """Renames ``tmp`` to ``final``; a checkpoint of the same step already there is swapped out first."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_path(final.parent)


def _read_state(directory: Path) -> dict:
    path = directory / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the save that wrote it did not finish")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - EOFError, UnpicklingError, RuntimeError (zip): all mean damaged
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {err})") from None


def read_info(path: str | os.PathLike) -> dict:
    """``{"counters": ..., "meta": ...}`` of the newest complete checkpoint, without loading its weights."""
    directory = resolve_checkpoint_dir(path)
    if (directory / INFO_FILE).is_file():
        try:
            return json.loads((directory / INFO_FILE).read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{directory / INFO_FILE} is damaged ({err})") from None
    state = _read_state(directory)  # pre-rotation layout
    return {"counters": state["counters"], "meta": state.get("meta", {})}


def read_counters(path: str | os.PathLike) -> dict:
    """The counters of the newest complete checkpoint (env_steps, updates, episodes, ...)."""
    return read_info(path)["counters"]


def _load_old_layout_replay(replay, directory: Path) -> None:
    """The pre-rotation layout: TorchRL's ``dumps`` of the whole buffer (not checked beyond parsing)."""
    try:
        replay.loads(directory)
    except Exception as err:  # noqa: BLE001 - JSONDecodeError, FileNotFoundError, shape errors
        raise CheckpointError(f"replay {directory} cannot be read ({type(err).__name__}: {err})") from None


def _load_one(directory: Path, learner, ratio, replay, replay_spec) -> dict:
    state = _read_state(directory)
    restored = replay is not None and state["has_replay"]
    if restored:
        if not _STEP_DIR.match(directory.name):
            _load_old_layout_replay(replay, directory / REPLAY_DIR)
        else:
            load_replay(replay, directory / REPLAY_DIR, expected_len=state["counters"]["env_steps"],
                             spec=replay_spec)
    learner.load_state_dict(state["learner"])
    learner.optimizer.load_state_dict(state["optimizer"])
    ratio.load_state_dict(state["ratio"])
    _set_rng_state(state["rng"])
    return {**state["counters"], "replay_restored": restored, "checkpoint": str(directory),
            "meta": state.get("meta", {})}


def load_checkpoint(path: str | os.PathLike, *, learner, ratio, replay=None, replay_spec=None) -> dict:
    """Restores the newest complete checkpoint of ``path`` (a run dir, its ``checkpoint/`` dir or one
    ``step_*`` dir); returns its counters plus ``replay_restored``, ``checkpoint`` (the dir loaded) and ``meta``.

    A damaged checkpoint (empty or unreadable ``state.pt``, replay files that fail their checks against the
    counters or ``replay_spec``, a feature-spec dict or a TensorDict of the observations to expect; see
    :func:`~torchrl_dreamerv3.replay.io.load_replay`) is
    skipped with a warning for the one before it; :class:`CheckpointError` when none is left.
    """
    candidates = list_checkpoints(path)
    if not candidates:
        raise FileNotFoundError(f"no checkpoint found in {path}")
    errors = []
    for i, directory in enumerate(candidates):
        try:
            return _load_one(directory, learner, ratio, replay, replay_spec)
        except CheckpointError as err:
            errors.append(str(err))
            if i + 1 < len(candidates):
                warnings.warn(f"checkpoint {directory} is damaged: {err}; falling back to the previous "
                              f"checkpoint {candidates[i + 1]}", stacklevel=2)
    raise CheckpointError("no loadable checkpoint in " + str(path) + ": " + "; ".join(errors)
                          + (". Delete the damaged one to start over, or resume from an older copy."))
