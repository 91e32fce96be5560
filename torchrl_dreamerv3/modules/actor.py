"""The policy of every generation as a TorchRL ``ProbabilisticActor`` (V3 bounded normal / categorical, V1/V2
tanh-normal / truncated normal / straight-through one-hot)."""
from __future__ import annotations

from tensordict.nn import InteractionType, TensorDictModule
from torchrl.modules import IndependentNormal, OneHotCategorical, ProbabilisticActor

from ..functional.actor_dists import StraightThroughOneHot, TanhNormal, TruncatedNormal
from ..functional.gaussian import tanh_normal_params, trunc_normal_params
from ..nets import BoundedNormalHead, CategoricalHead
from .config import ModelConfig
from .predictors import ActorNormalParams, BoundedNormalParams

__all__ = ["make_actor"]


def _actor_kind(actor_dist: str, discrete: bool) -> str:
    if actor_dist == "auto":
        return "categorical" if discrete else "bounded_normal"
    if discrete:
        return "onehot"  # V1/V2: tanh_normal / trunc_normal name the continuous choice only
    if actor_dist == "onehot":
        raise ValueError("actor_dist='onehot' needs a discrete (OneHot) action spec; the spec is continuous")
    return actor_dist


def make_actor(cfg: ModelConfig, discrete: bool, action_dim: int, state_keys, action_key) -> ProbabilisticActor:
    """The policy as a TorchRL ``ProbabilisticActor`` over ``(deter, stoch)`` writing ``action_key``.

    ================ ============================ ====================== =================================
    ``actor_dist``    discrete actions             continuous actions     distribution params keys
    ================ ============================ ====================== =================================
    ``auto`` (V3)     ``OneHotCategorical``        ``IndependentNormal``  ``logits`` / ``loc, scale``
                                                   (bounded normal)
    ``tanh_normal``   ``StraightThroughOneHot``    ``TanhNormal``         ``logits`` / ``loc, scale``
    ``trunc_normal``  ``StraightThroughOneHot``    ``TruncatedNormal``    ``logits`` / ``loc, scale``
    ``onehot``        ``StraightThroughOneHot``    error                  ``logits``
    ================ ============================ ====================== =================================

    V1/V2 distributions sample with ``rsample`` (gradients reach the actor through the action).
    """
    latent = dict(deter=cfg.deter, stoch=cfg.stoch, classes=cfg.classes)
    style = dict(act=cfg.act, norm=cfg.norm, init=cfg.init)
    kind = _actor_kind(cfg.actor_dist, discrete)
    kwargs = {}
    if kind in ("categorical", "onehot"):
        net = CategoricalHead(**latent, layers=cfg.pol_layers, units=cfg.units, actions=action_dim, **style)
        params = TensorDictModule(net, in_keys=state_keys, out_keys=["logits"])
        dist_keys = ["logits"]
        dist_cls = OneHotCategorical if kind == "categorical" else StraightThroughOneHot
    else:
        head = BoundedNormalHead(**latent, layers=cfg.pol_layers, units=cfg.units, actions=action_dim, **style)
        if kind == "bounded_normal":
            net, dist_cls = BoundedNormalParams(head, cfg.minstd, cfg.maxstd), IndependentNormal
        elif kind == "tanh_normal":
            net, dist_cls, kwargs = ActorNormalParams(head, tanh_normal_params), TanhNormal, dict(samples=100)
        else:
            net, dist_cls = ActorNormalParams(head, trunc_normal_params), TruncatedNormal
        params = TensorDictModule(net, in_keys=state_keys, out_keys=["loc", "scale"])
        dist_keys = ["loc", "scale"]
    # The reference samples when acting, in evaluation too, and in imagination: RANDOM by default.
    return ProbabilisticActor(params, in_keys=dist_keys, out_keys=[action_key], distribution_class=dist_cls,
                              distribution_kwargs=kwargs or None, return_log_prob=False,
                              default_interaction_type=InteractionType.RANDOM)
