"""The RSSM: V3's block-GRU model, and V1/V2's dense-cell model with a categorical or Gaussian latent."""
from .core import BlockGRU, scale_action
from .dense import DENSE_CELLS, DenseRSSM, make_cell
from .latents import CategoricalLatent, GaussianLatent, make_latent
from .rssm import RSSM

__all__ = ["BlockGRU", "CategoricalLatent", "DENSE_CELLS", "DenseRSSM", "GaussianLatent", "RSSM", "make_cell",
           "make_latent", "scale_action"]
