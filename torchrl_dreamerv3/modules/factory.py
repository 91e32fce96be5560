"""Builds every Dreamer piece (V3, or V1/V2 through :data:`~torchrl_dreamerv3.modules.config.GENERATIONS`)
as a TensorDictModule from observation shapes and an action spec.

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

The same keys serve every generation; what they hold depends on the config:

- ``stoch``: categorical ``(..., S, Cl)`` straight-through one-hot; Gaussian (``latent="gaussian"``)
  ``(..., S, 1)``. ``post_logits``/``prior_logits``: logits ``(..., S, Cl)``, or for the Gaussian
  ``(..., S, 2)`` = ``(mean, std)`` stacked on the last axis (std already ``act(raw) + min_std``).
- ``head_dist="normal"``: ``reward_logits``/``reward_pred`` and ``value_logits``/``state_value`` are
  both the predicted unit-Normal mean ``(..., 1)`` (one tensor).
- ``cont_head=False``: ``cont`` has no parameters and writes ``cont_prob = 1`` (``cont_logits`` a
  large constant); the world-model loss skips the continue term.
- ``cnn="k4s2"``: ``("reco", image_key)`` is the unit-Gaussian mean in the ``x / 255 - 0.5`` space
  (no sigmoid); vector reconstructions are the raw vectors (no symlog).
- the actor's distribution parameters are ``logits`` (discrete) or ``loc, scale`` (continuous;
  pre-tanh for ``tanh_normal``), see :func:`~torchrl_dreamerv3.modules.actor.make_actor`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torch import nn
from torchrl.data import Categorical, OneHot, TensorSpec

from ..nets import BinaryHead, MultiDecoder, MultiEncoder, NormalHead, TwoHotHead
from ..nets.conv_k4s2 import K4S2Decoder, K4S2Encoder
from ..rssm import RSSM, DenseRSSM, make_latent
from .actor import make_actor
from .config import ModelConfig, model_config
from .predictors import BinaryPredictor, ConstantContinue, NormalPredictor, TwoHotPredictor
from .rssm import RSSMImagineStep, RSSMObserve, RSSMObserveStep, RSSMPrior

__all__ = ["DreamerKeys", "DreamerV3Modules", "make_dreamerv3", "make_dreamer", "make_actor", "action_spec_info"]


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


def make_dreamer(
    obs_shapes: Mapping[str, tuple[int, ...]],
    action_spec: TensorSpec,
    cfg: ModelConfig | str = "size12m",
    keys: DreamerKeys = DreamerKeys(),
    *,
    encoder: TensorDictModuleBase | None = None,
    decoder: TensorDictModuleBase | None = None,
    token_dim: int | None = None,
) -> DreamerV3Modules:
    """Builds encoder, RSSM, decoder, heads, actor and critic for the given observations and actions.

    Args:
        obs_shapes: observation key -> shape; 3-D shapes are ``(C, H, W)`` uint8 images, 1-D are vectors.
        action_spec: a TorchRL ``OneHot`` spec (discrete) or a float vector spec (continuous, in [-1, 1]).
        cfg: a :class:`ModelConfig` (any generation, e.g. ``model_config(generation="dreamerv2")``)
            or the name of a V3 size preset (``debug``, ``size1m``, ... ``size400m``).
        keys: tensordict key names.
        encoder: replaces the built encoder; it must write ``keys.tokens``. The RSSM needs the
            token width: ``token_dim``, else the ``out_features`` of the module (or of its ``.module``).
        decoder: replaces the built decoder (it should write ``(keys.reco, <obs key>)``).
        token_dim: width of the user encoder's tokens (only with ``encoder``).

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
    encoder, token_dim = _make_encoder(obs_shapes, cfg, k, encoder, token_dim)
    rssm = _make_rssm(cfg, action_dim, token_dim)
    latent = dict(deter=cfg.deter, stoch=cfg.stoch, classes=cfg.classes)
    state = [k.deter, k.stoch]
    if decoder is None:
        decoder_net = _make_decoder_net(obs_shapes, cfg, latent)
        decoder = TensorDictModule(decoder_net, in_keys=state, out_keys=[(k.reco, key) for key in decoder_net.keys])
    reward, cont, critic = _make_heads(cfg, latent, state, k)  # built in this order: parameters follow the seed
    actor = make_actor(cfg, discrete, action_dim, state, k.action)
    return DreamerV3Modules(cfg, keys, discrete, action_dim, obs_keys, encoder, rssm, decoder, reward, cont,
                            actor, critic)


#: The name from before the builder built every generation (``model_config(generation=...)``); kept for users.
make_dreamerv3 = make_dreamer


