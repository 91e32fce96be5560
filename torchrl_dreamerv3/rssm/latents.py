"""The stochastic latent of an RSSM: how a dense output becomes distribution stats and a sample.

Two strategies with one interface, so :class:`~torchrl_dreamerv3.rssm.dense.DenseRSSM` needs no
``if latent == ...`` branches:

- :class:`CategoricalLatent` (V2, V3): ``stats`` are logits ``(..., S, Cl)``; the sample is a
  straight-through one-hot of the ``unimix``-ed categoricals (V2: ``unimix=0``).
- :class:`GaussianLatent` (V1, V2's ``discrete: False``): ``stats`` are ``(mean, std)`` stacked on
  the last axis, ``(..., S, 2)``, with ``std = act(raw) + min_std`` already applied; the sample is
  ``mean + std * eps`` shaped ``(..., S, 1)`` so that every ``stoch.flatten(-2)`` in the code base
  still gives the ``S * Cl`` features (``Cl = 1``).
"""
from __future__ import annotations

import torch

from ..functional import sample_unimix_onehot
from ..functional.gaussian import STD_ACTS, gaussian_rsample, gaussian_stats

__all__ = ["CategoricalLatent", "GaussianLatent", "make_latent"]


class CategoricalLatent:
    """``S`` categoricals with ``Cl`` classes each."""

    def __init__(self, stoch: int, classes: int, unimix: float = 0.01):
        self.stoch, self.classes, self.unimix = stoch, classes, unimix
        self.stats_features = stoch * classes  # size of the dense layer that emits the stats

    def stats(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.stoch, self.classes))

    def sample(self, stats: torch.Tensor) -> torch.Tensor:
        return sample_unimix_onehot(stats, self.unimix)

    def __repr__(self) -> str:
        return f"CategoricalLatent(stoch={self.stoch}, classes={self.classes}, unimix={self.unimix})"


class GaussianLatent:
    """``S``-dimensional diagonal Gaussian; ``classes`` is 1 by construction."""

    classes = 1

    def __init__(self, stoch: int, std_act: str = "softplus", min_std: float = 0.1):
        if std_act not in STD_ACTS:
            raise ValueError(f"unknown std_act {std_act!r}; choose one of {STD_ACTS}")
        self.stoch, self.std_act, self.min_std = stoch, std_act, min_std
        self.stats_features = 2 * stoch  # Dense(2S) split as (mean, std_raw), as the reference

    def stats(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = gaussian_stats(x, self.std_act, self.min_std)
        return torch.stack([mean, std], -1)

    def sample(self, stats: torch.Tensor) -> torch.Tensor:
        mean, std = stats.unbind(-1)
        return gaussian_rsample(mean, std).unsqueeze(-1)

    def __repr__(self) -> str:
        return f"GaussianLatent(stoch={self.stoch}, std_act={self.std_act!r}, min_std={self.min_std})"


def make_latent(kind: str, stoch: int, classes: int, unimix: float, std_act: str, min_std: float):
    if kind == "categorical":
        return CategoricalLatent(stoch, classes, unimix)
    if kind == "gaussian":
        if classes != 1:
            raise ValueError(f"latent='gaussian' needs classes=1 (stoch={stoch} is the number of dims), got {classes}")
        return GaussianLatent(stoch, std_act, min_std)
    raise ValueError(f"unknown latent {kind!r}; choose one of ('categorical', 'gaussian')")
