"""Stops a run at the first non-finite observation or reward, before it reaches the replay."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

__all__ = ["NonFiniteError", "check_finite"]


class NonFiniteError(ValueError):
    """A collected entry holds NaN or inf."""


def _name(key: NestedKey) -> str:
    return ".".join(key) if isinstance(key, tuple) else str(key)


def check_finite(batch: TensorDictBase, keys: Iterable[NestedKey], env_step: int) -> None:
    """Raises :class:`NonFiniteError` naming the key, the env step and the value when a floating entry of
    ``batch`` (a collected ``(envs, time)`` or ``(time,)`` batch) is NaN or inf.

    ``env_step``: the env steps counted before this batch; the message gives the step of the first bad row
    (rows in time order, envs interleaved, as the loop counts them). Integer and bool entries are skipped.
    Call it before ``replay.extend``: the replay (and a checkpoint of it) stays clean.
    """
    for key in keys:
        value = batch.get(key, None)
        if value is None or not torch.is_floating_point(value):
            continue
        rows = value.reshape(*batch.shape, -1)
        rows = rows if batch.batch_dims > 1 else rows.unsqueeze(0)  # (envs, time, features)
        finite = torch.isfinite(rows)
        if bool(finite.all()):
            continue
        envs, steps = rows.shape[:2]
        env, time = (int(i) for i in (~finite.all(-1)).nonzero()[0])
        sample = rows[env, time][~finite[env, time]][0].item()
        raise NonFiniteError(f"{_name(key)} is not finite ({sample}) at env step {env_step + time * envs + env + 1} "
                             f"(env {env} of the batch's {envs}, step {time} of {steps}); the run stops "
                             "before it reaches the replay. Check the env or its transforms")
