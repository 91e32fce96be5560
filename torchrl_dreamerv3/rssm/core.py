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
        # The update gate is sigmoid(update - 1): the -1 is added to the gate bias (per block
        # [reset, cand, update]) rather than to every activation. Not a parameter, not saved.
        offset = torch.zeros(blocks, 3, per_block)
        offset[:, 2] = -1.0
        self.register_buffer("gate_offset", offset.view(blocks, 3 * per_block), persistent=False)

    def embed_action(self, action: torch.Tensor) -> torch.Tensor:
        """Action embedding; separate so that a whole sequence of known actions is embedded at once."""
        return self.action_in(scale_action(action))

    def step_weights(self) -> tuple[torch.Tensor, ...]:
        """The parameters rearranged for :meth:`step`: the first block layer split into its ``h``
        and ``x`` rows (the latter as one dense matrix), and per gate a kernel and a bias (the update
        gate's -1 folded in). They depend only on the parameters, so a loop computes them once per
        sequence rather than once per step (gradients still reach the parameters through them).
        """
        g, per_block = self.blocks, self.deter // self.blocks
        w = self.hidden_layers[0].weight  # (G, D/G + 3*hidden, D/G): rows [h_g ; x]
        w_h, w_x = w.split([per_block, w.shape[1] - per_block], dim=1)
        w_x = w_x.transpose(0, 1).reshape(w_x.shape[1], self.deter)  # (3*hidden, D)
        biases = (self.gates.bias.view(g, 3 * per_block) + self.gate_offset).view(g, 1, 3, per_block).unbind(2)
        kernels = self.gates.weight.view(g, per_block, 3, per_block).unbind(2)
        return (w_h, w_x, *biases, *kernels)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor, action_emb: torch.Tensor) -> torch.Tensor:
        """Next deterministic state from ``deter (N, D)``, ``stoch (N, S, Cl)`` and an embedded action."""
        return self.step(deter, stoch, action_emb, self.step_weights())

    def step(self, deter: torch.Tensor, stoch: torch.Tensor, action_emb: torch.Tensor,
             weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:meth:`forward` with the parameters from :meth:`step_weights` (hoisted out of loops).

        This runs at every RSSM step, so it is written to launch few kernels. The block layers
        work in the ``(G, N, D/G)`` layout that ``bmm`` produces (``deter`` is viewed that way,
        never copied), biases are fused into ``addmm``/``baddbmm``, and
        ``update * cand + (1 - update) * deter`` is one ``lerp`` whose output lands in ``deter``'s
        ``(N, D)`` layout. Same function as the literal formulation (``tests/test_rssm.py::_literal_core``).
        """
        w_h, w_x, b_reset, b_cand, b_update, k_reset, k_cand, k_update = weights
        n, g, per_block = deter.shape[0], self.blocks, self.deter // self.blocks
        x = torch.cat([self.deter_in(deter), self.stoch_in(stoch.flatten(-2)), action_emb], -1)
        h = deter.view(n, g, per_block).transpose(0, 1)  # (G, N, D/G) view
        x_part = torch.addmm(self.hidden_layers[0].bias, x, w_x)
        u = torch.baddbmm(x_part.view(n, g, per_block).transpose(0, 1), h, w_h)  # (G, N, D/G)
        u = self.hidden_norms[0](u.transpose(0, 1).reshape(n, self.deter))
        for layer, norm in zip(self.hidden_layers[1:], self.hidden_norms[1:]):
            u = norm(layer(u))
        # One (G, N, D/G) product per gate, so that each gate is contiguous: element-wise ops on
        # strided slices of a joint (G, N, 3*D/G) product are several times slower on CPU.
        u = u.view(n, g, per_block).transpose(0, 1)
        cand = torch.tanh(torch.sigmoid(torch.baddbmm(b_reset, u, k_reset)) * torch.baddbmm(b_cand, u, k_cand))
        update = torch.sigmoid(torch.baddbmm(b_update, u, k_update))
        # Under bf16 autocast the gates come out in bf16; the carry keeps the state's dtype.
        out = torch.lerp(h, cand.to(h.dtype), update.to(h.dtype))  # h + update * (cand - h), laid out like h
        return out.transpose(0, 1).reshape(n, self.deter)
