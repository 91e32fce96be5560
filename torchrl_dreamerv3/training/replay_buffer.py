"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.replay.buffer`."""
from ..replay.buffer import *  # noqa: F401,F403
from ..replay.buffer import __all__  # noqa: F401
