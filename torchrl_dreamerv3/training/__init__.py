"""Glue: the training loop (``loop``, ``run``, ``setup``), and in rooms by concern ``collection/``,
``persistence/``, ``compute/`` and ``reporting/``. The update and the generation registry live in
:mod:`torchrl_dreamerv3.agent`, the replay in :mod:`torchrl_dreamerv3.replay`."""
from ..agent.generations import GENERATION_SPECS, GenerationSpec, generation_spec
from ..agent.learner import DreamerLearner, DreamerV3Learner
from .collection.ratio import TrainRatio


def train(cfg, env_fn=None, behaviour_actor=None):
    """Runs the training loop of :mod:`torchrl_dreamerv3.training.loop` (imported lazily: it pulls in envs)."""
    from .loop import train as _train

    return _train(cfg, env_fn=env_fn, behaviour_actor=behaviour_actor)


__all__ = ["DreamerLearner", "DreamerV3Learner", "GENERATION_SPECS", "GenerationSpec", "TrainRatio", "generation_spec", "train"]
