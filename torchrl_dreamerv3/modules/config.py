"""Model hyperparameters and the reference's size presets (SPEC §1.6-§1.7)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["ModelConfig", "SIZES", "model_config"]


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

    def replace(self, **changes) -> ModelConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; valid: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


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


def model_config(size: str = "size200m", **overrides) -> ModelConfig:
    """The preset ``size`` with ``overrides`` applied, e.g. ``model_config("size12m", strided=True)``."""
    if size not in SIZES:
        raise ValueError(f"unknown size preset {size!r}; choose one of {list(SIZES)}")
    return ModelConfig().replace(**SIZES[size]).replace(**overrides)