def _make_encoder(obs_shapes, cfg: ModelConfig, k: DreamerKeys, encoder, token_dim):
    """``(encoder module, token width)``: the built encoder, or the user's with its token width."""
    if encoder is not None:
        return encoder, _user_token_dim(encoder, token_dim, k.tokens)
    if token_dim is not None:
        raise ValueError("token_dim is only used with a user encoder (encoder=...)")
    encoder_net = _make_encoder_net(obs_shapes, cfg)
    encoder = TensorDictModule(encoder_net, in_keys=list(encoder_net.keys), out_keys=[k.tokens])
    return encoder, encoder_net.out_features


def _make_heads(cfg: ModelConfig, latent: dict, state: list, k: DreamerKeys):
    """Reward, continue and critic modules reading ``state``."""
    style = dict(act=cfg.act, norm=cfg.norm, init=cfg.init)
    reward = TensorDictModule(_value_predictor(cfg, latent, style, cfg.rew_layers), in_keys=state,
                              out_keys=[k.reward_logits, k.reward_pred])
    cont_net = (BinaryPredictor(BinaryHead(**latent, layers=cfg.con_layers, units=cfg.units, **style))
                if cfg.cont_head else ConstantContinue())
    cont = TensorDictModule(cont_net, in_keys=state, out_keys=[k.cont_logits, k.cont_prob])
    critic = TensorDictModule(_value_predictor(cfg, latent, style, cfg.val_layers), in_keys=state,
                              out_keys=[k.value_logits, k.state_value])
    return reward, cont, critic


def _make_encoder_net(obs_shapes, cfg: ModelConfig):
    if cfg.cnn == "k4s2":
        return K4S2Encoder(dict(obs_shapes), depth=cfg.depth, cnn_act=cfg.cnn_act or cfg.act, layers=cfg.enc_layers,
                           units=cfg.units, act=cfg.act, norm=cfg.norm)
    return MultiEncoder(dict(obs_shapes), depth=cfg.depth, mults=cfg.mults, layers=cfg.enc_layers,
                        units=cfg.units, kernel=cfg.kernel, strided=cfg.strided)


def _make_decoder_net(obs_shapes, cfg: ModelConfig, latent: dict):
    if cfg.cnn == "k4s2":
        return K4S2Decoder(dict(obs_shapes), **latent, depth=cfg.depth, cnn_act=cfg.cnn_act or cfg.act,
                           layers=cfg.dec_layers, units=cfg.units, act=cfg.act, norm=cfg.norm)
    return MultiDecoder(dict(obs_shapes), **latent, depth=cfg.depth, mults=cfg.mults, layers=cfg.dec_layers,
                        units=cfg.units, kernel=cfg.kernel, blocks=cfg.bspace, strided=cfg.strided)


def _user_token_dim(encoder: TensorDictModuleBase, token_dim: int | None, tokens_key) -> int:
    if tokens_key not in list(encoder.out_keys):
        raise ValueError(f"the user encoder must write {tokens_key!r} (the RSSM reads it); its out_keys are "
                         f"{list(encoder.out_keys)}")
    if token_dim is None:
        token_dim = getattr(encoder, "out_features", None) or getattr(getattr(encoder, "module", None),
                                                                      "out_features", None)
    if not isinstance(token_dim, int) or token_dim < 1:
        raise ValueError("cannot tell the width of the user encoder's tokens: pass token_dim=... (or give the "
                         "encoder, or its .module, an int attribute out_features)")
    return token_dim


def _make_rssm(cfg: ModelConfig, action_dim: int, token_dim: int):
    if cfg.cell == "block_gru":
        return RSSM(action_dim, token_dim, deter=cfg.deter, hidden=cfg.hidden, stoch=cfg.stoch,
                    classes=cfg.classes, blocks=cfg.blocks, imglayers=cfg.imglayers, obslayers=cfg.obslayers,
                    dynlayers=cfg.dynlayers, unimix=cfg.unimix)
    latent = make_latent(cfg.latent, cfg.stoch, cfg.classes, cfg.unimix, cfg.std_act, cfg.min_std)
    return DenseRSSM(action_dim, token_dim, latent, deter=cfg.deter, hidden=cfg.hidden, cell=cfg.cell,
                     imglayers=cfg.imglayers, obslayers=cfg.obslayers, act=cfg.act, norm=cfg.norm,
                     init=cfg.init, mask_first_action=cfg.mask_first_action)


def _value_predictor(cfg: ModelConfig, latent: dict, style: dict, layers: int):
    """Reward or critic: symexp two-hot (V3) or the unit-variance Normal mean (V1/V2)."""
    if cfg.head_dist == "normal":
        return NormalPredictor(NormalHead(**latent, layers=layers, units=cfg.units, **style))
    return TwoHotPredictor(TwoHotHead(**latent, layers=layers, units=cfg.units, bins=cfg.bins, **style), cfg.bins)
