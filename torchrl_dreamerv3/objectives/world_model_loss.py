"""World-model loss: reconstruction, reward, continue and the dyn/rep KL pair (SPEC §3.4, §4.2, §6.1)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from ..functional import (
    binary_nll,
    categorical_entropy,
    categorical_kl,
    dyn_rep_kl,
    symlog,
    twohot_nll,
    unimix_log_probs,
)
from .common import DreamerLossBase

__all__ = ["WorldModelLoss"]


class WorldModelLoss(DreamerLossBase):
    """Runs the world model over a ``(B, T)`` sequence and returns its five scaled losses.

    The input is in step layout (see :func:`torchrl_dreamerv3.replay.split_context`): observations,
    ``reward`` (the reward that arrived with each observation), ``is_terminal``, ``is_first``,
    ``prev_action`` and the carry ``prev_deter``/``prev_stoch``. The world model writes the posterior
    ``deter``/``stoch`` into the input, where the actor and value losses read them next.

    Terms, each averaged over ``(B, T)`` and multiplied by its scale:

    - ``rec``: images ``sum_{c,h,w} (sigmoid_out - x/255)^2``; vectors ``sum_d (pred - symlog(x))^2``.
    - ``rew``: twohot NLL of the raw reward.
    - ``con``: Bernoulli NLL with the soft target ``(1 - is_terminal) * (1 - 1/horizon)``.
    - ``dyn`` / ``rep``: ``max(free_nats, KL)`` summed over latents, with the stop-gradient on the
      posterior / prior side respectively.

    Args:
        world_model: a module that reads the step-layout keys and writes ``post_logits``,
            ``prior_logits``, ``(reco, <obs key>)``, ``reward_logits`` and ``cont_logits``.
        obs_keys: observation keys to reconstruct; uint8 ones are images, others vectors.
        rec, rew, con, dyn, rep: loss scales (reference: 1, 1, 1, 1, 0.1).
        free_nats: KL floor (1.0). unimix: latent uniform mix used in the KL (0.01).
        horizon: folds the discount ``1 - 1/horizon`` into the continue target (333).
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys read or written by the loss."""

        reward: NestedKey = "reward"
        is_terminal: NestedKey = "is_terminal"
        post_logits: NestedKey = "post_logits"
        prior_logits: NestedKey = "prior_logits"
        reward_logits: NestedKey = "reward_logits"
        cont_logits: NestedKey = "cont_logits"
        reco: NestedKey = "reco"

    default_keys = _AcceptedKeys
    world_model: TensorDictModuleBase

    def __init__(
        self,
        world_model: TensorDictModuleBase,
        obs_keys: Sequence[NestedKey],
        *,
        rec: float = 1.0,
        rew: float = 1.0,
        con: float = 1.0,
        dyn: float = 1.0,
        rep: float = 0.1,
        free_nats: float = 1.0,
        unimix: float = 0.01,
        horizon: float = 333.0,
    ):
        super().__init__()
        self.world_model = world_model
        self.obs_keys = list(obs_keys)
        self.scales = dict(rec=rec, rew=rew, con=con, dyn=dyn, rep=rep)
        self.free_nats, self.unimix, self.horizon = free_nats, unimix, horizon

    def _reco_key(self, obs_key: NestedKey) -> NestedKey:
        prefix = self.tensor_keys.reco
        prefix = prefix if isinstance(prefix, tuple) else (prefix,)
        return (*prefix, *(obs_key if isinstance(obs_key, tuple) else (obs_key,)))

    def _reconstruction(self, td: TensorDictBase, metrics: dict) -> torch.Tensor:
        total = 0.0
        batch_dims = td.batch_dims
        for key in self.obs_keys:
            target, pred = self._get(td, key), self._get(td, self._reco_key(key))
            if target.dtype == torch.uint8:
                # x.float() / 255, written straight into the decoded image's memory layout
                # (channels_last) so that the loss below runs on matching strides.
                scaled = torch.empty_like(pred, dtype=torch.float32)
                target = torch.div(target, 255.0, out=scaled).to(pred.dtype)
            else:
                target = symlog(target.to(pred.dtype))
            # Summed over the event dims in place: decoded images are channels_last, and flattening
            # them first would copy the whole batch of images.
            err = F.mse_loss(pred, target, reduction="none")
            event_dims = tuple(range(batch_dims, err.ndim))
            per_step = err.sum(event_dims) if event_dims else err  # sum(()) would reduce every dim
            metrics[f"rec_{key if isinstance(key, str) else '_'.join(key)}"] = per_step.mean()
            total = total + per_step
        return total

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        td = self.world_model(tensordict)
        keys = self.tensor_keys
        metrics: dict[str, torch.Tensor] = {}
        reward = self._get(td, keys.reward).reshape(td.batch_size)
        reward_logits = self._get(td, keys.reward_logits)
        terminal = self._get(td, keys.is_terminal).reshape(td.batch_size)
        cont_target = (~terminal).to(reward.dtype) * (1.0 - 1.0 / self.horizon)
        post, prior = self._get(td, keys.post_logits), self._get(td, keys.prior_logits)
        dyn, rep = dyn_rep_kl(post, prior, self.unimix, self.free_nats)
        terms = dict(
            rec=self._reconstruction(td, metrics),
            rew=twohot_nll(reward_logits, reward, self._bins(reward_logits.shape[-1], reward_logits)),
            con=binary_nll(self._get(td, keys.cont_logits).reshape(td.batch_size), cont_target),
            dyn=dyn,
            rep=rep,
        )
        with torch.no_grad():
            post_lp, prior_lp = unimix_log_probs(post, self.unimix), unimix_log_probs(prior, self.unimix)
            metrics["prior_entropy"] = categorical_entropy(prior_lp).sum(-1).mean()
            metrics["post_entropy"] = categorical_entropy(post_lp).sum(-1).mean()
            metrics["kl"] = categorical_kl(post_lp, prior_lp).mean()
        return self._scaled(terms, metrics)
