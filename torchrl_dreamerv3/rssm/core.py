"""The block-diagonal GRU that advances the deterministic state (SPEC §3.2)."""
from __future__ import annotations

import torch
from torch import nn

from ..nets.layers import BlockLinear, Linear, NormAct

__all__ = ["BlockGRU", "scale_action"]


def scale_action(action: torch.Tensor) -> torch.Tensor:
    """``a / sg(max(1, |a|))`` elementwise: continuous actions outside [-1, 1] are shrunk, not clipped."""
    return action / action.detach().abs().clamp(min=1.0)


class BlockGRU(nn.Module):
    """``h' = f(h, z, a)``: the reference's block GRU with separate input projections.

    ``h``, ``z`` and ``a`` are each embedded by ``Linear(hidden) -> RMSNorm -> SiLU``; block ``g``
    of the hidden layer sees its own slice of ``h`` plus the whole embedding; the output layer
    yields, per block, the gates in the order ``[reset, cand, update]``; the update gate has a
    bias of -1 (``sigmoid(update - 1)``).

    The input of the first block layer is ``concat(h_g, x)`` with ``x`` shared by all blocks. Instead
    of materialising ``G`` copies of ``x`` we split that layer's kernel into its ``h`` rows (a block
    matmul) and its ``x`` rows (one dense matmul): same parameters, same function, less memory.
    """

    def __init__(self, deter: int, stoch_flat: int, action_dim: int, hidden: int, blocks: int, dynlayers: int = 1):
        super().__init__()
        if deter % blocks:
            raise ValueError(f"deter={deter} must be divisible by blocks={blocks}")
        if dynlayers < 1:
            raise ValueError(f"dynlayers must be >= 1, got {dynlayers}")
        self.deter, self.hidden, self.blocks = deter, hidden, blocks
        self.deter_in = nn.Sequential(Linear(deter, hidden), NormAct(hidden))
        self.stoch_in = nn.Sequential(Linear(stoch_flat, hidden), NormAct(hidden))
        self.action_in = nn.Sequential(Linear(action_dim, hidden), NormAct(hidden))
        per_block = deter // blocks
        self.hidden_layers = nn.ModuleList()
        self.hidden_norms = nn.ModuleList()
        for i in range(dynlayers):
            width = blocks * (per_block + 3 * hidden) if i == 0 else deter
            self.hidden_layers.append(BlockLinear(width, deter, blocks))
            self.hidden_norms.append(NormAct(deter))
        self.gates = BlockLinear(deter, 3 * deter, blocks)

    def embed_action(self, action: torch.Tensor) -> torch.Tensor:
        """Action embedding; separate so that a whole sequence of known actions is embedded at once."""
        return self.action_in(scale_action(action))

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor, action_emb: torch.Tensor) -> torch.Tensor:
        """Next deterministic state from ``deter (N, D)``, ``stoch (N, S, Cl)`` and an embedded action."""
        n, g, per_block = deter.shape[0], self.blocks, self.deter // self.blocks
        x = torch.cat([self.deter_in(deter), self.stoch_in(stoch.flatten(-2)), action_emb], -1)
        first = self.hidden_layers[0]
        w = first.weight  # (G, D/G + 3*hidden, D/G)
        h_part = torch.bmm(deter.view(n, g, per_block).transpose(0, 1), w[:, :per_block]).transpose(0, 1)
        x_part = x @ w[:, per_block:].transpose(0, 1).reshape(x.shape[-1], self.deter)
        u = self.hidden_norms[0](h_part.reshape(n, self.deter) + x_part + first.bias)
        for layer, norm in zip(self.hidden_layers[1:], self.hidden_norms[1:]):
            u = norm(layer(u))
        reset, cand, update = self.gates(u).view(n, g, 3, per_block).unbind(2)
        reset = torch.sigmoid(reset.reshape(n, self.deter))
        cand = torch.tanh(reset * cand.reshape(n, self.deter))
        update = torch.sigmoid(update.reshape(n, self.deter) - 1.0)
        return update * cand + (1.0 - update) * deter
