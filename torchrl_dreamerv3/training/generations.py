"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.agent.generations`."""
from ..agent.generations import *  # noqa: F401,F403
from ..agent.generations import __all__  # noqa: F401
