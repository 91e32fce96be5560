"""TensorDict wrappers of the RSSM: key wiring only, the math lives in :mod:`torchrl_dreamerv3.rssm`.

They wrap V3's :class:`~torchrl_dreamerv3.rssm.RSSM` and V1/V2's :class:`~torchrl_dreamerv3.rssm.DenseRSSM`
alike (same methods and ``stoch``/``classes`` attributes). With a Gaussian latent ``stoch`` is
``(..., S, 1)`` and the ``*_logits`` keys hold ``(mean, std)`` stacked as ``(..., S, 2)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from ..rssm import RSSM, DenseRSSM

__all__ = ["RSSMObserve", "RSSMObserveStep", "RSSMImagineStep", "RSSMPrior"]


def _check_keys(name: str, keys: Sequence[NestedKey], expected: int, what: str) -> list[NestedKey]:
    keys = list(keys)
    if len(keys) != expected:
        raise ValueError(f"{name}: expected {expected} {what} ({'/'.join(map(str, keys))} given)")
    return keys


class _RSSMModule(TensorDictModuleBase):
    default_in_keys: tuple = ()
    default_out_keys: tuple = ()

    def __init__(self, rssm: RSSM | DenseRSSM, in_keys=None, out_keys=None):
        super().__init__()
        self.rssm = rssm
        name = type(self).__name__
        self.in_keys = _check_keys(name, in_keys or self.default_in_keys, len(self.default_in_keys), "in_keys")
        self.out_keys = _check_keys(name, out_keys or self.default_out_keys, len(self.default_out_keys), "out_keys")

    def _get(self, td: TensorDictBase, key: NestedKey) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            raise KeyError(f"{type(self).__name__} needs key {key!r}, which is missing from the tensordict "
                           f"(keys: {list(td.keys(True, True))})")
        return value


class RSSMObserve(_RSSMModule):
    """Filters a sequence with the posterior; time is the last batch dimension.

    Reads ``prev_deter``, ``prev_stoch`` (the carry entering the first step; later steps use the
    recurrence, so only ``[..., 0, :]`` is read), ``prev_action`` (action before each step),
    ``tokens`` and ``is_first``; writes ``deter``, ``stoch`` and ``post_logits`` for every step.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_dreamerv3.rssm import RSSM
        >>> rssm = RSSM(action_dim=2, token_dim=6, deter=8, hidden=3, stoch=2, classes=4, blocks=4)
        >>> td = TensorDict({"prev_deter": torch.zeros(4, 5, 8), "prev_stoch": torch.zeros(4, 5, 2, 4),
        ...                  "prev_action": torch.zeros(4, 5, 2), "tokens": torch.randn(4, 5, 6),
        ...                  "is_first": torch.zeros(4, 5, 1, dtype=torch.bool)}, batch_size=[4, 5])
        >>> RSSMObserve(rssm)(td)["post_logits"].shape
        torch.Size([4, 5, 2, 4])
    """

    default_in_keys = ("prev_deter", "prev_stoch", "prev_action", "tokens", "is_first")
    default_out_keys = ("deter", "stoch", "post_logits")

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        if td.batch_dims < 1:
            raise ValueError("RSSMObserve needs a time dimension (the last batch dim); use RSSMObserveStep for single steps")
        shape = td.batch_size
        flat = shape.numel() // shape[-1]
        deter0, stoch0, action, tokens, is_first = (self._get(td, k) for k in self.in_keys)
        deter0 = deter0.reshape(flat, shape[-1], -1)[:, 0]
        stoch0 = stoch0.reshape(flat, shape[-1], self.rssm.stoch, self.rssm.classes)[:, 0]
        out = self.rssm.observe(
            deter0, stoch0, action.reshape(flat, shape[-1], -1).float(),
            tokens.reshape(flat, shape[-1], -1), is_first.reshape(flat, shape[-1]),
        )
        for key, value in zip(self.out_keys, out):
            td.set(key, value.reshape(*shape, *value.shape[2:]))
        return td


class RSSMObserveStep(_RSSMModule):
    """One posterior step for acting; any batch shape. Same keys as :class:`RSSMObserve`."""

    default_in_keys = ("prev_deter", "prev_stoch", "prev_action", "tokens", "is_first")
    default_out_keys = ("deter", "stoch", "post_logits")

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        shape = td.batch_size
        deter, stoch, action, tokens, is_first = (self._get(td, k) for k in self.in_keys)
        out = self.rssm.observe_step(
            deter.reshape(shape.numel(), -1), stoch.reshape(shape.numel(), self.rssm.stoch, self.rssm.classes),
            action.reshape(shape.numel(), -1).float(), tokens.reshape(shape.numel(), -1),
            is_first.reshape(shape.numel()),
        )
        for key, value in zip(self.out_keys, out):
            td.set(key, value.reshape(*shape, *value.shape[1:]))
        return td


class RSSMImagineStep(_RSSMModule):
    """One prior step: reads ``deter``, ``stoch``, ``action``; writes ``deter``, ``stoch``, ``prior_logits``.

    The outputs overwrite the state keys, so pass a fresh tensordict per step (the imagination
    loop does).
    """

    default_in_keys = ("deter", "stoch", "action")
    default_out_keys = ("deter", "stoch", "prior_logits")

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        shape = td.batch_size
        deter, stoch, action = (self._get(td, k) for k in self.in_keys)
        out = self.rssm.imagine_step(
            deter.reshape(shape.numel(), -1), stoch.reshape(shape.numel(), self.rssm.stoch, self.rssm.classes),
            action.reshape(shape.numel(), -1).float(),
        )
        for key, value in zip(self.out_keys, out):
            td.set(key, value.reshape(*shape, *value.shape[1:]))
        return td


class RSSMPrior(_RSSMModule):
    """Prior logits of every state: reads ``deter``, writes ``prior_logits``."""

    default_in_keys = ("deter",)
    default_out_keys = ("prior_logits",)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        td.set(self.out_keys[0], self.rssm.prior(self._get(td, self.in_keys[0])))
        return td
