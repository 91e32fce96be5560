"""What every generation's world-model loss shares: the model pass, the reconstruction sum, latent metrics."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from ..functional import categorical_entropy, categorical_kl, unimix_log_probs
from ..functional.gaussian import gaussian_kl
from .common import DreamerLossBase, WorldModelKeys, reco_key

__all__ = ["WorldModelLossBase", "categorical_metrics", "gaussian_metrics"]


class WorldModelLossBase(DreamerLossBase):
    """Reconstruction summed over each observation's event dims; subclasses give target and error.

    ``_rec_target(target, pred)`` maps the observation into the decoder's output space and
    ``_rec_error(pred, target)`` gives the per-element error.
    """

    _AcceptedKeys = WorldModelKeys
    default_keys = WorldModelKeys
    world_model: TensorDictModuleBase

    def __init__(self, world_model: TensorDictModuleBase, obs_keys: Sequence[NestedKey]):
        super().__init__()
        self.world_model = world_model
        self.obs_keys = list(obs_keys)

    @staticmethod
    def _image_target(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """``x / 255``, written straight into the decoded image's memory layout (channels_last), so that
        the loss runs on matching strides."""
        scaled = torch.empty_like(pred, dtype=torch.float32)
        return torch.div(target, 255.0, out=scaled).to(pred.dtype)

    def _rec_target(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rec_error(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _reconstruction(self, td: TensorDictBase, metrics: dict) -> torch.Tensor:
        total = 0.0
        batch_dims = td.batch_dims
        for key in self.obs_keys:
            pred = self._get(td, reco_key(self.tensor_keys.reco, key))
            err = self._rec_error(pred, self._rec_target(self._get(td, key), pred))
            # Summed over the event dims in place: decoded images are channels_last, and flattening
            # them first would copy the whole batch of images.
            event_dims = tuple(range(batch_dims, err.ndim))
            per_step = err.sum(event_dims) if event_dims else err  # sum(()) would reduce every dim
            metrics[f"rec_{key if isinstance(key, str) else '_'.join(key)}"] = per_step.mean()
            total = total + per_step
        return total


@torch.no_grad()
def categorical_metrics(post: torch.Tensor, prior: torch.Tensor, unimix: float, metrics: dict) -> None:
    """Prior and posterior entropy and the KL of categorical latents ``[..., S, Cl]``."""
    post_lp, prior_lp = unimix_log_probs(post, unimix), unimix_log_probs(prior, unimix)
    metrics["prior_entropy"] = categorical_entropy(prior_lp).sum(-1).mean()
    metrics["post_entropy"] = categorical_entropy(post_lp).sum(-1).mean()
    metrics["kl"] = categorical_kl(post_lp, prior_lp).mean()


@torch.no_grad()
def gaussian_metrics(post: torch.Tensor, prior: torch.Tensor, metrics: dict) -> None:
    """The same for diagonal Gaussian latents, ``(mean, std)`` stacked on the last axis."""
    (pm, ps), (qm, qs) = post.unbind(-1), prior.unbind(-1)
    entropy = lambda std: (0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).sum(-1).mean()  # noqa: E731
    metrics["prior_entropy"], metrics["post_entropy"] = entropy(qs), entropy(ps)
    metrics["kl"] = gaussian_kl(pm, ps, qm, qs).mean()
