"""TorchRL LossModules of DreamerV3 (world model, actor, value) and of DreamerV1/V2 beside them."""
from .actor_loss import ActorLoss
from .common import ReturnNormalizer
from .dreamerv1 import DreamerV1ActorLoss, DreamerV1ValueLoss, DreamerV1WorldModelLoss
from .dreamerv2 import DreamerV2ActorLoss, DreamerV2ValueLoss, DreamerV2WorldModelLoss
from .imagination import imagine
from .value_loss import ValueLoss
from .world_model_loss import WorldModelLoss

__all__ = ["ActorLoss", "ReturnNormalizer", "ValueLoss", "WorldModelLoss", "imagine",
           "DreamerV1WorldModelLoss", "DreamerV1ActorLoss", "DreamerV1ValueLoss",
           "DreamerV2WorldModelLoss", "DreamerV2ActorLoss", "DreamerV2ValueLoss"]
