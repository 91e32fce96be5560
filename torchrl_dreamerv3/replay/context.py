"""Replay layout <-> the step layout the losses read (SPEC §8.2, replay context 1).

A replay row ``t`` holds what the collector wrote at step ``t``: the observation, ``is_first``,
``is_last``, ``is_terminal``, the action the policy chose after seeing it, the policy's posterior
``deter``/``stoch``, and ``("next", "reward")``, the reward that arrived with the *next*
observation. Training windows are ``T + 1`` rows long; row 0 is the context.
"""
from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.utils import NestedKey

__all__ = ["split_context", "CONTEXTS"]

#: How the first step of a window is seeded: ``replay`` (V3: the stored latents of row 0),
#: ``zero`` (V1: zero state, the true previous action), ``first`` (V2: ``is_first`` is set on the
#: first step, so the RSSM zeroes state *and* previous action).
CONTEXTS = ("replay", "zero", "first")


def split_context(window: TensorDictBase, *, action: NestedKey = "action", deter: NestedKey = "deter",
                  stoch: NestedKey = "stoch", reward: NestedKey = ("next", "reward"),
                  prev_action: NestedKey = "prev_action", prev_deter: NestedKey = "prev_deter",
                  prev_stoch: NestedKey = "prev_stoch", out_reward: NestedKey = "reward",
                  is_first: NestedKey = "is_first", keys=None, context: str = "replay") -> TensorDictBase:
    """Turns a ``(..., T + 1)`` replay window into the ``(..., T)`` step layout of the losses.

    Rows ``1..T`` keep their observations and flags; each gets from the row before it the
    ``prev_action``, the carry ``prev_deter``/``prev_stoch`` (only the first one seeds the
    recurrence) and ``out_reward``, the reward that arrived with its observation.

    Args:
        action, deter, stoch, reward: the replay's names of these entries.
        prev_action, prev_deter, prev_stoch, out_reward, is_first: names written in (or, for
            ``is_first``, updated in) the step layout.
        keys: a :class:`~torchrl_dreamerv3.modules.DreamerKeys`; when given, its ``action``,
            ``deter``, ``stoch``, ``prev_*`` and ``is_first`` names override the arguments above.
        context: ``replay`` (V3, default), ``zero`` (V1: the first step starts from a zero state
            with the true previous action) or ``first`` (V2: ``is_first`` is set on the first step).
    """
    if keys is not None:
        action, deter, stoch, is_first = keys.action, keys.deter, keys.stoch, keys.is_first
        prev_action, prev_deter, prev_stoch = keys.prev_action, keys.prev_deter, keys.prev_stoch
    if context not in CONTEXTS:
        raise ValueError(f"unknown context {context!r}; choose one of {CONTEXTS}")
    if window.batch_dims < 1 or window.shape[-1] < 2:
        raise ValueError(f"split_context needs windows of at least 2 steps on the last batch dim, got {tuple(window.shape)}")
    before = window[..., :-1]
    data = window[..., 1:].exclude("next")
    data.set(prev_action, before.get(action))
    data.set(prev_deter, before.get(deter))
    data.set(prev_stoch, before.get(stoch))
    data.set(out_reward, before.get(reward))
    if context == "zero":
        # Only the first step reads the carry (the recurrence supplies the rest), so zeros everywhere are equivalent.
        data.set(prev_deter, data.get(prev_deter).new_zeros(data.get(prev_deter).shape))
        data.set(prev_stoch, data.get(prev_stoch).new_zeros(data.get(prev_stoch).shape))
    elif context == "first":
        flags = data.get(is_first).clone()
        flags[(slice(None),) * (data.batch_dims - 1) + (0,)] = True  # time is the last batch dim
        data.set(is_first, flags)
    return data
