"""Glue: the learner update and the training loop."""
from .learner import DreamerV3Learner

__all__ = ["DreamerV3Learner"]
