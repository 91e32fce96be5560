"""DreamerV3 (Hafner et al., Nature 2025) as TorchRL-native components.

Layers, imports flowing one way: ``functional`` (pure math) <- ``nets`` (tensor networks) <- ``rssm``
<- ``modules`` (TensorDictModules) <- ``objectives`` (LossModules) <- ``agent`` (the update of every
generation, its registry) <- ``training`` (the loop; collection, persistence, compute, reporting). ``replay``
(row layout, buffer, files) sits beside ``agent``. ``docs/architecture.md`` draws it.
"""
from .configs import compose_config
from .modules import (DreamerKeys, DreamerV3Modules, DreamerV3Policy, ModelConfig, make_dreamer, make_dreamerv3, make_state_primer,
                      model_config)
from .objectives import ActorLoss, ValueLoss, WorldModelLoss
from .optim import LaProp
from .replay import split_context
from .agent import DreamerLearner, DreamerV3Learner
from .training import train

__all__ = [
    "ActorLoss", "DreamerKeys", "DreamerLearner", "DreamerV3Learner", "DreamerV3Modules", "DreamerV3Policy", "LaProp",
    "ModelConfig", "ValueLoss", "WorldModelLoss", "compose_config", "make_dreamer", "make_dreamerv3", "make_state_primer",
    "model_config", "split_context", "train",
]
