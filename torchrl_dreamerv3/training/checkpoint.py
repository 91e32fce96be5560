"""Checkpoints: learner (model, slow critic, return normaliser), optimiser, counters, RNG, replay (opt-in)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint_dir"]

STATE_FILE = "state.pt"
REPLAY_DIR = "replay"


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


def save_checkpoint(directory: str | os.PathLike, *, learner, counters: dict, ratio, replay=None) -> Path:
    """Writes ``state.pt`` (atomically: a temporary file, then a rename) and, if given, the replay buffer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "learner": learner.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "ratio": ratio.state_dict(),
        "counters": dict(counters),
        "rng": _rng_state(),
        "has_replay": replay is not None,
    }
    if replay is not None:
        replay.dumps(directory / REPLAY_DIR)
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / STATE_FILE)
    return directory


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """Accepts a run directory or its ``checkpoint`` directory."""
    path = Path(path)
    for candidate in (path, path / "checkpoint"):
        if (candidate / STATE_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"no checkpoint ({STATE_FILE}) found in {path} or {path / 'checkpoint'}")


def load_checkpoint(path: str | os.PathLike, *, learner, ratio, replay=None) -> dict:
    """Restores what :func:`save_checkpoint` wrote; returns the counters."""
    directory = resolve_checkpoint_dir(path)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    learner.load_state_dict(state["learner"])
    learner.optimizer.load_state_dict(state["optimizer"])
    ratio.load_state_dict(state["ratio"])
    _set_rng_state(state["rng"])
    if replay is not None and state["has_replay"]:
        replay.loads(directory / REPLAY_DIR)
    return {**state["counters"], "replay_restored": bool(replay is not None and state["has_replay"])}
