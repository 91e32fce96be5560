"""Model hyperparameters, the reference's size presets (SPEC §1.6-§1.7) and the V1/V2 generation presets.

Every field defaults to DreamerV3; :data:`GENERATIONS` holds the overrides that turn the same
components into DreamerV1 or DreamerV2 (SPEC_V1_V2 §1-§2, §8), selected with
``model_config(generation="dreamerv2")``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["ModelConfig", "SIZES", "GENERATIONS", "model_config", "generation_config"]


@dataclass(frozen=True)
class ModelConfig:
    """Every architecture knob, named as in the reference ``configs.yaml``. Defaults = ``size200m``."""

    deter: int = 8192  # deterministic state size D
    hidden: int = 1024  # RSSM hidden units
    stoch: int = 32  # number of categorical latents S
    classes: int = 64  # classes per latent Cl
    blocks: int = 8  # block-GRU blocks G
    imglayers: int = 2  # prior MLP depth
    obslayers: int = 1  # posterior MLP depth
    dynlayers: int = 1  # block layers inside the core
    unimix: float = 0.01  # uniform mix of the latent categoricals
    depth: int = 64  # CNN base depth (channels = depth * mults)
    mults: tuple[int, ...] = (2, 3, 4, 4)
    kernel: int = 5
    strided: bool = False  # the reference's stride-2 encoder/decoder option
    bspace: int = 8  # blocks of the decoder's spatial projection (not tied to ``blocks``)
    units: int = 1024  # MLP width of encoder, decoder and heads
    enc_layers: int = 3
    dec_layers: int = 3
    rew_layers: int = 1
    con_layers: int = 1
    pol_layers: int = 3
    val_layers: int = 3
    bins: int = 255  # twohot bins of reward and value heads
    minstd: float = 0.1  # bounded-normal policy std range
    maxstd: float = 1.0
    # -- generation switches (SPEC_V1_V2 §8); the defaults are DreamerV3 --------------------------
    latent: str = "categorical"  # "gaussian" (V1): ``stoch`` dims, ``classes`` must be 1
    std_act: str = "softplus"  # Gaussian latent std = act(raw) + min_std; "sigmoid2" for V2's variant
    min_std: float = 0.1  # Gaussian latent std floor (added, not clamped)
    cell: str = "block_gru"  # "gru" (V1, Keras GRU) | "ln_gru" (V2, LayerNorm GRU, update bias -1)
    act: str = "silu"  # RSSM-MLP and head activation: "silu" | "elu" | "relu"
    norm: str = "rms"  # RSSM-MLP and head norm: "rms" | "layer" | "none"
    init: str = "trunc_normal"  # "glorot" = Keras Dense defaults (glorot-uniform kernel, zero bias)
    cnn: str = "v3"  # "k4s2": V1/V2 conv k4 s2 encoder and ConvT decoder (64x64 images, no sigmoid)
    cnn_act: str | None = None  # conv activation of the k4s2 CNN; None = ``act`` (V1: relu convs, elu MLPs)
    head_dist: str = "twohot"  # reward/critic output: "twohot" | "normal" (unit-variance Normal mean)
    actor_dist: str = "auto"  # "auto" (V3) | "tanh_normal" (V1) | "trunc_normal" (V2) | "onehot"
    cont_head: bool = True  # False: no learned continue head (V1, V2 DMC); cont_prob is a constant 1
    mask_first_action: bool = True  # zero the previous action at is_first (every preset; an ablation switch)

    def __post_init__(self):
        _check_generation_fields(self)

    def replace(self, **changes) -> ModelConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; valid: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


_CHOICES = dict(
    latent=("categorical", "gaussian"), std_act=("softplus", "sigmoid", "sigmoid2"),
    cell=("block_gru", "gru", "ln_gru"), act=("silu", "elu", "relu"), norm=("rms", "layer", "none"),
    init=("trunc_normal", "glorot"), cnn=("v3", "k4s2"), head_dist=("twohot", "normal"),
    actor_dist=("auto", "tanh_normal", "trunc_normal", "onehot"),
)


def _check_generation_fields(cfg: ModelConfig) -> None:
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"ModelConfig.{name}={getattr(cfg, name)!r} is unknown; choose one of {choices}")
    if cfg.cnn_act is not None and cfg.cnn_act not in _CHOICES["act"]:
        raise ValueError(f"ModelConfig.cnn_act={cfg.cnn_act!r} is unknown; choose one of {_CHOICES['act']} or None")
    if cfg.latent == "gaussian" and cfg.classes != 1:
        raise ValueError(f"latent='gaussian' needs classes=1 (stoch={cfg.stoch} is the number of Gaussian dims), "
                         f"got classes={cfg.classes}")
    if cfg.cell == "block_gru" and cfg.latent != "categorical":
        raise ValueError("cell='block_gru' (V3's RSSM) supports only latent='categorical'; use cell='gru' or 'ln_gru'")
    if cfg.cell == "block_gru" and not cfg.mask_first_action:
        raise ValueError("cell='block_gru' (V3's RSSM) always masks the first action; mask_first_action=False "
                         "needs cell='gru' or 'ln_gru'")


def _size(deter: int, hidden: int, classes: int, depth: int, units: int) -> dict:
    return dict(deter=deter, hidden=hidden, classes=classes, depth=depth, units=units)


SIZES: dict[str, dict] = {
    # debug: configs.yaml's tiny networks (``.*\.layers: 1`` applies to every MLP, bins 5)
    "debug": dict(
        deter=8, hidden=3, stoch=2, classes=4, blocks=4, depth=2, units=8, bins=5,
        enc_layers=1, dec_layers=1, rew_layers=1, con_layers=1, pol_layers=1, val_layers=1,
    ),
    "size1m": _size(512, 64, 4, 4, 64),
    "size12m": _size(2048, 256, 16, 16, 256),
    "size25m": _size(3072, 384, 24, 24, 384),
    "size50m": _size(4096, 512, 32, 32, 512),
    "size100m": _size(6144, 768, 48, 48, 768),
    "size200m": _size(8192, 1024, 64, 64, 1024),
    "size400m": _size(12288, 1536, 96, 96, 1536),
}


_V1V2_COMMON = dict(
    act="elu", norm="none", init="glorot", cnn="k4s2", head_dist="normal", units=400, unimix=0.0,
    imglayers=1, obslayers=1, enc_layers=4, dec_layers=4,  # the k4s2 CNN fixes its kernels and depths
)

#: Overrides of :class:`ModelConfig` per generation (SPEC_V1_V2 §1-§2, §8). ``actor_dist`` names the
#: continuous-action distribution; discrete action spaces get ``onehot`` (straight-through).
GENERATIONS: dict[str, dict] = {
    # danijar/dreamer (TF2): Gaussian 30-d latent, Keras GRU 200, ReLU convs depth 32, ELU MLPs 400;
    # reward 2, value 3, actor 4 layers; no pcont head by default. The previous action is zeroed at
    # is_first as in V2: V1's stored reset step holds a zero action and its policy masks the action on
    # reset; only a chunk that starts mid-episode keeps its true action, which the V1 replay context "zero" handles (agent/generations.py).
    "dreamerv1": dict(
        _V1V2_COMMON, latent="gaussian", stoch=30, classes=1, std_act="softplus", min_std=0.1,
        deter=200, hidden=200, cell="gru", depth=32, cnn_act="relu",
        rew_layers=2, val_layers=3, con_layers=3, pol_layers=4,
        actor_dist="tanh_normal", cont_head=False, mask_first_action=True,
    ),
    # danijar/dreamerv2 Atari: 32x32 categorical without unimix, LN-GRU 600, ELU convs depth 48,
    # 4x400 heads, discount head on.
    "dreamerv2": dict(
        _V1V2_COMMON, latent="categorical", stoch=32, classes=32, unimix=0.0,
        deter=600, hidden=600, cell="ln_gru", depth=48, cnn_act="elu",
        rew_layers=4, val_layers=4, con_layers=4, pol_layers=4,
        actor_dist="trunc_normal", cont_head=True, mask_first_action=True,
    ),
}
# dmc_vision / dmc_proprio: deter = hidden = 200 and no discount head (pred_discount False)
GENERATIONS["dreamerv2_dmc"] = dict(GENERATIONS["dreamerv2"], deter=200, hidden=200, cont_head=False)


def model_config(size: str = "size200m", generation: str = "dreamerv3", **overrides) -> ModelConfig:
    """The preset ``size`` (or, for V1/V2, the ``generation`` preset) with ``overrides`` applied.

    ``model_config("size12m", strided=True)`` is a V3 model; ``model_config(generation="dreamerv1")``
    is V1 at the reference's size (``size`` is ignored for V1/V2, which have one size each; use
    ``overrides`` to shrink them, e.g. ``deter=16, hidden=8, units=16, depth=2``).
    """
    if generation != "dreamerv3":
        return generation_config(generation, **overrides)
    if size not in SIZES:
        raise ValueError(f"unknown size preset {size!r}; choose one of {list(SIZES)}")
    return ModelConfig().replace(**SIZES[size]).replace(**overrides)


def generation_config(name: str, **overrides) -> ModelConfig:
    """The :data:`GENERATIONS` preset ``name`` (``dreamerv1``, ``dreamerv2``, ``dreamerv2_dmc``) plus ``overrides``.

    ``dreamerv3`` gives the default ``size200m`` V3 model.
    """
    if name == "dreamerv3":
        return ModelConfig().replace(**overrides)
    if name not in GENERATIONS:
        raise ValueError(f"unknown generation {name!r}; choose one of {['dreamerv3', *GENERATIONS]}")
    return ModelConfig().replace(**{**GENERATIONS[name], **overrides})
