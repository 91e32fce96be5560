"""DreamerV3's world-model loss: reconstruction, reward, continue and the dyn/rep KL (SPEC §3.4, §4.2, §6.1).

DreamerV1 and DreamerV2 have their own (:mod:`.dreamerv1`, :mod:`.dreamerv2`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from ..functional import binary_nll, dyn_rep_kl, symlog, twohot_nll
from .world_model_base import WorldModelLossBase, categorical_metrics

__all__ = ["WorldModelLoss"]


class WorldModelLoss(WorldModelLossBase):
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
        super().__init__(world_model, obs_keys)
        self.scales = dict(rec=rec, rew=rew, con=con, dyn=dyn, rep=rep)
        self.free_nats, self.unimix, self.horizon = free_nats, unimix, horizon

    def _rec_target(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self._image_target(target, pred) if target.dtype == torch.uint8 else symlog(target.to(pred.dtype))

    def _rec_error(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target, reduction="none")

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        td = self.world_model(tensordict)
        keys = self.tensor_keys
        metrics: dict[str, torch.Tensor] = {}
        reward = self._get(td, keys.reward).reshape(td.batch_size)
        reward_logits = self._get(td, keys.reward_logits)
        terms = dict(rec=self._reconstruction(td, metrics))
        terms["rew"] = twohot_nll(reward_logits, reward, self._bins(reward_logits.shape[-1], reward_logits))
        terminal = self._get(td, keys.is_terminal).reshape(td.batch_size)
        cont_target = (~terminal).to(reward.dtype) * (1.0 - 1.0 / self.horizon)
        terms["con"] = binary_nll(self._get(td, keys.cont_logits).reshape(td.batch_size), cont_target)
        post, prior = self._get(td, keys.post_logits), self._get(td, keys.prior_logits)
        terms["dyn"], terms["rep"] = dyn_rep_kl(post, prior, self.unimix, self.free_nats)
        categorical_metrics(post, prior, self.unimix, metrics)
        return self._scaled(terms, metrics)
