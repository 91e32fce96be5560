"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.training.persistence.checkpoint`."""
from .persistence.checkpoint import *  # noqa: F401,F403
from .persistence.checkpoint import __all__  # noqa: F401
