"""What every Dreamer loss shares: named scales, key look-up with clear errors, the tensordict keys, return norm."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from ..functional import percentile_ema, return_scale, symexp_twohot_bins

__all__ = ["DreamerLossBase", "ReturnNormalizer", "WorldModelKeys", "ActorKeys", "ValueKeys", "check_choice",
           "reco_key"]


@dataclass
class WorldModelKeys:
    """Tensordict keys read or written by the world-model losses."""

    reward: NestedKey = "reward"
    is_terminal: NestedKey = "is_terminal"
    post_logits: NestedKey = "post_logits"
    prior_logits: NestedKey = "prior_logits"
    reward_logits: NestedKey = "reward_logits"
    cont_logits: NestedKey = "cont_logits"
    reco: NestedKey = "reco"
    deter: NestedKey = "deter"
    stoch: NestedKey = "stoch"


@dataclass
class ActorKeys:
    """Tensordict keys read or written by the actor losses."""

    deter: NestedKey = "deter"
    stoch: NestedKey = "stoch"
    action: NestedKey = "action"
    is_terminal: NestedKey = "is_terminal"
    reward_pred: NestedKey = "reward_pred"
    cont_prob: NestedKey = "cont_prob"
    state_value: NestedKey = "state_value"
    value_logits: NestedKey = "value_logits"
    imagined: NestedKey = "imagined"
    ret: NestedKey = "return"
    weight: NestedKey = "weight"


@dataclass
class ValueKeys:
    """Tensordict keys read by the value losses."""

    deter: NestedKey = "deter"
    stoch: NestedKey = "stoch"
    value_logits: NestedKey = "value_logits"
    state_value: NestedKey = "state_value"
    imagined: NestedKey = "imagined"
    ret: NestedKey = "return"
    weight: NestedKey = "weight"
    reward: NestedKey = "reward"
    is_terminal: NestedKey = "is_terminal"
    is_last: NestedKey = "is_last"


class DreamerLossBase(LossModule):
    """A LossModule whose terms each carry a named scale, like the reference's ``loss_scales``.

    Subclasses compute unscaled per-sample terms and call :meth:`_scaled`, which emits
    ``loss_<name> = scale * mean(term)`` and fails when a term has no scale or a scale no term,
    so adding a term without choosing its weight is an error, not a silent 1.0.
    """

    scales: dict[str, float]

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # no TorchRL value estimator: the returns are Dreamer's own (functional/returns*.py)

    def _scaled(self, terms: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> TensorDictBase:
        if set(terms) != set(self.scales):
            raise KeyError(
                f"{type(self).__name__}: loss terms {sorted(terms)} do not match the scales {sorted(self.scales)}; "
                "every term needs a named scale"
            )
        out = {f"loss_{name}": self.scales[name] * term.mean() for name, term in terms.items()}
        out.update({name: value.detach() for name, value in metrics.items()})
        return TensorDict(out, batch_size=[])

    def _get(self, td: TensorDictBase, key: NestedKey) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            raise KeyError(
                f"{type(self).__name__} needs the key {key!r}, which is missing from the input tensordict; "
                f"present keys: {[k for k in td.keys(True, True)]}. Rename with loss.set_keys(...) if it lives elsewhere."
            )
        return value

    def _bins(self, num_bins: int, like: torch.Tensor) -> torch.Tensor:
        cache = self.__dict__.setdefault("_bins_cache", {})
        key = (num_bins, like.device, like.dtype)
        if key not in cache:
            cache[key] = symexp_twohot_bins(num_bins, device=like.device, dtype=like.dtype)
        return cache[key]

    def _starts(self, tensordict: TensorDictBase) -> tuple[tuple[NestedKey, NestedKey], TensorDictBase]:
        """The state keys and every posterior state of the batch, detached and flattened: imagination starts."""
        state_keys = (self.tensor_keys.deter, self.tensor_keys.stoch)
        for key in state_keys:
            self._get(tensordict, key)  # a clear error naming a missing key
        return state_keys, tensordict.select(*state_keys).detach().reshape(-1)


class ReturnNormalizer(nn.Module):
    """EMA of the 5th/95th return percentiles; ``scale = max(limit, hi - lo)`` (SPEC §6.2 retnorm)."""

    def __init__(self, rate: float = 0.01, limit: float = 1.0, perclo: float = 5.0, perchi: float = 95.0):
        super().__init__()
        self.rate, self.limit, self.perclo, self.perchi = rate, limit, perclo, perchi
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        lo, hi = percentile_ema(self.lo, self.hi, returns, self.rate, self.perclo, self.perchi)
        self.lo.copy_(lo)
        self.hi.copy_(hi)

    def scale(self) -> torch.Tensor:
        return return_scale(self.lo, self.hi, self.limit)


def reco_key(prefix: NestedKey, obs_key: NestedKey) -> NestedKey:
    """``(reco, <obs key>)``: where the decoder writes the reconstruction of ``obs_key``."""
    prefix = prefix if isinstance(prefix, tuple) else (prefix,)
    return (*prefix, *(obs_key if isinstance(obs_key, tuple) else (obs_key,)))


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` that names the option and the choices."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")
    return value
