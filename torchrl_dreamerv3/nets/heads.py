"""Prediction heads on the RSSM state (SPEC §5, reference ``embodied/jax/heads.py``).

Every head reads ``feat = concat(deter, stoch.flatten(-2))`` (reference ``feat2tensor``), runs
``MLP(layers, units)`` and one output ``Linear`` initialised with ``outscale``. Heads return raw
tensors (logits or distribution parameters); the distributions live in
:mod:`torchrl_dreamerv3.functional`. Any number of leading batch dims is supported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchrl_dreamerv3.nets.dense import make_linear, make_mlp

__all__ = [
    "check_state",
    "MLPHead",
    "TwoHotHead",
    "NormalHead",
    "BinaryHead",
    "CategoricalHead",
    "BoundedNormalHead",
]


def check_state(owner: str, deter: torch.Tensor, stoch: torch.Tensor, deter_size: int, stoch_size: int, classes: int) -> None:
    """Raise if ``deter (..., D)`` / ``stoch (..., S, Cl)`` do not match the configured sizes."""
    if deter.shape[-1:] != (deter_size,):
        raise ValueError(f"{owner}: 'deter' must have shape (..., {deter_size}), got {tuple(deter.shape)}")
    if stoch.shape[-2:] != (stoch_size, classes):
        raise ValueError(
            f"{owner}: 'stoch' must have shape (..., {stoch_size}, {classes}), got {tuple(stoch.shape)}"
        )
    if deter.shape[:-1] != stoch.shape[:-2]:
        raise ValueError(
            f"{owner}: leading dims of 'deter' {tuple(deter.shape[:-1])} and 'stoch' "
            f"{tuple(stoch.shape[:-2])} differ"
        )


class MLPHead(nn.Module):
    """``Linear_out(MLP(concat(deter, stoch.flatten(-2))))`` (reference ``MLPHead``).

    Args:
        deter, stoch, classes: RSSM sizes ``D``, ``S``, ``Cl``; the input has ``D + S * Cl`` features.
        layers, units: the MLP, ``layers`` x [Linear(units) -> RMSNorm -> SiLU].
        out_features: size of the output layer ``out``.
        outscale: init scale of ``out`` (0 gives an all-zero kernel).
        act, norm, init: layer recipe (V3: ``silu``, ``rms``, ``trunc_normal``; V1/V2: ``elu``, ``none``,
            ``glorot``), see :func:`~torchrl_dreamerv3.nets.dense.make_mlp`.
    """

    def __init__(self, deter: int, stoch: int, classes: int, layers: int, units: int, out_features: int,
                 outscale: float = 1.0, act: str = "silu", norm: str = "rms", init: str = "trunc_normal"):
        super().__init__()
        self.deter, self.stoch, self.classes = deter, stoch, classes
        self.in_features = deter + stoch * classes
        self.mlp = make_mlp(self.in_features, layers, units, act, norm, init)
        self.out = make_linear(self.mlp.out_features, out_features, init, outscale)
        self.out_features = out_features

    def trunk(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """MLP output for ``feat = concat(deter, stoch.flatten(-2))``."""
        check_state(type(self).__name__, deter, stoch, self.deter, self.stoch, self.classes)
        if len(self.mlp) == 0:
            return torch.cat([deter, stoch.flatten(-2)], -1)
        # The first layer is applied to the two halves of feat separately,
        # W @ feat + b = W_deter @ deter + W_stoch @ stoch + b, so the (..., D + S*Cl) concat is never
        # materialised: heads run on B*T*(H+1) imagined states, where that copy costs as much as the matmul.
        first, lead = self.mlp[0], deter.shape[:-1]
        x = torch.addmm(F.linear(deter.reshape(-1, self.deter), first.weight[:, : self.deter], first.bias),
                        stoch.reshape(-1, self.stoch * self.classes), first.weight[:, self.deter :].t())
        x = x.reshape(*lead, -1)
        for layer in list(self.mlp)[1:]:
            x = layer(x)
        return x

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(deter, stoch))


class TwoHotHead(MLPHead):
    """Reward / value head: ``bins`` logits for the symexp two-hot output (zero-init by default)."""

    def __init__(self, deter: int, stoch: int, classes: int, layers: int, units: int, bins: int = 255,
                 outscale: float = 0.0, **style):
        super().__init__(deter, stoch, classes, layers, units, bins, outscale, **style)
        self.bins = bins


class NormalHead(MLPHead):
    """Reward / value head of V1/V2: the mean ``(..., 1)`` of a unit-variance Normal (a linear output)."""

    def __init__(self, deter: int, stoch: int, classes: int, layers: int, units: int, outscale: float = 1.0, **style):
        super().__init__(deter, stoch, classes, layers, units, 1, outscale, **style)


class BinaryHead(MLPHead):
    """Continue head: one Bernoulli logit ``(..., 1)``."""

    def __init__(self, deter: int, stoch: int, classes: int, layers: int, units: int, outscale: float = 1.0, **style):
        super().__init__(deter, stoch, classes, layers, units, 1, outscale, **style)


class CategoricalHead(MLPHead):
    """Discrete policy head: ``actions`` logits (no unimix, as in the reference, SPEC §5.3)."""

    def __init__(self, deter: int, stoch: int, classes: int, layers: int, units: int, actions: int,
                 outscale: float = 0.01, **style):
        super().__init__(deter, stoch, classes, layers, units, actions, outscale, **style)
        self.actions = actions


class BoundedNormalHead(MLPHead):
    """Continuous policy head: the raw ``(mean_raw, std_raw)``, each ``(..., actions)``.

    Two separate output layers as in the reference: ``out`` (reference ``mean``) and ``std_out``
    (reference ``stddev``), both with ``outscale``. The bounded transform
    ``mean = tanh(mean_raw)``, ``std = (max - min) * sigmoid(std_raw + 2) + min`` is applied by
    ``torchrl_dreamerv3.functional.distributions.bounded_normal``.
    """

    def __init__(self, deter: int, stoch: int, classes: int, layers: int, units: int, actions: int,
                 outscale: float = 0.01, **style):
        super().__init__(deter, stoch, classes, layers, units, actions, outscale, **style)
        self.actions = actions
        self.std_out = make_linear(self.mlp.out_features, actions, style.get("init", "trunc_normal"), outscale)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(deter, stoch)
        return self.out(x), self.std_out(x)
