"""The RSSM: block-GRU core, prior, posterior, observe and imagine steps."""
from .core import BlockGRU, scale_action
from .rssm import RSSM

__all__ = ["BlockGRU", "RSSM", "scale_action"]
