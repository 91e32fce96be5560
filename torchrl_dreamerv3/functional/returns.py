"""Lambda-returns and the percentile return normaliser (SPEC §6.2-6.3).

Time is on the LAST axis everywhere here: inputs ``[..., T]``, returns ``[..., T - 1]``.
"""
from __future__ import annotations

import torch

__all__ = [
    "lambda_return",
    "imagination_return",
    "replay_return",
    "percentile_ema",
    "return_scale",
]


def lambda_return(
    reward: torch.Tensor, live: torch.Tensor, cont: torch.Tensor, bootstrap: torch.Tensor
) -> torch.Tensor:
    """The reference's general lambda-return (SPEC §6.2 "General form"); ``[..., T] -> [..., T-1]``.

    Every input is indexed by the *same* step ``t`` (broadcastable to one shape):
    ``live_t = (1 - term_t) * disc`` and ``cont_t = (1 - last_t) * lam``. The recursion reads
    the quantities of the NEXT step, exactly like the reference's ``[:, 1:]`` slicing::

        R_{T-1} = boot_{T-1}
        R_t = r_{t+1} + (1 - cont_{t+1}) live_{t+1} boot_{t+1} + live_{t+1} cont_{t+1} R_{t+1}

    and ``R_0 .. R_{T-2}`` are returned (``R_{T-1}`` is only the bootstrap). So ``reward[..., 0]``,
    ``live[..., 0]`` and ``cont[..., 0]`` are never used.
    """
    reward, live, cont, bootstrap = torch.broadcast_tensors(reward, live, cont, bootstrap)
    steps = reward.shape[-1] - 1
    if steps < 1:
        return reward[..., :0].clone()
    live, cont = live[..., 1:], cont[..., 1:]
    interm = reward[..., 1:] + (1 - cont) * live * bootstrap[..., 1:]
    decay = live * cont
    # Time first and contiguous, so each step of the loop touches one dense slice.
    interm = interm.movedim(-1, 0).contiguous()
    decay = decay.movedim(-1, 0).contiguous()
    ret = bootstrap[..., -1]
    rets = [ret] * steps
    for t in reversed(range(steps)):
        ret = interm[t] + decay[t] * ret
        rets[t] = ret
    return torch.stack(rets, -1)


def imagination_return(
    reward: torch.Tensor, cont: torch.Tensor, value: torch.Tensor, lam: float = 0.95
) -> torch.Tensor:
    """Lambda-return of an imagined trajectory ``s_0..s_H`` (SPEC §6.2); ``[..., H+1] -> [..., H]``.

    ``reward``, ``cont`` (continue probability, discount folded in) and ``value`` belong to
    the states ``s_0..s_H``. ``R_H = v_H``;
    ``R_i = r_{i+1} + c_{i+1} ((1 - lam) v_{i+1} + lam R_{i+1})``.
    In the reference's terms: ``last = 0``, ``term = 1 - c``, ``disc = 1``, ``boot = value``.
    """
    lam_t = torch.full_like(value, lam)
    return lambda_return(reward, cont, lam_t, value)


def replay_return(
    reward: torch.Tensor,
    is_terminal: torch.Tensor,
    is_last: torch.Tensor,
    bootstrap: torch.Tensor,
    lam: float = 0.95,
    disc: float = 1 - 1 / 333,
) -> torch.Tensor:
    """Lambda-return on a replayed sequence (SPEC §6.3); ``[..., T] -> [..., T-1]``.

    ``bootstrap_t`` is the imagination return ``R^imag_0`` started at step ``t``. A terminal
    next step cuts the return (``live = 0``); a last (truncated) next step falls back to
    bootstrapping from that step instead of recursing past it (``cont = 0``).
    Flags may be booleans or floats.
    """
    dtype = bootstrap.dtype
    live = (1.0 - is_terminal.to(dtype)) * disc
    cont = (1.0 - is_last.to(dtype)) * lam
    return lambda_return(reward.to(dtype), live, cont, bootstrap)


def _percentiles(x: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """Percentiles of all elements with linear interpolation (``numpy.percentile`` default).

    Sort-based, so unlike ``torch.quantile`` it has no input-size limit.
    """
    x = x.reshape(-1).float().sort().values  # float32 whatever the compute dtype
    n = x.numel()
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        i = min(int(pos), n - 1)
        j = min(i + 1, n - 1)
        frac = pos - i
        out.append(x[i] + (x[j] - x[i]) * frac)
    return out


@torch.no_grad()
def percentile_ema(
    lo: torch.Tensor,
    hi: torch.Tensor,
    returns: torch.Tensor,
    rate: float = 0.01,
    perclo: float = 5.0,
    perchi: float = 95.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EMA step of the return range (SPEC §6.2 ``retnorm``): returns ``(lo_new, hi_new)``.

    ``lo <- (1 - rate) lo + rate * percentile(returns, perclo)``, same for ``hi`` with
    ``perchi``; percentiles over ALL elements of ``returns``. ``lo``, ``hi`` are 0-dim
    tensors; no gradient flows (no debiasing, like ``debias: False``).
    """
    p_lo, p_hi = _percentiles(returns.detach().to(lo.dtype), (perclo, perchi))
    lo_new = (1.0 - rate) * lo + rate * p_lo
    hi_new = (1.0 - rate) * hi + rate * p_hi
    return lo_new, hi_new


def return_scale(lo: torch.Tensor, hi: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Advantage denominator ``max(limit, hi - lo)`` (SPEC §6.2); small return ranges are not
    scaled up, only large ones scaled down.
    """
    return torch.clamp_min(hi - lo, limit)
