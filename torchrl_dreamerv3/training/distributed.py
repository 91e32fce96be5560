"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.training.compute.distributed`."""
from .compute.distributed import *  # noqa: F401,F403
from .compute.distributed import __all__  # noqa: F401
