"""What the three DreamerV3 losses share: named scales, key look-up with clear errors, cached bins."""
from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from ..functional import symexp_twohot_bins

__all__ = ["DreamerLossBase", "check_choice"]


class DreamerLossBase(LossModule):
    """A LossModule whose terms each carry a named scale, like the reference's ``loss_scales``.

    Subclasses compute unscaled per-sample terms and call :meth:`_scaled`, which emits
    ``loss_<name> = scale * mean(term)`` and fails when a term has no scale or a scale no term,
    so adding a term without choosing its weight is an error, not a silent 1.0.
    """

    scales: dict[str, float]

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # no TorchRL value estimator: the returns are DreamerV3's own (functional/returns.py)

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


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` that names the option and the choices."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")
    return value
