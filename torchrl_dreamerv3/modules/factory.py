"""Builds every DreamerV3 piece as a TensorDictModule from observation shapes and an action spec.

Default keys (all remappable through the ``keys`` argument of :func:`make_dreamerv3`):

============== ==================================================================== =================
module         reads                                                                writes
============== ==================================================================== =================
encoder        the observation keys (images ``(C, H, W)`` uint8, vectors float)     ``tokens``
observe        ``prev_deter, prev_stoch, prev_action, tokens, is_first``            ``deter, stoch, post_logits``
prior          ``deter``                                                            ``prior_logits``
decoder        ``deter, stoch``                                                     ``("reco", <obs key>)``
reward         ``deter, stoch``                                                     ``reward_logits, reward_pred``
cont           ``deter, stoch``                                                     ``cont_logits, cont_prob``
actor          ``deter, stoch``                                                     ``logits`` or ``loc, scale``; ``action``
critic         ``deter, stoch``                                                     ``value_logits, state_value``
imagine_step   ``deter, stoch, action``                                             ``deter, stoch, prior_logits``
============== ==================================================================== =================
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tensordict.nn import InteractionType, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Categorical, OneHot, TensorSpec
from torchrl.modules import IndependentNormal, OneHotCategorical, ProbabilisticActor

from ..nets import BinaryHead, BoundedNormalHead, CategoricalHead, MultiDecoder, MultiEncoder, TwoHotHead
from ..rssm import RSSM
from .config import ModelConfig, model_config
from .predictors import BinaryPredictor, BoundedNormalParams, TwoHotPredictor
from .rssm import RSSMImagineStep, RSSMObserve, RSSMObserveStep, RSSMPrior

__all__ = ["DreamerKeys", "DreamerV3Modules", "make_dreamerv3", "action_spec_info"]


@dataclass(frozen=True)
class DreamerKeys:
    """Names of the tensordict entries the modules exchange."""

    tokens: str = "tokens"
    deter: str = "deter"
    stoch: str = "stoch"
    prev_deter: str = "prev_deter"
    prev_stoch: str = "prev_stoch"
    prev_action: str = "prev_action"
    action: str = "action"
    is_first: str = "is_first"
    post_logits: str = "post_logits"
    prior_logits: str = "prior_logits"
    reco: str = "reco"
    reward_logits: str = "reward_logits"
    reward_pred: str = "reward_pred"
    cont_logits: str = "cont_logits"
    cont_prob: str = "cont_prob"
    value_logits: str = "value_logits"
    state_value: str = "state_value"


def action_spec_info(action_spec: TensorSpec) -> tuple[bool, int]:
    """``(discrete, action_dim)`` for a one-hot or 1-D continuous action spec; clear errors otherwise."""
    if isinstance(action_spec, OneHot):
        return True, action_spec.shape[-1]
    if isinstance(action_spec, Categorical):
        raise ValueError(
            "action spec is Categorical (integer actions); DreamerV3 needs one-hot actions: build the env "
            "with categorical_action_encoding=False (the GymEnv default) or use an OneHot spec"
        )
    if action_spec.dtype.is_floating_point and len(action_spec.shape) >= 1:
        return False, action_spec.shape[-1]
    raise ValueError(
        f"unsupported action spec {type(action_spec).__name__} with shape {tuple(action_spec.shape)} and dtype "
        f"{action_spec.dtype}: expected a one-hot discrete spec or a float vector spec"
    )


class DreamerV3Modules(nn.Module):
    """Holds the TensorDictModules of one agent; ``world_model`` chains the world-model ones.

    The modules share parameters (e.g. ``observe``, ``observe_step``, ``prior`` and ``imagine_step``
    all wrap the same :class:`~torchrl_dreamerv3.rssm.RSSM`), so ``parameters()`` lists each once.
    """

    def __init__(self, cfg, keys, discrete, action_dim, obs_keys, encoder, rssm, decoder, reward, cont, actor, critic):
        super().__init__()
        self.cfg, self.keys, self.discrete, self.action_dim = cfg, keys, discrete, action_dim
        self.obs_keys = list(obs_keys)
        k = keys
        self.encoder = encoder
        self.rssm = rssm
        self.observe = RSSMObserve(rssm, [k.prev_deter, k.prev_stoch, k.prev_action, k.tokens, k.is_first],
                                   [k.deter, k.stoch, k.post_logits])
        self.observe_step = RSSMObserveStep(rssm, self.observe.in_keys, self.observe.out_keys)
        self.prior = RSSMPrior(rssm, [k.deter], [k.prior_logits])
        self.imagine_step = RSSMImagineStep(rssm, [k.deter, k.stoch, k.action], [k.deter, k.stoch, k.prior_logits])
        self.decoder, self.reward, self.cont, self.actor, self.critic = decoder, reward, cont, actor, critic
        self.world_model = TensorDictSequential(encoder, self.observe, self.prior, decoder, reward, cont)

    def parameter_counts(self) -> dict[str, int]:
        """Counts per part, grouped as the reference's optimizer prints them (``dyn`` = RSSM)."""
        parts = dict(enc=self.encoder, dyn=self.rssm, dec=self.decoder, rew=self.reward,
                     con=self.cont, pol=self.actor, val=self.critic)
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        counts["total"] = sum(counts.values())
        return counts


