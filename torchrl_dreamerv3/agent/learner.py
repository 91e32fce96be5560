"""One complete Dreamer update: world model, imagination, actor, critic, optimiser(s), slow critic.

The generation's registry entry (:mod:`.generations`) says what is built: DreamerV3 by default (one
LaProp over every module, EMA slow critic, replay context); DreamerV1/V2 with their own losses, three
Adams, their critic target and replay context (SPEC_V1_V2 §1.5, §2.4-§2.6; ``configs/algo/*.yaml``).
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import HardUpdate, SoftUpdate

from ..modules import DreamerV3Modules
from ..optim import GroupAdam, LaProp
from ..replay.context import split_context
from .generations import GRAD_HEADS, GenerationSpec, get_generation

__all__ = ["DreamerLearner", "DreamerV3Learner", "GRAD_HEADS", "agent_keys_for", "make_learner"]

_LOSS_GROUPS = ("world_model", "actor", "value")


def agent_keys_for(loss: nn.Module, keys) -> dict:
    """The agent's key names (``keys``: a :class:`~torchrl_dreamerv3.modules.DreamerKeys`) for every key ``loss``
    accepts under the same field name, for ``loss.set_keys(**...)``.

    Why two key families: each loss declares its own ``_AcceptedKeys`` (TorchRL's LossModule contract, so a
    loss is usable and remappable alone), while ``DreamerKeys`` names what the agent's modules exchange. A
    field present in both means the same entry (``tests/test_modules.py`` checks the defaults agree); the
    loss-only fields (``reward``, ``is_terminal``, ``imagined``, ``return``, ...) come from the data or the
    loss itself."""
    accepted = {f.name for f in dataclasses.fields(loss._AcceptedKeys)}
    return {f.name: getattr(keys, f.name) for f in dataclasses.fields(keys) if f.name in accepted}


def _laprop(learner: DreamerLearner, opt_kwargs: dict):
    # One optimiser over every trainable parameter of the agent, as the reference does.
    return LaProp(learner.modules_.parameters(), **opt_kwargs)


def _group_adam(learner: DreamerLearner, opt_kwargs: dict):
    kw = dict(opt_kwargs)
    lr = {name: kw.pop(f"{name}_lr") for name in ("model", "actor", "critic") if f"{name}_lr" in kw}
    groups = learner.param_groups()
    if set(lr) != set(groups):
        raise ValueError(f"the adam3 optimiser (DreamerV1/V2) needs model_lr, actor_lr and critic_lr in opt_kwargs, "
                         f"got {sorted(lr)}")
    return GroupAdam(groups, lr, **kw)


_OPTIMIZERS = dict(laprop=_laprop, adam3=_group_adam)


def _soft_update(learner: DreamerLearner, slow_rate: float):
    return SoftUpdate(learner.value_loss, tau=slow_rate)


class _EveryInterval:
    """Steps ``updater`` at update 0 and every ``learner.hard_interval`` updates; counts in ``learner.critic_updates``."""

    def __init__(self, learner: DreamerLearner, updater):
        self.learner, self.updater = learner, updater

    def step(self) -> None:
        learner = self.learner
        if int(learner.critic_updates) % learner.hard_interval == 0:
            self.updater.step()
        learner.critic_updates += 1


def _hard_update(learner: DreamerLearner, slow_rate: float):
    # interval 0: every step() of HardUpdate copies; _EveryInterval decides when.
    learner.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))
    return _EveryInterval(learner, HardUpdate(learner.value_loss, value_network_update_interval=0))


_SLOW_CRITICS = dict(ema=_soft_update, hard=_hard_update, online=lambda learner, slow_rate: None)


class DreamerLearner(nn.Module):
    """Owns the three losses, the optimiser(s) and the slow-critic updater of one generation.

    ``update(window)`` takes a replay window ``(B, T + 1)`` (row 0 = stored context), runs
    world model -> imagination/actor -> critic losses, the backward pass(es), the optimiser step
    and the slow-critic update, and returns ``(metrics, latents)``: detached scalar metrics and
    the recomputed posterior ``deter``/``stoch`` of rows ``1..T`` for the replay to write back.
    No graph or activation outlives the call. The losses read and write the agent's key names
    (``modules.keys``), so agents built with renamed :class:`~torchrl_dreamerv3.modules.DreamerKeys` train too.

    Args:
        modules: the agent's modules (see :func:`~torchrl_dreamerv3.modules.make_dreamerv3`); V1/V2 read
            its config's ``latent`` and ``cont_head``.
        loss_kwargs: per-loss keyword overrides of the generation's loss classes, e.g.
            ``{"world_model": {"rep": 0.1}, "actor": {"horizon": 15}}``. For DreamerV2 ``world_model``
            also takes ``grad_heads`` (names from :data:`GRAD_HEADS`) and ``actor`` ``critic_for_targets``
            (``slow``, the default, or ``online``).
        opt_kwargs: :class:`~torchrl_dreamerv3.optim.LaProp` arguments (``lr``, ``agc``, ``warmup``, ...),
            or for V1/V2 :class:`~torchrl_dreamerv3.optim.GroupAdam` ones: ``model_lr``, ``actor_lr``,
            ``critic_lr``, ``eps``, ``clip``, ``weight_decay``.
        slow_rate: slow-critic EMA rate (0.02; DreamerV3).
        generation: a name of :data:`~.generations.GENERATION_SPECS` or a :class:`~.generations.GenerationSpec`.
        hard_interval: updates between hard copies of the slow critic (DreamerV2: 100).
    """

    def __init__(self, modules: DreamerV3Modules, *, loss_kwargs: dict | None = None,
                 opt_kwargs: dict | None = None, slow_rate: float = 0.02, generation: str | GenerationSpec = "dreamerv3",
                 hard_interval: int = 100):
        super().__init__()
        self.spec = get_generation(generation)
        loss_kwargs = loss_kwargs or {}
        unknown = set(loss_kwargs) - set(_LOSS_GROUPS)
        if unknown:
            raise ValueError(f"loss_kwargs has unknown groups {sorted(unknown)}; use world_model, actor, value")
        if hard_interval < 1:
            raise ValueError(f"hard_interval must be >= 1, got {hard_interval}")
        self.hard_interval = hard_interval
        # Data parallelism (training/compute/distributed.py): averages the gradients over the ranks between
        # backward and the optimiser step, so that AGC / the clip see the global gradient. None: one process.
        self.grad_sync = None
        # The loss forward runs inside this context (training/compute/acceleration.py sets bf16 autocast);
        # backward and the optimiser step run outside it, in float32.
        self.forward_context = contextlib.nullcontext
        self.modules_ = modules
        self.world_model_loss, self.actor_loss, self.value_loss = self.spec.build_losses(modules, loss_kwargs)
        for loss in (self.world_model_loss, self.actor_loss, self.value_loss):
            loss.set_keys(**agent_keys_for(loss, modules.keys))
        self.slow_critic = _SLOW_CRITICS[self.spec.critic_target](self, slow_rate)
        self.optimizer = _OPTIMIZERS[self.spec.optimizer](self, dict(opt_kwargs or {}))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``model`` (everything but actor and critic), ``actor``, ``critic``: the V1/V2 optimiser groups."""
        m = self.modules_
        actor, critic = list(m.actor.parameters()), list(m.critic.parameters())
        taken = {id(p) for p in actor + critic}
        model = [p for p in m.parameters() if id(p) not in taken]
        return dict(model=model, actor=actor, critic=critic)

    def _split(self, window: TensorDictBase) -> TensorDictBase:
        return split_context(window, keys=self.modules_.keys, context=self.spec.context)

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
        for prefix, out in zip(_LOSS_GROUPS, outputs):
            for key, value in out.items():
                merged.set(key if key.startswith("loss_") else f"{prefix}/{key}", value)
        return merged

    def _backward(self, outputs: list[TensorDictBase], total: torch.Tensor) -> None:
        if not self.spec.per_loss_backward:
            total.backward()
            return
        # Each loss into its own group only: the actor loss (dynamics backprop) and the value
        # loss must not move the world model, nor the world-model loss the actor or critic.
        parts = [sum(v for k, v in out.items() if k.startswith("loss_")) for out in outputs]
        groups = self.param_groups()
        for i, (part, name) in enumerate(zip(parts, ("model", "actor", "critic"))):
            params = [p for p in groups[name] if p.requires_grad]
            if params and part.requires_grad:
                part.backward(inputs=params, retain_graph=i < len(parts) - 1)

    def _optimizer_metrics(self, metrics: TensorDictBase) -> None:
        norm = self.optimizer.last_grad_norm
        if isinstance(norm, dict):  # one norm and learning rate per group (V1/V2)
            for name, value in norm.items():
                metrics.set(f"opt/{name}_grad_norm", value.detach())
                metrics.set(f"opt/{name}_lr", torch.as_tensor(self.optimizer.current_lr(name)))
        else:
            metrics.set("opt/grad_norm", norm)
            metrics.set("opt/lr", torch.as_tensor(self.optimizer.current_lr()))

    def update(self, window: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        with self.forward_context():
            outputs, data = self._loss_outputs(window)
        losses = self._merge(outputs)
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(outputs, total)
        if self.grad_sync is not None:
            self.grad_sync()
        self.optimizer.step()
        self._update_slow_critic()
        keys = self.modules_.keys
        latents = data.select(keys.deter, keys.stoch).detach()
        metrics = losses.detach()
        metrics.set("loss", total.detach())
        self._optimizer_metrics(metrics)
        return metrics, latents

    def _update_slow_critic(self) -> None:
        if self.slow_critic is not None:
            self.slow_critic.step()


def make_learner(plan, agent: DreamerV3Modules) -> DreamerLearner:
    """The learner of a run plan's generation (``plan.generation``, ``plan.switches``), its losses, optimiser and
    return normaliser set from ``plan.losses`` (:class:`~.settings.LossSettings`)."""
    spec, switches, settings = plan.generation, plan.switches, plan.losses
    learner = DreamerLearner(agent, loss_kwargs=spec.loss_config(settings, agent, switches),
                             opt_kwargs=dict(settings.opt), slow_rate=settings.slow_rate, generation=spec,
                             hard_interval=switches.get("hard_interval", 100))
    r, normalizer = settings.retnorm, learner.actor_loss.normalizer
    normalizer.rate, normalizer.limit, normalizer.perclo, normalizer.perchi = r["rate"], r["limit"], r["perclo"], r["perchi"]
    return learner


#: The name from before the learner trained every generation; kept for users' imports.
DreamerV3Learner = DreamerLearner
