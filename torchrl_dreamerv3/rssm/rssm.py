"""Recurrent state-space model: block-GRU core, prior, posterior and their loops (SPEC §3).

State: ``deter (..., D)`` and ``stoch (..., S, Cl)`` (one-hot per latent, straight-through).
This file is tensors in, tensors out; :mod:`torchrl_dreamerv3.modules` wires it to TensorDict keys.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import sample_unimix_onehot
from ..nets.layers import MLP, Linear
from .core import BlockGRU

__all__ = ["RSSM"]


class RSSM(nn.Module):
    """DreamerV3's RSSM with the reference's layer structure and parameter count.

    Args:
        action_dim: size of the (one-hot or continuous) action vector.
        token_dim: size of the encoder output.
        deter, hidden, stoch, classes, blocks: model sizes (SPEC §1.7).
        imglayers, obslayers, dynlayers: depth of prior, posterior and core hidden layers.
        unimix: uniform mixture of the latent categoricals.

    Examples:
        >>> import torch
        >>> rssm = RSSM(action_dim=3, token_dim=10, deter=16, hidden=4, stoch=2, classes=4, blocks=4)
        >>> deter, stoch = rssm.initial((5,))
        >>> deter, stoch, logits = rssm.observe_step(deter, stoch, torch.zeros(5, 3),
        ...                                          torch.randn(5, 10), torch.ones(5, dtype=torch.bool))
        >>> deter.shape, stoch.shape, logits.shape
        (torch.Size([5, 16]), torch.Size([5, 2, 4]), torch.Size([5, 2, 4]))
    """

    def __init__(
        self,
        action_dim: int,
        token_dim: int,
        deter: int = 8192,
        hidden: int = 1024,
        stoch: int = 32,
        classes: int = 64,
        blocks: int = 8,
        imglayers: int = 2,
        obslayers: int = 1,
        dynlayers: int = 1,
        unimix: float = 0.01,
        outscale: float = 1.0,
    ):
        super().__init__()
        if obslayers < 1:
            raise ValueError(f"obslayers must be >= 1, got {obslayers}")
        self.action_dim, self.token_dim = action_dim, token_dim
        self.deter, self.stoch, self.classes, self.unimix = deter, stoch, classes, unimix
        self.core = BlockGRU(deter, stoch * classes, action_dim, hidden, blocks, dynlayers)
        self.prior_net = MLP(deter, imglayers, hidden)
        self.prior_out = Linear(hidden if imglayers else deter, stoch * classes, outscale)
        # The first posterior layer reads concat(deter, tokens). Its token half does not depend on
        # the recurrence, so sequences apply it to all steps at once (see ``observe``).
        self.post_net = MLP(deter + token_dim, obslayers, hidden)
        self.post_out = Linear(hidden, stoch * classes, outscale)
        self.steps_compiled = False

    def compile_steps(self, **kwargs) -> None:
        """Compiles the per-step pieces in place (``torch.compile(**kwargs)``), once: the core's step, the prior
        and the posterior head. Instance attributes shadow the methods, so every caller (observe loop,
        imagination, acting) goes through the compiled step; its weights are hoisted outside it
        (``core.step_weights()``)."""
        if self.steps_compiled:
            return
        self.core.step = torch.compile(self.core.step, **kwargs)
        self.prior = torch.compile(self.prior, **kwargs)
        self.post_out.compile(**kwargs)
        self.steps_compiled = True

    # -- pieces ------------------------------------------------------------------------------
    def initial(self, batch_shape, device=None, dtype=torch.float32):
        """Zero state (the reference has no learned initial state)."""
        deter = torch.zeros(*batch_shape, self.deter, device=device, dtype=dtype)
        return deter, torch.zeros(*batch_shape, self.stoch, self.classes, device=device, dtype=dtype)

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """Straight-through one-hot sample of the unimixed latent categoricals."""
        return sample_unimix_onehot(logits, self.unimix)

    def prior(self, deter: torch.Tensor) -> torch.Tensor:
        """Prior logits ``(..., S, Cl)`` from the deterministic state."""
        return self.prior_out(self.prior_net(deter)).unflatten(-1, (self.stoch, self.classes))

    def posterior(self, deter: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Posterior logits ``(..., S, Cl)`` from ``concat(deter, tokens)``."""
        x = self.post_net(torch.cat([deter, tokens], -1))
        return self.post_out(x).unflatten(-1, (self.stoch, self.classes))

    # -- single steps ---------------------------------------------------------------------------
    def observe_step(self, deter, stoch, prev_action, tokens, is_first):
        """One filtering step; the previous state and action are zeroed where ``is_first``.

        Shapes: ``deter (N, D)``, ``stoch (N, S, Cl)``, ``prev_action (N, A)``, ``tokens (N, E)``,
        ``is_first (N,)`` bool. Returns ``deter, stoch, post_logits``.
        """
        keep = (~is_first.reshape(-1, 1)).to(deter.dtype)
        deter = self.core(deter * keep, stoch * keep[..., None], self.core.embed_action(prev_action * keep))
        logits = self.posterior(deter, tokens)
        return deter, self.sample(logits), logits

    def imagine_step(self, deter, stoch, action):
        """One prior step (no resets during imagination). Returns ``deter, stoch, prior_logits``."""
        deter = self.core(deter, stoch, self.core.embed_action(action))
        logits = self.prior(deter)
        return deter, self.sample(logits), logits

    # -- sequences -----------------------------------------------------------------------------
    def observe(self, deter, stoch, prev_actions, tokens, is_first):
        """Filter a whole sequence from the carry ``(deter (B, D), stoch (B, S, Cl))``.

        ``prev_actions (B, T, A)`` is the action taken before each step, ``tokens (B, T, E)``,
        ``is_first (B, T)``. Returns ``deter (B, T, D)``, ``stoch (B, T, S, Cl)``,
        ``post_logits (B, T, S, Cl)``. Work that does not depend on the recurrence (action
        embedding, the token half of the first posterior layer) runs once for all steps.
        """
        batch, steps = tokens.shape[:2]
        is_first = is_first.reshape(batch, steps)
        keep = (~is_first).to(deter.dtype)
        action_emb = self.core.embed_action(prev_actions * keep[..., None])
        first, first_norm = self.post_net[0], self.post_net[1]
        token_part = F.linear(tokens, first.weight[:, self.deter:], first.bias)
        deter_weight = first.weight[:, : self.deter].t()
        rest = list(self.post_net)[2:]
        core_weights = self.core.step_weights()
        # Host-side list of the steps where some sequence starts (one device sync per sequence);
        # the other steps skip the reset multiplications, which would multiply by exactly 1.
        resets = is_first.any(0).tolist()
        deters, stochs, logits = [], [], []
        # unbind, not [:, t]: the backward of T selects would build T full-size zero tensors
        steps_in = zip(resets, keep.unbind(1), action_emb.unbind(1), token_part.unbind(1))
        for reset, k, emb, tokens_t in steps_in:
            if reset:
                k = k[:, None]
                deter, stoch = deter * k, stoch * k[..., None]
            deter = self.core.step(deter, stoch, emb, core_weights)
            x = first_norm(torch.addmm(tokens_t, deter, deter_weight))
            for layer in rest:
                x = layer(x)
            step_logits = self.post_out(x).unflatten(-1, (self.stoch, self.classes))
            stoch = self.sample(step_logits)
            deters.append(deter)
            stochs.append(stoch)
            logits.append(step_logits)
        return torch.stack(deters, 1), torch.stack(stochs, 1), torch.stack(logits, 1)
