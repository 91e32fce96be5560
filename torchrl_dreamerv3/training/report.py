"""Deprecated path, kept for imports written before the move: the code lives in :mod:`torchrl_dreamerv3.training.reporting.report`."""
from .reporting.report import *  # noqa: F401,F403
from .reporting.report import __all__  # noqa: F401
