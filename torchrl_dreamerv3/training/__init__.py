"""Glue: the learner update, the train ratio, checkpoints and the training loop."""
from .generations import GENERATION_SPECS, GenerationSpec, generation_spec
from .learner import DreamerV3Learner
from .ratio import TrainRatio


def train(cfg, env_fn=None, behaviour_actor=None):
    """Runs the training loop of :mod:`torchrl_dreamerv3.training.loop` (imported lazily: it pulls in envs)."""
    from .loop import train as _train

    return _train(cfg, env_fn=env_fn, behaviour_actor=behaviour_actor)


__all__ = ["DreamerV3Learner", "GENERATION_SPECS", "GenerationSpec", "TrainRatio", "generation_spec", "train"]