def make_dreamerv3(
    obs_shapes: Mapping[str, tuple[int, ...]],
    action_spec: TensorSpec,
    cfg: ModelConfig | str = "size12m",
    keys: DreamerKeys = DreamerKeys(),
) -> DreamerV3Modules:
    """Builds encoder, RSSM, decoder, heads, actor and critic for the given observations and actions.

    Args:
        obs_shapes: observation key -> shape; 3-D shapes are ``(C, H, W)`` uint8 images, 1-D are vectors.
        action_spec: a TorchRL ``OneHot`` spec (discrete) or a float vector spec (continuous, in [-1, 1]).
        cfg: a :class:`ModelConfig` or the name of a size preset (``debug``, ``size1m``, ... ``size400m``).
        keys: tensordict key names.

    Examples:
        >>> import torch
        >>> from torchrl.data import OneHot
        >>> from torchrl_dreamerv3.modules import make_dreamerv3
        >>> agent = make_dreamerv3({"pixels": (3, 64, 64)}, OneHot(6), "debug")
        >>> agent.parameter_counts()["total"]
        11603
    """
    cfg = model_config(cfg) if isinstance(cfg, str) else cfg
    discrete, action_dim = action_spec_info(action_spec)
    obs_keys = list(obs_shapes)
    if not obs_keys:
        raise ValueError("obs_shapes is empty: DreamerV3 needs at least one observation key")
    k = keys
    encoder_net = MultiEncoder(dict(obs_shapes), depth=cfg.depth, mults=cfg.mults, layers=cfg.enc_layers,
                               units=cfg.units, kernel=cfg.kernel, strided=cfg.strided)
    encoder = TensorDictModule(encoder_net, in_keys=list(encoder_net.keys), out_keys=[k.tokens])
    rssm = RSSM(action_dim, encoder_net.out_features, deter=cfg.deter, hidden=cfg.hidden, stoch=cfg.stoch,
                classes=cfg.classes, blocks=cfg.blocks, imglayers=cfg.imglayers, obslayers=cfg.obslayers,
                dynlayers=cfg.dynlayers, unimix=cfg.unimix)
    latent = dict(deter=cfg.deter, stoch=cfg.stoch, classes=cfg.classes)
    decoder_net = MultiDecoder(dict(obs_shapes), **latent, depth=cfg.depth, mults=cfg.mults,
                               layers=cfg.dec_layers, units=cfg.units, kernel=cfg.kernel, blocks=cfg.bspace,
                               strided=cfg.strided)
    state = [k.deter, k.stoch]
    decoder = TensorDictModule(decoder_net, in_keys=state, out_keys=[(k.reco, key) for key in decoder_net.keys])
    reward = TensorDictModule(
        TwoHotPredictor(TwoHotHead(**latent, layers=cfg.rew_layers, units=cfg.units, bins=cfg.bins), cfg.bins),
        in_keys=state, out_keys=[k.reward_logits, k.reward_pred])
    cont = TensorDictModule(BinaryPredictor(BinaryHead(**latent, layers=cfg.con_layers, units=cfg.units)),
                            in_keys=state, out_keys=[k.cont_logits, k.cont_prob])
    critic = TensorDictModule(
        TwoHotPredictor(TwoHotHead(**latent, layers=cfg.val_layers, units=cfg.units, bins=cfg.bins), cfg.bins),
        in_keys=state, out_keys=[k.value_logits, k.state_value])
    actor = _make_actor(cfg, latent, discrete, action_dim, state, k.action)
    return DreamerV3Modules(cfg, keys, discrete, action_dim, obs_keys, encoder, rssm, decoder, reward, cont,
                            actor, critic)


def _make_actor(cfg, latent, discrete, action_dim, state_keys, action_key) -> ProbabilisticActor:
    """Categorical policy for discrete actions (no unimix, as the reference), bounded normal otherwise."""
    if discrete:
        net = CategoricalHead(**latent, layers=cfg.pol_layers, units=cfg.units, actions=action_dim)
        params = TensorDictModule(net, in_keys=state_keys, out_keys=["logits"])
        dist_keys, dist_cls = ["logits"], OneHotCategorical
    else:
        net = BoundedNormalParams(BoundedNormalHead(**latent, layers=cfg.pol_layers, units=cfg.units,
                                                    actions=action_dim), cfg.minstd, cfg.maxstd)
        params = TensorDictModule(net, in_keys=state_keys, out_keys=["loc", "scale"])
        dist_keys, dist_cls = ["loc", "scale"], IndependentNormal
    # The reference samples when acting, in evaluation too, and in imagination: RANDOM by default.
    return ProbabilisticActor(params, in_keys=dist_keys, out_keys=[action_key], distribution_class=dist_cls,
                              return_log_prob=False, default_interaction_type=InteractionType.RANDOM)
