"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.training.collection.ratio`."""
from .collection.ratio import *  # noqa: F401,F403
from .collection.ratio import __all__  # noqa: F401
