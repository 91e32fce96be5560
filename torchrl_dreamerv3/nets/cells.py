"""Recurrent cells of DreamerV1 and DreamerV2 (SPEC_V1_V2 §1.1, §2.1).

- :class:`GRUCell`: V1's ``tf.keras.layers.GRUCell(200)`` with TF2 defaults (``reset_after=True``,
  tanh / sigmoid, glorot-uniform input kernel, orthogonal recurrent kernel, zero biases). Its
  equations are exactly those of ``torch.nn.GRUCell``; only the initialisation differs.
- :class:`LayerNormGRUCell`: V2's custom cell (``v2:nets.py`` ``GRUCell(deter, norm=True)``): one
  dense layer over ``[x, h]``, LayerNorm over all ``3 * hidden`` units, reset applied to the whole
  candidate pre-activation, update bias -1, and the update gate weighting the *new* candidate.

(V3's block GRU is :class:`torchrl_dreamerv3.rssm.core.BlockGRU`.) Both cells take
``forward(x [..., input_size], h [..., hidden_size]) -> h' [..., hidden_size]`` with any leading dims.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["glorot_uniform_", "GRUCell", "LayerNormGRUCell"]

_INITS = ("keras", "torch")


@torch.no_grad()
def glorot_uniform_(weight: torch.Tensor) -> torch.Tensor:
    """Keras ``glorot_uniform`` for a torch ``(out, in)`` weight: ``U(±sqrt(6 / (in + out)))``."""
    fan_out, fan_in = weight.shape
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return weight.uniform_(-limit, limit)


class GRUCell(nn.GRUCell):
    """DreamerV1's GRU (Keras ``GRUCell``, TF2 defaults), as a ``torch.nn.GRUCell``.

    Keras with ``reset_after=True`` and PyTorch compute the same function (gates ``z, r``)::

        z = sigmoid(W_z x + b_iz + U_z h + b_hz);  r = sigmoid(W_r x + b_ir + U_r h + b_hr)
        n = tanh(W_n x + b_in + r * (U_n h + b_hn))      # reset applied after the recurrent matmul
        h' = z * h + (1 - z) * n                          # z weights the OLD state

    with two bias vectors (input and recurrent) and no LayerNorm or update bias. Parameters keep
    PyTorch's names and gate order ``(r, z, n)``, so ``nn.GRUCell`` state dicts load directly;
    :meth:`load_keras_weights` maps a Keras checkpoint (gate order ``(z, r, h)``).

    Args:
        input_size: size of ``x`` (V1: the 200-unit ``img1`` output).
        hidden_size: size of ``h`` (V1: ``deter = 200``).
        init: ``"keras"`` (default; glorot-uniform input kernel over the fused ``(in, 3H)`` matrix,
            orthogonal fused recurrent kernel, zero biases) or ``"torch"`` (``nn.GRUCell``'s uniform).
    """

    def __init__(self, input_size: int, hidden_size: int, init: str = "keras"):
        if init not in _INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {_INITS}")
        self.init = init
        super().__init__(input_size, hidden_size, bias=True)

    def reset_parameters(self) -> None:
        if self.init == "torch":
            return super().reset_parameters()
        glorot_uniform_(self.weight_ih)
        nn.init.orthogonal_(self.weight_hh)  # (3H, H): orthonormal columns = Keras (H, 3H) rows
        nn.init.zeros_(self.bias_ih)
        nn.init.zeros_(self.bias_hh)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        lead = h.shape[:-1]
        if x.shape[:-1] != lead:
            raise ValueError(f"GRUCell: x {tuple(x.shape)} and h {tuple(h.shape)} need the same leading dims")
        out = super().forward(x.reshape(-1, self.input_size), h.reshape(-1, self.hidden_size))
        return out.reshape(*lead, self.hidden_size)

    @torch.no_grad()
    def load_keras_weights(self, kernel: torch.Tensor, recurrent_kernel: torch.Tensor, bias: torch.Tensor) -> None:
        """Copy Keras weights: ``kernel (in, 3H)``, ``recurrent_kernel (H, 3H)``, ``bias (2, 3H)``
        (row 0 input bias, row 1 recurrent bias), Keras gate order ``(z, r, h)``."""
        H = self.hidden_size

        def reorder(m: torch.Tensor) -> torch.Tensor:  # (..., 3H) in (z, r, h) -> (r, z, n) along last
            z, r, n = m.split(H, -1)
            return torch.cat([r, z, n], -1)

        self.weight_ih.copy_(reorder(torch.as_tensor(kernel)).T)
        self.weight_hh.copy_(reorder(torch.as_tensor(recurrent_kernel)).T)
        bias = reorder(torch.as_tensor(bias))
        self.bias_ih.copy_(bias[0])
        self.bias_hh.copy_(bias[1])


class LayerNormGRUCell(nn.Module):
    """DreamerV2's GRU cell with LayerNorm on the fused projection.

    ::

        parts = LayerNorm(Linear([x, h]))            # 3H units, eps 1e-3, learned scale and shift
        reset, cand, update = split(parts, 3)        # in this order
        reset = sigmoid(reset)
        cand = act(reset * cand)                     # reset scales the WHOLE candidate pre-activation
        update = sigmoid(update + update_bias)       # update_bias = -1
        h' = update * cand + (1 - update) * h        # update weights the NEW candidate

    The LayerNorm runs in float32 (as the reference does under mixed precision).

    Args:
        input_size: size of ``x`` (V2: the ``img_in`` output, ``hidden`` units).
        hidden_size: size of ``h`` (V2: ``deter``, 600 Atari / 200 DMC / 1024 default).
        norm: LayerNorm on (V2 hard-codes ``norm=True``); ``False`` keeps the dense bias, drops the norm.
        update_bias: added to the update pre-activation (-1.0).
        eps: LayerNorm epsilon (Keras default 1e-3; PyTorch's would be 1e-5).
        act: candidate activation (``torch.tanh``).
        init: ``"keras"`` (glorot-uniform kernel, zero bias) or ``"torch"`` (``nn.Linear`` default).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        norm: bool = True,
        update_bias: float = -1.0,
        eps: float = 1e-3,
        act: Callable[[torch.Tensor], torch.Tensor] = torch.tanh,
        init: str = "keras",
    ):
        super().__init__()
        if init not in _INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {_INITS}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.update_bias, self.act = update_bias, act
        self.linear = nn.Linear(input_size + hidden_size, 3 * hidden_size, bias=True)
        self.norm = nn.LayerNorm(3 * hidden_size, eps=eps) if norm else None
        if init == "keras":
            glorot_uniform_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        parts = self.linear(torch.cat([x, h], -1))
        if self.norm is not None:
            parts = F.layer_norm(parts.float(), self.norm.normalized_shape, self.norm.weight,
                                 self.norm.bias, self.norm.eps).to(parts.dtype)
        reset, cand, update = parts.chunk(3, -1)
        reset = torch.sigmoid(reset)
        cand = self.act(reset * cand)
        update = torch.sigmoid(update + self.update_bias)
        return update * cand + (1.0 - update) * h

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, update_bias={self.update_bias}"
