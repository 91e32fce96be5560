"""Deprecated path, kept for imports written before the move: the code lives in
:mod:`torchrl_dreamerv3.training.collection.environment`.

Here ``make_collector`` still takes a Hydra config (its plan's collection settings are made first).
"""
from .collection.environment import *  # noqa: F401,F403
from .collection.environment import __all__  # noqa: F401
from .collection.environment import CollectionSettings, make_collector as _make_collector


def make_collector(settings, make, env, policy, device, version=None):
    """:func:`torchrl_dreamerv3.training.collection.environment.make_collector` of ``settings`` or of a config's plan."""
    if not isinstance(settings, CollectionSettings):
        from .plan import make_plan

        settings = make_plan(settings, device).collection
    return _make_collector(settings, make, env, policy, device, version=version)
