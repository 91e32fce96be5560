"""DreamerV3 (Hafner et al., Nature 2025) as TorchRL-native components.

Layers, imports flowing one way: ``functional`` (pure math) <- ``nets`` (tensor networks) <- ``rssm``
<- ``modules`` (TensorDictModules) <- ``objectives`` (LossModules) <- ``training`` (glue).
"""
from .configs import compose_config
from .modules import DreamerKeys, DreamerV3Modules, DreamerV3Policy, ModelConfig, make_dreamerv3, make_state_primer, model_config
from .objectives import ActorLoss, ValueLoss, WorldModelLoss
from .optim import LaProp
from .replay import split_context
from .training import train
from .agent import DreamerV3Learner

__all__ = [
    "ActorLoss", "DreamerKeys", "DreamerV3Learner", "DreamerV3Modules", "DreamerV3Policy", "LaProp",
    "ModelConfig", "ValueLoss", "WorldModelLoss", "compose_config", "make_dreamerv3", "make_state_primer",
    "model_config", "split_context", "train",
]
