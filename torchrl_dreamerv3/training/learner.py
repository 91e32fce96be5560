"""One complete Dreamer update: world model, imagination, actor, critic, optimiser(s), slow critic.

DreamerV3 by default (one LaProp over every module, EMA slow critic, replay context). The
options ``optimizer``, ``critic_target`` and ``context`` with the per-loss switches give DreamerV1
and DreamerV2 (SPEC_V1_V2 §1.5, §2.4-§2.6; ``configs/algo/*.yaml``).
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import HardUpdate, SoftUpdate

from ..modules import DreamerV3Modules
from ..objectives import ActorLoss, ValueLoss, WorldModelLoss
from ..objectives.common import check_choice
from ..optim import GroupAdam, LaProp
from ..replay import CONTEXTS, split_context

__all__ = ["DreamerV3Learner", "OPTIMIZERS", "CRITIC_TARGETS", "GRAD_HEADS"]

#: ``laprop``: one LaProp over every module (V3); ``adam3``: one Adam per group (V1/V2).
OPTIMIZERS = ("laprop", "adam3")
#: ``ema``: SoftUpdate every update (V3); ``hard``: a copy at update 0 and every ``hard_interval``
#: updates (V2); ``online``: no slow critic in use (V1).
CRITIC_TARGETS = ("ema", "hard", "online")
#: Heads that ``grad_heads`` may list (V2: the heads whose loss reaches the representation).
GRAD_HEADS = ("decoder", "reward", "cont")


def _agent_keys(loss: nn.Module, keys) -> dict:
    """The agent's key names for every key ``loss`` accepts under the same field name."""
    accepted = {f.name for f in dataclasses.fields(loss._AcceptedKeys)}
    return {f.name: getattr(keys, f.name) for f in dataclasses.fields(keys) if f.name in accepted}


