"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.replay.buffer`.

Here ``make_replay`` still takes a Hydra config (its plan's replay settings are made first).
"""
from ..replay.buffer import *  # noqa: F401,F403
from ..replay.buffer import __all__  # noqa: F401
from ..replay.buffer import ReplaySettings, make_replay as _make_replay


def make_replay(settings, scratch_dir=None):
    """:func:`torchrl_dreamerv3.replay.buffer.make_replay` of ``settings`` or of a config's plan."""
    if not isinstance(settings, ReplaySettings):
        from .plan import make_plan

        settings = make_plan(settings).replay
    return _make_replay(settings, scratch_dir=scratch_dir)
