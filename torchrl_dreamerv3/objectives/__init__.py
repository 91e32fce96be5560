"""TorchRL LossModules of DreamerV3: world model, actor and value."""
from .actor_loss import ActorLoss, ReturnNormalizer, imagine
from .value_loss import ValueLoss
from .world_model_loss import WorldModelLoss

__all__ = ["ActorLoss", "ReturnNormalizer", "ValueLoss", "WorldModelLoss", "imagine"]
