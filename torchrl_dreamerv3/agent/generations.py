"""The registry of Dreamer generations: what ``algo.generation=<name>`` builds, and which switches it takes.

One :class:`GenerationSpec` per generation names its model preset, its three loss classes, optimiser,
slow-critic update, replay context, evaluation mode and exploration noise, and the ``algo.*`` switches
it reads with their allowed values. :func:`resolve_switches` checks a config's ``algo`` against the
entry once, before anything is built, and fails naming the setting and what is allowed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..modules import GENERATIONS, model_config
from ..objectives import (
    ActorLoss,
    DreamerV1ActorLoss,
    DreamerV1ValueLoss,
    DreamerV1WorldModelLoss,
    DreamerV2ActorLoss,
    DreamerV2ValueLoss,
    DreamerV2WorldModelLoss,
    ValueLoss,
    WorldModelLoss,
)
from ..objectives.common import check_choice
from .settings import LossSettings

__all__ = ["GenerationSpec", "GENERATION_SPECS", "GRAD_HEADS", "get_generation", "generation_spec",
           "resolve_switches"]

#: Heads that V2's ``grad_heads`` may list (the heads whose loss reaches the representation).
GRAD_HEADS = ("decoder", "reward", "cont")


@dataclass(frozen=True)
class Switch:
    """One ``algo.<key>``: its default, a check of a value, and the words for what is allowed."""

    default: Any
    check: Callable[[Any], bool]
    allowed: str


def _one_of(default, *values) -> Switch:
    return Switch(default, lambda v: v in values, f"one of {list(values)}")


def _number(default, low=None, high=None, *, optional=False) -> Switch:
    def check(v):
        if v is None:
            return optional
        return isinstance(v, (int, float)) and not isinstance(v, bool) and (low is None or v >= low) and (
            high is None or v <= high)
    words = f"a number{f' >= {low}' if low is not None else ''}{f' <= {high}' if high is not None else ''}"
    return Switch(default, check, words + (" or null" if optional else ""))


def _heads_switch(default) -> Switch:
    return Switch(default, lambda v: v is None or set(v) <= set(GRAD_HEADS), f"null or a list from {list(GRAD_HEADS)}")


_FLAG = (True, False)
#: Keys of the former flat ``algo`` layout (before issue 12) that a generation now fixes. An old run's
#: saved config may still state them, with the generation's value; any other value is an error.
_V3_FIXED = dict(optimizer="laprop", critic_target="ema", context="replay", kl="dyn_rep", rec_loss="sse",
                 reward_transform="none", gamma=None, grad_heads=None, return_indexing="next_reward",
                 imag_includes_start=True, first_discount_from_data=False, actor_grad="reinforce",
                 critic_for_targets="online", return_norm="percentile", hard_interval=100, kl_balance=0.8,
                 free_avg=True, actor_grad_mix=0.1)
_V1V2_FIXED = dict(optimizer="adam3", rec_loss="gaussian", return_indexing="reward_at_state")
_V1_FIXED = dict(_V1V2_FIXED, critic_target="online", context="zero", kl="joint", imag_includes_start=False,
                 actor_grad="dynamics", critic_for_targets="online", reward_transform="none", grad_heads=None,
                 first_discount_from_data=False, hard_interval=100, kl_balance=0.8, actor_grad_mix=0.1)
_V2_FIXED = dict(_V1V2_FIXED, critic_target="hard", context="first", kl="balanced", imag_includes_start=True)

_V1V2_SWITCHES = dict(gamma=_number(0.99, 0.0, 1.0, optional=True), free_avg=_one_of(True, *_FLAG),
                      return_norm=_one_of("none", "none", "percentile"))
_V2_SWITCHES = dict(
    _V1V2_SWITCHES, gamma=_number(0.999, 0.0, 1.0, optional=True), kl_balance=_number(0.8, 0.0, 1.0),
    reward_transform=_one_of("none", "none", "tanh"), grad_heads=_heads_switch(None),
    first_discount_from_data=_one_of(False, *_FLAG), actor_grad=_one_of("auto", "auto", "reinforce", "dynamics", "both"),
    actor_grad_mix=_number(0.1, 0.0, 1.0), critic_for_targets=_one_of("slow", "slow", "online"),
    hard_interval=_number(100, 1),
)


_V1_LOSSES = (DreamerV1WorldModelLoss, DreamerV1ActorLoss, DreamerV1ValueLoss)
_V2_LOSSES = (DreamerV2WorldModelLoss, DreamerV2ActorLoss, DreamerV2ValueLoss)


def _build_v3(m, kw: dict) -> tuple:
    """DreamerV3's losses on the agent ``m`` with the per-loss keyword groups ``kw``."""
    value = ValueLoss(m.critic, **kw.get("value", {}))
    world_model = WorldModelLoss(m.world_model, m.obs_keys, **dict(dict(unimix=m.cfg.unimix), **kw.get("world_model", {})))
    actor = ActorLoss(m.actor, m.critic, m.reward, m.cont, m.imagine_step, **kw.get("actor", {}))
    return world_model, actor, value


