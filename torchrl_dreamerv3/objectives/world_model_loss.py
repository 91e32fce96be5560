"""World-model loss: reconstruction, reward, continue and the KL (SPEC §3.4, §4.2, §6.1; SPEC_V1_V2 §1.3, §2.3).

DreamerV3 by default; the switches ``kl``, ``latent``, ``rec_loss``, ``head_dist``, ``cont`` and
``stop_grad_heads`` give DreamerV1 and DreamerV2 (see ``docs/dreamer_generations.md``).
"""
from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from ..functional import (
    binary_nll,
    categorical_entropy,
    categorical_kl,
    dyn_rep_kl,
    symlog,
    twohot_nll,
    unimix_log_probs,
)
from ..functional.gaussian import gaussian_kl
from ..functional.kl_balance import balanced_categorical_kl, balanced_gaussian_kl, joint_kl_loss
from ..functional.returns_v1v2 import unit_gaussian_nll
from .common import DreamerLossBase, check_choice

__all__ = ["WorldModelLoss", "KL_SCHEMES", "LATENTS", "REWARD_TRANSFORMS"]

#: ``dyn_rep`` (V3: two scaled terms, free nats per step), ``balanced`` (V2: one term, α to the
#: prior, free nats on batch means), ``joint`` (V1: one term, gradients to both sides).
KL_SCHEMES = ("dyn_rep", "balanced", "joint")
#: ``categorical`` logits ``[..., S, Cl]``; ``gaussian`` ``(mean, std)`` stacked as ``[..., S, 2]``.
LATENTS = ("categorical", "gaussian")
#: Applied to the reward target only: ``none`` (V1, V3, V2 DMC) or ``tanh`` (V2 Atari, ``clip_rewards``).
REWARD_TRANSFORMS = ("none", "tanh")


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

    DreamerV1/V2 switches (each default is DreamerV3):

    - ``kl="balanced"`` (V2) or ``"joint"`` (V1) replaces ``dyn``/``rep`` by one term ``kl``
      (scale ``kl_scale``): :func:`~torchrl_dreamerv3.functional.kl_balance.balanced_categorical_kl`
      (``kl_balance`` 0.8 of the gradient to the prior) or ``max(mean KL, free_nats)`` with both
      gradients; ``free_avg=True`` clamps the batch mean (V1/V2), ``False`` each step.
    - ``latent="gaussian"``: ``post_logits``/``prior_logits`` hold ``(mean, std)`` on the last
      axis; the KL is the diagonal-Gaussian one (``dyn_rep`` works too).
    - ``rec_loss="gaussian"``: unit-Gaussian NLL ``0.5 * SSE`` against ``x/255 - 0.5`` (images) and
      the raw value (vectors) -- the decoder predicts the mean in that space, no sigmoid.
    - ``head_dist="normal"``: the reward head's ``reward_logits`` is its mean; ``0.5 * (r - mean)^2``.
    - ``gamma``: continue target ``gamma * (1 - is_terminal)`` (V2 0.99/0.999); ``None`` uses
      ``1 - 1/horizon``. ``cont=False`` drops the term (V1's default, no pcont head).
    - ``stop_grad_heads``: head modules (decoder, reward, cont) re-run on detached ``deter``/``stoch``
      after the world model, so their losses do not reach the representation (V2's ``grad_heads``
      lists the others).
    - ``reward_transform="tanh"``: the reward head learns ``tanh(r)`` (V2 on Atari, training only:
      episode returns stay raw).

    Args:
        world_model: a module that reads the step-layout keys and writes ``post_logits``,
            ``prior_logits``, ``(reco, <obs key>)``, ``reward_logits`` and ``cont_logits``.
        obs_keys: observation keys to reconstruct; uint8 ones are images, others vectors.
        rec, rew, con, dyn, rep: loss scales (reference: 1, 1, 1, 1, 0.1).
        free_nats: KL floor (1.0). unimix: latent uniform mix used in the KL (0.01).
        horizon: folds the discount ``1 - 1/horizon`` into the continue target (333).
        kl ("dyn_rep"), latent ("categorical"), kl_scale (1.0), kl_balance (0.8), free_avg (True),
        rec_loss ("sse"), head_dist ("twohot"), gamma (None), cont (True), stop_grad_heads (()):
        the V1/V2 switches above.
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
        deter: NestedKey = "deter"
        stoch: NestedKey = "stoch"

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
        kl: str = "dyn_rep",
        latent: str = "categorical",
        kl_scale: float = 1.0,
        kl_balance: float = 0.8,
        free_avg: bool = True,
        rec_loss: str = "sse",
        head_dist: str = "twohot",
        gamma: float | None = None,
        cont: bool = True,
        stop_grad_heads: Sequence[TensorDictModuleBase] = (),
        reward_transform: str = "none",
    ):
        super().__init__()
        self.kl = check_choice("kl", kl, KL_SCHEMES)
        self.latent = check_choice("latent", latent, LATENTS)
        self.rec_loss = check_choice("rec_loss", rec_loss, ("sse", "gaussian"))
        self.head_dist = check_choice("head_dist", head_dist, ("twohot", "normal"))
        self.reward_transform = check_choice("reward_transform", reward_transform, REWARD_TRANSFORMS)
        if not 0.0 < kl_balance < 1.0:
            raise ValueError(f"kl_balance must be in (0, 1), got {kl_balance}")
        self.world_model = world_model
        self.obs_keys = list(obs_keys)
        self.scales = dict(rec=rec, rew=rew)
        if cont:
            self.scales["con"] = con
        self.scales.update(dict(dyn=dyn, rep=rep) if kl == "dyn_rep" else dict(kl=kl_scale))
        self.free_nats, self.unimix, self.horizon = free_nats, unimix, horizon
        self.kl_balance, self.free_avg, self.gamma, self.cont = kl_balance, free_avg, gamma, cont
        self.stop_grad_heads = nn.ModuleList(stop_grad_heads)

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
                if self.rec_loss == "gaussian":
                    target = target - 0.5  # V1/V2: input and target in [-0.5, 0.5]
            elif self.rec_loss == "gaussian":
                target = target.to(pred.dtype)  # V1/V2 vectors: raw values
            else:
                target = symlog(target.to(pred.dtype))
            # Summed over the event dims in place: decoded images are channels_last, and flattening
            # them first would copy the whole batch of images.
            if self.rec_loss == "gaussian":
                err = unit_gaussian_nll(pred, target)  # 0.5 * squared error per element
            else:
                err = F.mse_loss(pred, target, reduction="none")
            event_dims = tuple(range(batch_dims, err.ndim))
            per_step = err.sum(event_dims) if event_dims else err  # sum(()) would reduce every dim
            metrics[f"rec_{key if isinstance(key, str) else '_'.join(key)}"] = per_step.mean()
            total = total + per_step
        return total

    def _stop_grad_heads(self, td: TensorDictBase) -> TensorDictBase:
        """Re-runs the listed heads on detached features; their outputs replace the world model's."""
        if len(self.stop_grad_heads):
            keys = self.tensor_keys
            state = td.select(keys.deter, keys.stoch).detach()
            for head in self.stop_grad_heads:
                td.update(head(state.clone(False)).select(*head.out_keys))
        return td

    def _kl_terms(self, post: torch.Tensor, prior: torch.Tensor, metrics: dict) -> dict[str, torch.Tensor]:
        """``dyn``/``rep`` (V3) or one ``kl`` term (V2 balanced, V1 joint), plus the latent metrics."""
        gaussian = self.latent == "gaussian"
        if gaussian:
            (pm, ps), (qm, qs) = post.unbind(-1), prior.unbind(-1)  # [..., S] each
            kl_fn = gaussian_kl
            post_args, prior_args = (pm, ps), (qm, qs)
        if self.kl == "dyn_rep":
            if gaussian:
                dyn = gaussian_kl(pm.detach(), ps.detach(), qm, qs).clamp_min(self.free_nats)
                rep = gaussian_kl(pm, ps, qm.detach(), qs.detach()).clamp_min(self.free_nats)
            else:
                dyn, rep = dyn_rep_kl(post, prior, self.unimix, self.free_nats)
            terms = dict(dyn=dyn, rep=rep)
        elif self.kl == "balanced":
            args = dict(balance=self.kl_balance, free=self.free_nats, free_avg=self.free_avg)
            if gaussian:
                loss, _ = balanced_gaussian_kl(pm, ps, qm, qs, **args)
            else:
                loss, _ = balanced_categorical_kl(post, prior, **args)
            terms = dict(kl=loss)
        else:  # joint
            if gaussian:
                value = kl_fn(*post_args, *prior_args)
            else:
                value = categorical_kl(unimix_log_probs(post, self.unimix), unimix_log_probs(prior, self.unimix))
            terms = dict(kl=joint_kl_loss(value, self.free_nats, self.free_avg))
        with torch.no_grad():
            if gaussian:
                entropy = lambda std: (0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).sum(-1).mean()
                metrics["prior_entropy"], metrics["post_entropy"] = entropy(qs), entropy(ps)
                metrics["kl"] = gaussian_kl(pm, ps, qm, qs).mean()
            else:
                post_lp, prior_lp = unimix_log_probs(post, self.unimix), unimix_log_probs(prior, self.unimix)
                metrics["prior_entropy"] = categorical_entropy(prior_lp).sum(-1).mean()
                metrics["post_entropy"] = categorical_entropy(post_lp).sum(-1).mean()
                metrics["kl"] = categorical_kl(post_lp, prior_lp).mean()
        return terms

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        td = self._stop_grad_heads(self.world_model(tensordict))
        keys = self.tensor_keys
        metrics: dict[str, torch.Tensor] = {}
        reward = self._get(td, keys.reward).reshape(td.batch_size)
        if self.reward_transform == "tanh":  # V2 Atari: the reward head learns tanh(r); returns stay raw
            reward = torch.tanh(reward)
        reward_logits = self._get(td, keys.reward_logits)
        terms = dict(rec=self._reconstruction(td, metrics))
        if self.head_dist == "normal":
            terms["rew"] = unit_gaussian_nll(reward_logits.reshape(td.batch_size), reward)
        else:
            terms["rew"] = twohot_nll(reward_logits, reward, self._bins(reward_logits.shape[-1], reward_logits))
        if self.cont:
            terminal = self._get(td, keys.is_terminal).reshape(td.batch_size)
            gamma = 1.0 - 1.0 / self.horizon if self.gamma is None else self.gamma
            cont_target = (~terminal).to(reward.dtype) * gamma
            terms["con"] = binary_nll(self._get(td, keys.cont_logits).reshape(td.batch_size), cont_target)
        post, prior = self._get(td, keys.post_logits), self._get(td, keys.prior_logits)
        terms.update(self._kl_terms(post, prior, metrics))
        return self._scaled(terms, metrics)
