"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.agent.learner`."""
from ..agent.learner import *  # noqa: F401,F403
from ..agent.learner import __all__  # noqa: F401
