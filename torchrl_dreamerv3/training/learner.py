"""One complete DreamerV3 update: world model, imagination, actor, critic, optimiser, slow critic."""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import SoftUpdate

from ..modules import DreamerV3Modules
from ..objectives import ActorLoss, ValueLoss, WorldModelLoss
from ..optim import LaProp
from ..replay import split_context

__all__ = ["DreamerV3Learner"]


class DreamerV3Learner(nn.Module):
    """Owns the three losses, the single LaProp optimiser over every module and the slow-critic updater.

    ``update(window)`` takes a replay window ``(B, T + 1)`` (row 0 = stored context), runs
    world model -> imagination/actor -> critic losses, one backward pass through their sum, the
    optimiser step and the slow-critic EMA, and returns ``(metrics, latents)``: detached scalar
    metrics and the recomputed posterior ``deter``/``stoch`` of rows ``1..T`` for the replay
    to write back. No graph or activation outlives the call.

    Args:
        modules: the agent's modules (see :func:`~torchrl_dreamerv3.modules.make_dreamerv3`).
        loss_kwargs: per-loss keyword overrides, e.g. ``{"world_model": {"rep": 0.1}, "actor": {"horizon": 15}}``.
        opt_kwargs: :class:`~torchrl_dreamerv3.optim.LaProp` arguments (``lr``, ``agc``, ``warmup``, ...).
        slow_rate: slow-critic EMA rate (0.02).
    """

    def __init__(self, modules: DreamerV3Modules, *, loss_kwargs: dict | None = None,
                 opt_kwargs: dict | None = None, slow_rate: float = 0.02):
        super().__init__()
        loss_kwargs = loss_kwargs or {}
        unknown = set(loss_kwargs) - {"world_model", "actor", "value"}
        if unknown:
            raise ValueError(f"loss_kwargs has unknown groups {sorted(unknown)}; use world_model, actor, value")
        self.modules_ = modules
        m = modules
        self.world_model_loss = WorldModelLoss(m.world_model, m.obs_keys, unimix=m.cfg.unimix,
                                               **loss_kwargs.get("world_model", {}))
        self.actor_loss = ActorLoss(m.actor, m.critic, m.reward, m.cont, m.imagine_step, **loss_kwargs.get("actor", {}))
        self.value_loss = ValueLoss(m.critic, **loss_kwargs.get("value", {}))
        self.slow_critic = SoftUpdate(self.value_loss, tau=slow_rate)
        # One optimiser over every trainable parameter of the agent, as the reference does.
        self.optimizer = LaProp(m.parameters(), **(opt_kwargs or {}))

    def losses(self, window: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """Forward pass only: ``(loss/metric tensordict, step-layout data)``."""
        data = split_context(window)
        outputs = [self.world_model_loss(data), self.actor_loss(data), self.value_loss(data)]
        merged = TensorDict({}, batch_size=[])
        for prefix, out in zip(("world_model", "actor", "value"), outputs):
            for key, value in out.items():
                merged.set(key if key.startswith("loss_") else f"{prefix}/{key}", value)
        return merged, data

    def update(self, window: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        losses, data = self.losses(window)
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.slow_critic.step()
        keys = self.modules_.keys
        latents = data.select(keys.deter, keys.stoch).detach()
        metrics = losses.detach()
        metrics.set("loss", total.detach())
        metrics.set("opt/grad_norm", self.optimizer.last_grad_norm)
        metrics.set("opt/lr", torch.as_tensor(self.optimizer.current_lr()))
        return metrics, latents
