"""The RSSM of DreamerV1 and DreamerV2: a dense-input GRU cell and one-hidden-layer stats nets.

Prior step (``img_step``, SPEC_V1_V2 §1.1, §2.1)::

    x = act(norm(Dense(hidden)([stoch.flatten(), action])))     # no action scaling (V3 has it)
    h = cell(x, h)                                               # Keras GRU (V1) or LN-GRU (V2)
    prior = latent.stats(Dense(stats)(MLP(h)))                   # imglayers hidden layers (1)

Posterior step (``obs_step``): ``post = latent.stats(Dense(stats)(MLP([h, embed])))`` with
``obslayers`` hidden layers (1); the posterior keeps the prior's ``h``. The latent strategy
(:mod:`~torchrl_dreamerv3.rssm.latents`) decides between logits and Gaussian stats.

Resets: the previous state is zeroed where ``is_first``; the previous action too when
``mask_first_action`` (V1 and V2: their reset steps hold a zero action). V1's training chunks that start
mid-episode begin from a zero state with the recorded previous action; that is the replay split's
``context="zero"`` (not ``is_first``), so the action is kept there.

Same method names, shapes and attributes (``deter``, ``stoch``, ``classes``, ``unimix``) as
:class:`~torchrl_dreamerv3.rssm.RSSM`, so the TensorDict wrappers serve both.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nets.cells import GRUCell, LayerNormGRUCell
from ..nets.dense import make_linear, make_mlp
from .latents import CategoricalLatent, GaussianLatent

__all__ = ["DenseRSSM", "DENSE_CELLS", "make_cell"]

DENSE_CELLS = ("gru", "ln_gru")


def make_cell(cell: str, input_size: int, hidden_size: int) -> nn.Module:
    """``gru``: V1's Keras GRU (no norm, no update bias); ``ln_gru``: V2's LayerNorm GRU (update bias -1)."""
    if cell == "gru":
        return GRUCell(input_size, hidden_size)
    if cell == "ln_gru":
        return LayerNormGRUCell(input_size, hidden_size, norm=True, update_bias=-1.0)
    raise ValueError(f"unknown dense cell {cell!r}; choose one of {DENSE_CELLS}")


class DenseRSSM(nn.Module):
    """DreamerV1/V2 RSSM. Tensors in, tensors out; shapes as :class:`~torchrl_dreamerv3.rssm.RSSM`.

    Args:
        action_dim, token_dim: action and encoder-output sizes.
        latent: a :class:`CategoricalLatent` or :class:`GaussianLatent`.
        deter, hidden: GRU state size and hidden units (V1 200/200; V2 Atari 600/600, DMC 200/200).
        cell: ``gru`` or ``ln_gru``.
        imglayers, obslayers: hidden layers of the prior and posterior stats nets (1 and 1).
        act, norm, init: layer recipe (V1/V2: ``elu``, ``none``, ``glorot``).
        mask_first_action: zero the previous action where ``is_first`` (True for V1 and V2).

    Examples:
        >>> import torch
        >>> rssm = DenseRSSM(3, 10, GaussianLatent(4), deter=6, hidden=5, cell="gru")
        >>> deter, stoch = rssm.initial((2,))
        >>> deter, stoch, post = rssm.observe_step(deter, stoch, torch.zeros(2, 3), torch.randn(2, 10),
        ...                                        torch.ones(2, dtype=torch.bool))
        >>> deter.shape, stoch.shape, post.shape
        (torch.Size([2, 6]), torch.Size([2, 4, 1]), torch.Size([2, 4, 2]))
    """

    def __init__(self, action_dim: int, token_dim: int, latent: CategoricalLatent | GaussianLatent,
                 deter: int = 200, hidden: int = 200, cell: str = "gru", imglayers: int = 1, obslayers: int = 1,
                 act: str = "elu", norm: str = "none", init: str = "glorot", mask_first_action: bool = True):
        super().__init__()
        if obslayers < 1:
            raise ValueError(f"obslayers must be >= 1, got {obslayers}")
        self.action_dim, self.token_dim = action_dim, token_dim
        self.latent = latent
        self.deter, self.stoch, self.classes = deter, latent.stoch, latent.classes
        self.unimix = getattr(latent, "unimix", 0.0)
        self.mask_first_action = mask_first_action
        self.img_in = make_mlp(self.stoch * self.classes + action_dim, 1, hidden, act, norm, init)
        self.cell = make_cell(cell, hidden, deter)
        self.prior_net = make_mlp(deter, imglayers, hidden, act, norm, init)
        self.prior_out = make_linear(self.prior_net.out_features, latent.stats_features, init)
        self.post_net = make_mlp(deter + token_dim, obslayers, hidden, act, norm, init)
        self.post_out = make_linear(self.post_net.out_features, latent.stats_features, init)

    def initial(self, batch_shape, device=None, dtype=torch.float32):
        """Zero state (no learned initial state in V1/V2)."""
        deter = torch.zeros(*batch_shape, self.deter, device=device, dtype=dtype)
        return deter, torch.zeros(*batch_shape, self.stoch, self.classes, device=device, dtype=dtype)

    def sample(self, stats: torch.Tensor) -> torch.Tensor:
        return self.latent.sample(stats)

    def prior(self, deter: torch.Tensor) -> torch.Tensor:
        """Prior stats (logits ``(..., S, Cl)`` or ``(mean, std)`` ``(..., S, 2)``) from ``deter``."""
        return self.latent.stats(self.prior_out(self.prior_net(deter)))

    def posterior(self, deter: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.latent.stats(self.post_out(self.post_net(torch.cat([deter, tokens], -1))))

    def core(self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``h' = cell(act(Dense([stoch, action])), h)``."""
        return self.cell(self.img_in(torch.cat([stoch.flatten(-2), action], -1)), deter)

    def observe_step(self, deter, stoch, prev_action, tokens, is_first):
        """One filtering step; returns ``deter, stoch, post_stats``. Shapes as :meth:`RSSM.observe_step`."""
        keep = (~is_first.reshape(-1, 1)).to(deter.dtype)
        if self.mask_first_action:
            prev_action = prev_action * keep
        deter = self.core(deter * keep, stoch * keep[..., None], prev_action)
        stats = self.posterior(deter, tokens)
        return deter, self.sample(stats), stats

    def imagine_step(self, deter, stoch, action):
        """One prior step; returns ``deter, stoch, prior_stats``."""
        deter = self.core(deter, stoch, action)
        stats = self.prior(deter)
        return deter, self.sample(stats), stats

    def observe(self, deter, stoch, prev_actions, tokens, is_first):
        """Filter a sequence ``(B, T, ...)`` from the carry ``(deter (B, D), stoch (B, S, Cl))``."""
        steps = tokens.shape[1]
        is_first = is_first.reshape(tokens.shape[0], steps)
        deters, stochs, stats = [], [], []
        for t in range(steps):
            deter, stoch, step_stats = self.observe_step(deter, stoch, prev_actions[:, t], tokens[:, t], is_first[:, t])
            deters.append(deter)
            stochs.append(stoch)
            stats.append(step_stats)
        return torch.stack(deters, 1), torch.stack(stochs, 1), torch.stack(stats, 1)