def _stop_grad_heads(m, cont_head: bool, grad_heads) -> list:
    """The heads not in ``grad_heads``: they train on detached features (V2)."""
    if grad_heads is None:
        return []
    bad = set(grad_heads) - set(GRAD_HEADS)
    if bad:
        raise ValueError(f"grad_heads has unknown heads {sorted(bad)}; choose from {GRAD_HEADS}")
    heads = dict(decoder=m.decoder, reward=m.reward, cont=m.cont if cont_head else None)
    return [h for name, h in heads.items() if name not in grad_heads and h is not None]


def _build_v1v2(m, kw: dict, classes: tuple, actor_options: Callable[[Any, dict], dict]) -> tuple:
    """The V1/V2 losses ``classes`` on the agent ``m``; ``actor_options(value_loss, actor_kwargs)`` adds the
    generation's own actor arguments."""
    world_model_cls, actor_cls, value_cls = classes
    cont_head = getattr(m.cfg, "cont_head", True)
    wm_kwargs = dict(kw.get("world_model", {}))
    stop = _stop_grad_heads(m, cont_head, wm_kwargs.pop("grad_heads", None))
    value = value_cls(m.critic, **kw.get("value", {}))
    actor_kwargs = actor_options(value, dict(kw.get("actor", {})))
    defaults = dict(unimix=m.cfg.unimix, latent=m.cfg.latent, cont=cont_head, stop_grad_heads=stop)
    world_model = world_model_cls(m.world_model, m.obs_keys, **dict(defaults, **wm_kwargs))
    actor = actor_cls(m.actor, m.critic, m.reward, m.cont if cont_head else None, m.imagine_step, **actor_kwargs)
    return world_model, actor, value


def _v2_actor_options(value_loss, actor_kwargs: dict) -> dict:
    """``critic_for_targets`` (``slow``, the default, or ``online``) as the actor's ``target_critic``."""
    targets = check_choice("critic_for_targets", actor_kwargs.pop("critic_for_targets", "slow"), ("slow", "online"))
    if targets == "slow":
        actor_kwargs.setdefault("target_critic", value_loss.slow_critic)
    return actor_kwargs


def _build_v1(m, kw: dict) -> tuple:
    return _build_v1v2(m, kw, _V1_LOSSES, lambda value_loss, actor_kwargs: actor_kwargs)


def _build_v2(m, kw: dict) -> tuple:
    return _build_v1v2(m, kw, _V2_LOSSES, _v2_actor_options)


def _common_config(ls: LossSettings) -> dict:
    s = ls.scales
    return {"world_model": dict(rec=s["rec"], rew=s["rew"], con=s["con"], free_nats=ls.free_nats),
            "actor": dict(policy=s["policy"], horizon=ls.imag_length, lam=ls.imag_lam, entropy_coef=ls.actent),
            "value": dict(value=s["value"])}


