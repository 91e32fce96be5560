"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.training.compute.acceleration`."""
from .compute.acceleration import *  # noqa: F401,F403
from .compute.acceleration import __all__  # noqa: F401
