"""Two-hot targets on the reference's raw-space symexp bins (SPEC §5.1).

The reward and value heads predict a categorical over fixed bins. Note the bins are
exponentially spaced in *raw* space and targets are encoded there directly; there is no
symlog of the target and no symexp of the prediction.
"""
from __future__ import annotations

import torch

from .symlog import symexp

__all__ = ["symexp_twohot_bins", "twohot_encode", "twohot_nll", "twohot_mean"]


def symexp_twohot_bins(
    num_bins: int = 255, device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Bins ``[num_bins]``: ``symexp(linspace(-20, 0))`` mirrored to positive values (SPEC §5.1).

    Symmetric, sorted, with an exact 0 in the middle; range ``±symexp(20) = ±4.85e8``.
    Only odd counts are supported (255 by default, 5 in the debug preset).
    """
    if num_bins < 3 or num_bins % 2 == 0:
        raise ValueError(f"num_bins must be odd and >= 3, got {num_bins}")
    # Computed in float32 like the reference; the last element is symexp(0) == 0 exactly,
    # and the positive half is the exact negation, so the bins are exactly symmetric.
    half = symexp(torch.linspace(-20.0, 0.0, (num_bins + 1) // 2, dtype=torch.float32))
    bins = torch.cat([half, -half[:-1].flip(0)])
    return bins.to(device=device, dtype=dtype)


def _twohot_parts(target: torch.Tensor, bins: torch.Tensor):
    """Neighbouring bin indices and their weights for each target value.

    Returns ``(below, above, w_below, w_above)``, each of the target's shape.
    """
    n = bins.shape[-1]
    target = target.detach().to(bins.dtype)
    # searchsorted(right=True) counts bins <= y, i.e. the reference's
    # below = #(bins <= y) - 1 and above = n - #(bins > y) (bins are sorted).
    count = torch.searchsorted(bins, target.contiguous(), right=True)
    below = (count - 1).clamp(0, n - 1)
    above = count.clamp(0, n - 1)
    # Outside the bin range both indices clip to the same edge bin; the reference then
    # uses distance 1 on both sides, i.e. weight 0.5 + 0.5 on that bin.
    equal = below == above
    one = torch.ones((), dtype=bins.dtype, device=bins.device)
    dist_below = torch.where(equal, one, (bins[below] - target).abs())
    dist_above = torch.where(equal, one, (bins[above] - target).abs())
    total = dist_below + dist_above
    return below, above, dist_above / total, dist_below / total


def twohot_encode(target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot encoding ``[..., n]`` of ``target [...]``: linear weights on the two neighbouring
    bins, clipped to the edge bins outside the range (SPEC §5.1). Weights sum to 1; no gradient.
    """
    below, above, w_below, w_above = _twohot_parts(target, bins)
    out = torch.zeros(*target.shape, bins.shape[-1], dtype=bins.dtype, device=bins.device)
    out.scatter_add_(-1, below.unsqueeze(-1), w_below.unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_above.unsqueeze(-1))
    return out


def twohot_nll(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor, *,
               normalized: bool = False) -> torch.Tensor:
    """``-sum(twohot(target) * log_softmax(logits))``: logits ``[..., n]``, target ``[...]`` ->
    ``[...]`` (SPEC §5.1). The target is a constant (no gradient).

    ``normalized=True`` means ``logits`` already are ``log_softmax`` outputs, so that several
    targets can be scored against one ``log_softmax`` (the critic scores two per state).
    """
    below, above, w_below, w_above = _twohot_parts(target, bins)
    logits = logits.float()  # float32 under bf16 autocast too (as bins and weights are)
    log_probs = logits if normalized else torch.log_softmax(logits, -1)
    # Only two entries of the two-hot vector are nonzero: gather them (in one gather, whose
    # backward is one scatter) instead of a dense product.
    lp = log_probs.gather(-1, torch.stack([below, above], -1))
    return -(w_below * lp[..., 0] + w_above * lp[..., 1])


def twohot_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected bin value under ``softmax(logits)``: ``[..., n] -> [...]`` (SPEC §5.1).

    A left-to-right sum of ``p * bins`` accumulates rounding error from the huge outer bins,
    so uniform probabilities would not give 0. Like the reference, add each negative bin's
    term to its mirrored positive term first, so zero-initialised heads predict exactly 0.
    ``bins`` must be antisymmetric with a 0 in the middle, as :func:`symexp_twohot_bins` makes them.
    """
    probs = torch.softmax(logits.float(), -1)
    n = bins.shape[-1]
    m = n // 2
    # The bins are exactly antisymmetric (bins[m + 1 + j] == -bins[m - 1 - j]) with bins[m] == 0, so
    # the mirrored sum is sum_j bins[m + 1 + j] * (p[m + 1 + j] - p[m - 1 - j]): one subtraction of
    # the mirrored halves and one dot product, and still exactly 0 for uniform probabilities.
    diff = probs[..., m + 1 :] - probs[..., :m].flip(-1)
    # float32 even under bf16 autocast, which would run this product in bf16 (about 3 digits).
    with torch.autocast(diff.device.type, enabled=False):
        return diff @ bins[m + 1 :].float()