def _v3_config(ls: LossSettings, agent, switches: dict) -> dict:
    kw, s = _common_config(ls), ls.scales
    kw["world_model"].update(dyn=s["dyn"], rep=s["rep"], horizon=ls.horizon)
    kw["value"].update(repval=s["repval"], slowreg=ls.slowreg, lam=ls.repl_lam, horizon=ls.horizon)
    return kw


def _v1v2_config(ls: LossSettings, agent, switches: dict) -> dict:
    kw = _common_config(ls)
    gamma = switches["gamma"] if switches["gamma"] is not None else 1.0 - 1.0 / ls.horizon
    kw["world_model"].update(kl_scale=ls.scales["kl"], free_avg=switches["free_avg"], gamma=gamma)
    kw["actor"].update(gamma=gamma, normalize_returns=switches["return_norm"] == "percentile")
    return kw


def _v2_config(ls: LossSettings, agent, switches: dict) -> dict:
    kw = _v1v2_config(ls, agent, switches)
    grad_heads = switches["grad_heads"]
    kw["world_model"].update(kl_balance=switches["kl_balance"], reward_transform=switches["reward_transform"],
                             grad_heads=None if grad_heads is None else list(grad_heads))
    actor_grad = switches["actor_grad"]
    if actor_grad == "auto":
        actor_grad = "reinforce" if agent.discrete else "dynamics"
    kw["actor"].update(actor_grad=actor_grad, actor_grad_mix=switches["actor_grad_mix"],
                       critic_for_targets=switches["critic_for_targets"],
                       first_discount_from_data=switches["first_discount_from_data"])
    return kw


@dataclass(frozen=True)
class GenerationSpec:
    """What one generation builds. ``build_losses(agent, loss_kwargs)`` gives (world model, actor, value) losses;
    ``loss_config(settings, agent, switches)`` turns a :class:`~.settings.LossSettings` into those ``loss_kwargs``."""

    name: str
    model_preset: str  # "dreamerv3": the size presets; otherwise a key of modules.GENERATIONS
    loss_classes: tuple[type, type, type]
    build_losses: Callable[..., tuple]
    loss_config: Callable[..., dict]
    optimizer: str  # "laprop": one LaProp, one backward (cfg.opt) | "adam3": one Adam per loss (cfg.opt3)
    critic_target: str  # "ema" (SoftUpdate) | "hard" (a copy every hard_interval updates) | "online" (none)
    context: str  # first step of a window (replay.split_context): "replay" | "zero" | "first"
    eval_deterministic: bool  # evaluate with the policy's mode (V1/V2) instead of sampling (V3)
    expl_noise: float  # N(0, expl_noise) on continuous actions while collecting
    switches: Mapping[str, Switch] = dataclasses.field(default_factory=dict)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def opt_section(self) -> str:
        """The config section of the optimiser's arguments."""
        return "opt" if self.optimizer == "laprop" else "opt3"

    def model(self, size: str, overrides: Mapping[str, Any]):
        """The :class:`~torchrl_dreamerv3.modules.ModelConfig` of this generation: the ``size`` preset (V3) or the
        generation's own preset, with ``overrides`` (explicit ``model.*`` / ``size=`` values) on top. A Gaussian
        latent (V1) has one "class" per dimension, so an override's ``classes`` becomes 1."""
        overrides = dict(overrides)
        if self.model_preset != "dreamerv3":
            if GENERATIONS[self.model_preset].get("latent") == "gaussian" and "classes" in overrides:
                overrides["classes"] = 1
            overrides["generation"] = self.model_preset
        return model_config(size, **overrides)

    @property
    def per_loss_backward(self) -> bool:
        """Each loss backpropagated into its own parameter group (three Adams) rather than one backward of the sum."""
        return self.optimizer == "adam3"


