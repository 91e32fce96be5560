"""Replay layout <-> the step layout the losses read (SPEC §8.2, replay context 1).

A replay row ``t`` holds what the collector wrote at step ``t``: the observation, ``is_first``,
``is_last``, ``is_terminal``, the action the policy chose after seeing it, the policy's posterior
``deter``/``stoch``, and ``("next", "reward")``, the reward that arrived with the *next*
observation. Training windows are ``T + 1`` rows long; row 0 is the context.
"""
from __future__ import annotations

from tensordict import TensorDictBase

__all__ = ["split_context"]


def split_context(window: TensorDictBase, *, action="action", deter="deter", stoch="stoch",
                  reward=("next", "reward")) -> TensorDictBase:
    """Turns a ``(..., T + 1)`` replay window into the ``(..., T)`` step layout of the losses.

    Rows ``1..T`` keep their observations and flags; each gets from the row before it the
    ``prev_action``, the carry ``prev_deter``/``prev_stoch`` (only the first one seeds the
    recurrence) and ``reward``, the reward that arrived with its observation.
    """
    if window.batch_dims < 1 or window.shape[-1] < 2:
        raise ValueError(f"split_context needs windows of at least 2 steps on the last batch dim, got {tuple(window.shape)}")
    before = window[..., :-1]
    data = window[..., 1:].exclude("next")
    data.set("prev_action", before.get(action))
    data.set("prev_deter", before.get(deter))
    data.set("prev_stoch", before.get(stoch))
    data.set("reward", before.get(reward))
    return data