class DreamerV3Learner(nn.Module):
    """Owns the three losses, the optimiser(s) and the slow-critic updater.

    ``update(window)`` takes a replay window ``(B, T + 1)`` (row 0 = stored context), runs
    world model -> imagination/actor -> critic losses, the backward pass(es), the optimiser step
    and the slow-critic update, and returns ``(metrics, latents)``: detached scalar metrics and
    the recomputed posterior ``deter``/``stoch`` of rows ``1..T`` for the replay to write back.
    No graph or activation outlives the call. The losses read and write the agent's key names
    (``modules.keys``), so agents built with renamed :class:`~torchrl_dreamerv3.modules.DreamerKeys` train too.

    Args:
        modules: the agent's modules (see :func:`~torchrl_dreamerv3.modules.make_dreamerv3`). Its
            config's ``latent``, ``head_dist`` and ``cont_head`` (when present) set the matching loss options.
        loss_kwargs: per-loss keyword overrides, e.g. ``{"world_model": {"rep": 0.1}, "actor": {"horizon": 15}}``.
            ``world_model`` also takes ``grad_heads`` (names from :data:`GRAD_HEADS`; the others are
            trained on detached features).
        opt_kwargs: :class:`~torchrl_dreamerv3.optim.LaProp` arguments (``lr``, ``agc``, ``warmup``, ...),
            or for ``adam3`` :class:`~torchrl_dreamerv3.optim.GroupAdam` ones: ``model_lr``,
            ``actor_lr``, ``critic_lr``, ``eps``, ``clip``, ``weight_decay``.
        slow_rate: slow-critic EMA rate (0.02; ``critic_target="ema"``).
        optimizer: ``laprop`` (V3: one backward pass through the sum of the losses) or ``adam3``
            (V1/V2: each loss is backpropagated into its own group only, so e.g. the actor's
            dynamics-backprop gradient never reaches the world model).
        critic_target: ``ema`` | ``hard`` | ``online`` (see :data:`CRITIC_TARGETS`).
        hard_interval: updates between hard copies (V2: 100).
        context: how a window's first step is seeded (``replay`` | ``zero`` | ``first``, see
            :func:`~torchrl_dreamerv3.replay.split_context`).
    """

    def __init__(self, modules: DreamerV3Modules, *, loss_kwargs: dict | None = None,
                 opt_kwargs: dict | None = None, slow_rate: float = 0.02, optimizer: str = "laprop",
                 critic_target: str = "ema", hard_interval: int = 100, context: str = "replay"):
        super().__init__()
        loss_kwargs = loss_kwargs or {}
        unknown = set(loss_kwargs) - {"world_model", "actor", "value"}
        if unknown:
            raise ValueError(f"loss_kwargs has unknown groups {sorted(unknown)}; use world_model, actor, value")
        self.optimizer_name = check_choice("optimizer", optimizer, OPTIMIZERS)
        self.critic_target = check_choice("critic_target", critic_target, CRITIC_TARGETS)
        self.context = check_choice("context", context, CONTEXTS)
        if hard_interval < 1:
            raise ValueError(f"hard_interval must be >= 1, got {hard_interval}")
        self.hard_interval = hard_interval
        self.modules_ = modules
        # The loss forward runs inside this context (training/acceleration.py sets bf16 autocast);
        # backward and the optimiser step run outside it, in float32.
        self.forward_context = contextlib.nullcontext
        m = modules
        latent = getattr(m.cfg, "latent", "categorical")
        head_dist = getattr(m.cfg, "head_dist", "twohot")
        cont_head = getattr(m.cfg, "cont_head", True)

        wm_kwargs = dict(loss_kwargs.get("world_model", {}))
        grad_heads = wm_kwargs.pop("grad_heads", None)
        if grad_heads is not None:
            bad = set(grad_heads) - set(GRAD_HEADS)
            if bad:
                raise ValueError(f"grad_heads has unknown heads {sorted(bad)}; choose from {GRAD_HEADS}")
            heads = dict(decoder=m.decoder, reward=m.reward, cont=m.cont if cont_head else None)
            wm_kwargs["stop_grad_heads"] = [h for name, h in heads.items() if name not in grad_heads and h is not None]
        wm_kwargs = dict(dict(unimix=m.cfg.unimix, latent=latent, head_dist=head_dist, cont=cont_head), **wm_kwargs)
        actor_kwargs = dict(loss_kwargs.get("actor", {}))
        value_kwargs = dict(head_dist=head_dist, slow_critic=critic_target != "online")
        value_loss = ValueLoss(m.critic, **dict(value_kwargs, **loss_kwargs.get("value", {})))
        if actor_kwargs.get("critic_for_targets", "online") == "slow":
            if critic_target == "online":
                raise ValueError("critic_for_targets='slow' needs a slow critic: critic_target='hard' or 'ema'")
            actor_kwargs.setdefault("target_critic", value_loss.slow_critic)
        if optimizer == "laprop" and actor_kwargs.get("actor_grad", "reinforce") != "reinforce":
            raise ValueError("actor_grad='dynamics'/'both' backpropagates the actor loss through the world model; "
                             "use optimizer='adam3', which steps each loss's own parameters only")

        self.world_model_loss = WorldModelLoss(m.world_model, m.obs_keys, **wm_kwargs)
        self.actor_loss = ActorLoss(m.actor, m.critic, m.reward, m.cont if cont_head else None, m.imagine_step,
                                    **actor_kwargs)
        self.value_loss = value_loss
        for loss in (self.world_model_loss, self.actor_loss, self.value_loss):
            loss.set_keys(**_agent_keys(loss, m.keys))

        if critic_target == "ema":
            self.slow_critic = SoftUpdate(self.value_loss, tau=slow_rate)
        elif critic_target == "hard":
            # interval 0: every step() copies; update() calls it at update 0 and every hard_interval updates.
            self.slow_critic = HardUpdate(self.value_loss, value_network_update_interval=0)
            self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))
        else:
            self.slow_critic = None

        if optimizer == "laprop":
            # One optimiser over every trainable parameter of the agent, as the reference does.
            self.optimizer = LaProp(m.parameters(), **(opt_kwargs or {}))
        else:
            kw = dict(opt_kwargs or {})
            lr = {name: kw.pop(f"{name}_lr") for name in ("model", "actor", "critic") if f"{name}_lr" in kw}
            groups = self.param_groups()
            if set(lr) != set(groups):
                raise ValueError(f"optimizer='adam3' needs model_lr, actor_lr and critic_lr in opt_kwargs, got {sorted(lr)}")
            self.optimizer = GroupAdam(groups, lr, **kw)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``model`` (everything but actor and critic), ``actor``, ``critic``: the ``adam3`` groups."""
        m = self.modules_
        actor, critic = list(m.actor.parameters()), list(m.critic.parameters())
        taken = {id(p) for p in actor + critic}
        model = [p for p in m.parameters() if id(p) not in taken]
        return dict(model=model, actor=actor, critic=critic)

    def _split(self, window: TensorDictBase) -> TensorDictBase:
        return split_context(window, keys=self.modules_.keys, context=self.context)

    def _loss_outputs(self, window: TensorDictBase) -> tuple[list[TensorDictBase], TensorDictBase]:
        data = self._split(window)
        return [self.world_model_loss(data), self.actor_loss(data), self.value_loss(data)], data

    def losses(self, window: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        """Forward pass only: ``(loss/metric tensordict, step-layout data)``."""
        with self.forward_context():
            outputs, data = self._loss_outputs(window)
        return self._merge(outputs), data

    @staticmethod
    def _merge(outputs: list[TensorDictBase]) -> TensorDictBase:
        merged = TensorDict({}, batch_size=[])
        for prefix, out in zip(("world_model", "actor", "value"), outputs):
            for key, value in out.items():
                merged.set(key if key.startswith("loss_") else f"{prefix}/{key}", value)
        return merged

    def update(self, window: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        with self.forward_context():
            outputs, data = self._loss_outputs(window)
        losses = self._merge(outputs)
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        self.optimizer.zero_grad(set_to_none=True)
        if self.optimizer_name == "laprop":
            total.backward()
        else:
            # Each loss into its own group only: the actor loss (dynamics backprop) and the value
            # loss must not move the world model, nor the world-model loss the actor or critic.
            parts = [sum(v for k, v in out.items() if k.startswith("loss_")) for out in outputs]
            groups = self.param_groups()
            for i, (part, name) in enumerate(zip(parts, ("model", "actor", "critic"))):
                params = [p for p in groups[name] if p.requires_grad]
                if params and part.requires_grad:
                    part.backward(inputs=params, retain_graph=i < len(parts) - 1)
        self.optimizer.step()
        self._update_slow_critic()
        keys = self.modules_.keys
        latents = data.select(keys.deter, keys.stoch).detach()
        metrics = losses.detach()
        metrics.set("loss", total.detach())
        if self.optimizer_name == "laprop":
            metrics.set("opt/grad_norm", self.optimizer.last_grad_norm)
            metrics.set("opt/lr", torch.as_tensor(self.optimizer.current_lr()))
        else:
            for name, norm in self.optimizer.last_grad_norm.items():
                metrics.set(f"opt/{name}_grad_norm", norm.detach())
                metrics.set(f"opt/{name}_lr", torch.as_tensor(self.optimizer.current_lr(name)))
        return metrics, latents

    def _update_slow_critic(self) -> None:
        if self.critic_target == "ema":
            self.slow_critic.step()
        elif self.critic_target == "hard":
            if int(self.critic_updates) % self.hard_interval == 0:
                self.slow_critic.step()
            self.critic_updates += 1