_V2 = dict(loss_classes=_V2_LOSSES, build_losses=_build_v2, loss_config=_v2_config,
           optimizer="adam3", critic_target="hard", context="first", eval_deterministic=True, expl_noise=0.0,
           switches=_V2_SWITCHES, fixed=_V2_FIXED)
GENERATION_SPECS: dict[str, GenerationSpec] = {
    "dreamerv3": GenerationSpec(
        "dreamerv3", "dreamerv3", (WorldModelLoss, ActorLoss, ValueLoss), _build_v3, _v3_config, optimizer="laprop",
        critic_target="ema", context="replay", eval_deterministic=False, expl_noise=0.0, fixed=_V3_FIXED),
    "dreamerv1": GenerationSpec(
        "dreamerv1", "dreamerv1", _V1_LOSSES, _build_v1, _v1v2_config, optimizer="adam3",
        critic_target="online", context="zero", eval_deterministic=True, expl_noise=0.3, switches=_V1V2_SWITCHES,
        fixed=_V1_FIXED),
    "dreamerv2": GenerationSpec("dreamerv2", "dreamerv2", **_V2),
    "dreamerv2_dmc": GenerationSpec("dreamerv2_dmc", "dreamerv2_dmc", **_V2),
}
_COMMON_KEYS = ("name", "generation", "expl_noise")


def get_generation(name) -> GenerationSpec:
    """The registry entry ``name`` (a :class:`GenerationSpec` is returned as is)."""
    if isinstance(name, GenerationSpec):
        return name
    if name not in GENERATION_SPECS:
        raise ValueError(f"algo.generation={name!r} is unknown; choose one of {list(GENERATION_SPECS)}")
    return GENERATION_SPECS[name]


def _algo_dict(algo) -> dict:
    if algo is None:
        return {}
    if hasattr(algo, "items"):
        return {k: (list(v) if hasattr(v, "__iter__") and not isinstance(v, str) else v) for k, v in algo.items()}
    raise TypeError(f"algo must be a mapping, got {type(algo).__name__}")


def resolve_switches(algo) -> tuple[GenerationSpec, dict]:
    """``(entry, switch values)`` of a config's ``algo`` node, every rule of what combines checked here.

    Fails on an unknown generation, a key the generation does not take, a switch value outside what
    it allows, and a key the generation fixes (``algo.kl`` for DreamerV2, ...) set to another value.
    """
    values = _algo_dict(algo)
    spec = get_generation(values.get("generation", "dreamerv3"))
    noise = values.get("expl_noise", spec.expl_noise)
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"algo.expl_noise must be >= 0, got {noise!r}")
    switches = {key: switch.default for key, switch in spec.switches.items()}
    for key, value in values.items():
        if key in _COMMON_KEYS:
            continue
        if key in spec.switches:
            if not spec.switches[key].check(value):
                raise ValueError(f"algo.{key}={value!r} is not allowed for algo.generation={spec.name}; "
                                 f"allowed: {spec.switches[key].allowed}")
            switches[key] = value
        elif key in spec.fixed:
            if value != spec.fixed[key]:
                raise ValueError(f"algo.{key}={value!r} is not a switch of algo.generation={spec.name}, which fixes "
                                 f"{key}={spec.fixed[key]!r}; its switches: {sorted(spec.switches) + ['expl_noise']}")
        else:
            raise ValueError(f"algo.{key} is unknown for algo.generation={spec.name}; its switches: "
                             f"{sorted(spec.switches) + ['expl_noise']}")
    return spec, switches


def generation_spec(cfg) -> GenerationSpec:
    """The registry entry of ``cfg.algo`` (validated), with ``expl_noise`` as the config sets it."""
    algo = cfg.get("algo") if hasattr(cfg, "get") else None
    spec, _ = resolve_switches(algo)
    noise = _algo_dict(algo).get("expl_noise", spec.expl_noise)
    return dataclasses.replace(spec, expl_noise=float(noise))
