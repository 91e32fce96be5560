"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.training.collection.environment`."""
from .collection.environment import *  # noqa: F401,F403
from .collection.environment import __all__  # noqa: F401
