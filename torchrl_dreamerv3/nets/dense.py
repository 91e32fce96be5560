"""Keras-style dense layers of DreamerV1/V2 (SPEC_V1_V2 §1.2, §2.2, §10).

V1 and V2 build every MLP from ``tf.keras.layers.Dense`` with its defaults: glorot-uniform kernel,
zero bias, the activation after an optional norm (V2's ``NormLayer``, ``none`` except on Crafter).
:func:`make_mlp` returns V3's :class:`~torchrl_dreamerv3.nets.layers.MLP` for V3's combination
(SiLU, RMSNorm, trunc-normal init), so V3 models keep their exact parameters and names, and a
:class:`DenseMLP` for every other combination.
"""
from __future__ import annotations

from torch import nn

from .cells import glorot_uniform_
from .layers import MLP, RMS_EPS, Linear, trunc_normal_in_

__all__ = ["ACTS", "NORMS", "INITS", "DenseLinear", "DenseMLP", "make_mlp", "make_linear", "make_act", "check_choice", "is_v3_style"]

ACTS = ("silu", "elu", "relu")
NORMS = ("rms", "layer", "none")
INITS = ("trunc_normal", "glorot")
KERAS_LAYERNORM_EPS = 1e-3  # Keras' LayerNormalization default (PyTorch's is 1e-5)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}")
    return value


def make_act(name: str) -> nn.Module:
    return {"silu": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU}[check_choice("act", name, ACTS)]()


def _make_norm(name: str, features: int) -> list[nn.Module]:
    if check_choice("norm", name, NORMS) == "none":
        return []
    if name == "layer":
        return [nn.LayerNorm(features, eps=KERAS_LAYERNORM_EPS)]
    return [nn.RMSNorm(features, eps=RMS_EPS)]


class DenseLinear(nn.Linear):
    """``nn.Linear`` initialised like Keras ``Dense``: glorot-uniform kernel, zero bias."""

    def reset_parameters(self) -> None:
        glorot_uniform_(self.weight)
        nn.init.zeros_(self.bias)


class DenseMLP(nn.Sequential):
    """``layers`` x [DenseLinear(units) -> norm -> act] (V1/V2 ``MLP``; ELU and no norm there)."""

    def __init__(self, in_features: int, layers: int, units: int, act: str = "elu", norm: str = "none"):
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [DenseLinear(in_features if i == 0 else units, units), *_make_norm(norm, units), make_act(act)]
        super().__init__(*blocks)
        self.in_features = in_features
        self.out_features = units if layers else in_features


def is_v3_style(act: str, norm: str, init: str) -> bool:
    """True for V3's own layer recipe: SiLU, RMSNorm and trunc-normal init."""
    check_choice("act", act, ACTS), check_choice("norm", norm, NORMS), check_choice("init", init, INITS)
    return (act, norm, init) == ("silu", "rms", "trunc_normal")


def make_mlp(in_features: int, layers: int, units: int, act: str = "silu", norm: str = "rms",
             init: str = "trunc_normal") -> nn.Sequential:
    """V3's :class:`MLP` for V3's recipe, otherwise a :class:`DenseMLP` (glorot init; its ``norm``)."""
    if is_v3_style(act, norm, init):
        return MLP(in_features, layers, units)
    if init == "trunc_normal":
        mlp = DenseMLP(in_features, layers, units, act, norm)
        for layer in mlp:
            if isinstance(layer, DenseLinear):
                trunc_normal_in_(layer.weight, layer.in_features)  # V3's kernel init; bias stays zero
        return mlp
    return DenseMLP(in_features, layers, units, act, norm)


def make_linear(in_features: int, out_features: int, init: str = "trunc_normal", outscale: float = 1.0) -> nn.Linear:
    """Output layer: V3's trunc-normal :class:`Linear` with ``outscale``, or a Keras :class:`DenseLinear`.

    ``outscale`` belongs to V3's initialiser; a glorot layer ignores it except ``0`` (zero kernel).
    """
    if check_choice("init", init, INITS) == "trunc_normal":
        return Linear(in_features, out_features, outscale)
    layer = DenseLinear(in_features, out_features)
    if outscale == 0.0:
        nn.init.zeros_(layer.weight)
    return layer
