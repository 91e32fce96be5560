"""Policy distributions of DreamerV1 and DreamerV2 (SPEC_V1_V2 §1.4, §2.4, §10).

All three reparameterise their samples (``has_rsample``), so the actor gets gradients from the
action through the world model (V1's and V2-continuous' dynamics backprop). TorchRL's
``ProbabilisticActor`` samples with ``rsample`` under ``ExplorationType.RANDOM`` and uses
``deterministic_sample`` (the reference's ``mode()``) under ``DETERMINISTIC``.

- :class:`TanhNormal` (V1 ``tanh_normal``): ``tanh(Normal(loc, scale))`` per action dimension,
  independent over the last axis. As the reference's ``SampleDist`` wrapper, ``mode`` is the
  most likely of ``samples`` draws and ``entropy()`` / ``mean`` are ``samples``-draw estimates
  (TFP has no closed form for a tanh-transformed normal). ``loc``/``scale`` come from
  :func:`~torchrl_dreamerv3.functional.gaussian.tanh_normal_params`.
- :class:`TruncatedNormal` (V2 ``trunc_normal``): a normal truncated to ``[-1, 1]``, sampled by
  inverse CDF (pathwise gradients for ``loc`` and ``scale``) and clipped to ``±(1 - 1e-6)`` with a
  straight-through estimator; exact ``log_prob``, ``entropy``, ``mean``; ``mode = clip(loc)``.
  Parameters from :func:`~torchrl_dreamerv3.functional.gaussian.trunc_normal_params`.
- :class:`StraightThroughOneHot` (V1/V2 ``onehot``): TorchRL's ``OneHotCategorical`` with
  ``has_rsample = True``: ``rsample`` is ``onehot + probs - sg(probs)``; no unimix.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import distributions as D
from torchrl.modules import OneHotCategorical

__all__ = ["TanhNormal", "TruncatedNormal", "StraightThroughOneHot"]

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class StraightThroughOneHot(OneHotCategorical):
    """One-hot categorical whose ``rsample`` (straight-through) is what ``RANDOM`` exploration draws."""

    has_rsample = True

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """``onehot + (probs - sg(probs))``: parenthesised so the value is exactly one-hot
        (TorchRL's ``onehot + probs - probs`` rounds), with the gradient of ``probs``."""
        onehot = self.sample(sample_shape).to(self.probs.dtype)
        if not self.probs.requires_grad:
            return onehot
        return onehot + (self.probs - self.probs.detach())


def _normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - loc) / scale).square() - scale.log() - _HALF_LOG_2PI


class TanhNormal(D.Distribution):
    """``tanh(x)``, ``x ~ Normal(loc, scale)``, independent over the last (action) axis.

    Args:
        loc, scale: pre-tanh parameters ``(..., A)``.
        samples: draws for the ``mode``/``mean``/``entropy`` estimates (reference ``SampleDist``: 100).
    """

    arg_constraints: dict = {}
    support = D.constraints.independent(D.constraints.interval(-1.0, 1.0), 1)
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, samples: int = 100):
        self.loc, self.scale, self.samples = loc, scale, samples
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def _pre_tanh_rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)

    def _log_prob_pre_tanh(self, x: torch.Tensor) -> torch.Tensor:
        # log|d tanh(x)/dx| = log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x)), stable for large |x|
        log_det = 2.0 * (_LOG_2 - x - F.softplus(-2.0 * x))
        return (_normal_log_prob(x, self.loc, self.scale) - log_det).sum(-1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return torch.tanh(self._pre_tanh_rsample(sample_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(value.dtype).eps
        return self._log_prob_pre_tanh(torch.atanh(value.clamp(-1.0 + eps, 1.0 - eps)))

    def entropy(self) -> torch.Tensor:
        """``-mean(log_prob(x_i))`` over ``samples`` reparameterised draws (reference ``SampleDist.entropy``)."""
        x = self._pre_tanh_rsample((self.samples,))
        return -self._log_prob_pre_tanh(x).mean(0)

    @property
    def mean(self) -> torch.Tensor:
        return self.rsample((self.samples,)).mean(0)

    @property
    def mode(self) -> torch.Tensor:
        """The most likely of ``samples`` draws (reference ``SampleDist.mode``)."""
        x = self._pre_tanh_rsample((self.samples,))
        best = self._log_prob_pre_tanh(x).argmax(0)  # (...,)
        index = best[None, ..., None].expand(1, *x.shape[1:])
        return torch.tanh(x.gather(0, index).squeeze(0))

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _std_normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x.square() - _HALF_LOG_2PI)


class TruncatedNormal(D.Distribution):
    """``Normal(loc, scale)`` truncated to ``[low, high]``, independent over the last (action) axis.

    Samples are clipped to ``[low + clip, high - clip]`` with a straight-through estimator
    (reference ``SafeTruncatedNormal``), so ``log_prob`` of a sample is always finite.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0, high: float = 1.0,
                 clip: float = 1e-6):
        self.loc, self.scale, self.low, self.high, self.clip = loc, scale, low, high, clip
        self._alpha = (low - loc) / scale
        self._beta = (high - loc) / scale
        self._cdf_alpha = _std_normal_cdf(self._alpha)
        self._mass = (_std_normal_cdf(self._beta) - self._cdf_alpha).clamp_min(torch.finfo(loc.dtype).tiny)
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def support(self):
        return D.constraints.independent(D.constraints.interval(self.low, self.high), 1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.finfo(self.loc.dtype).eps
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        # inverse CDF: x = loc + scale * ndtri(Phi(alpha) + u * Z); differentiable in loc and scale
        p = (self._cdf_alpha + u * self._mass).clamp(eps, 1.0 - eps)
        x = self.loc + self.scale * torch.special.ndtri(p)
        clipped = x.clamp(self.low + self.clip, self.high - self.clip)
        return x + (clipped - x).detach()

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (_normal_log_prob(value, self.loc, self.scale) - self._mass.log()).sum(-1)

    def entropy(self) -> torch.Tensor:
        """Closed form ``log(sqrt(2 pi e) scale Z) + (alpha phi(alpha) - beta phi(beta)) / (2 Z)``."""
        a, b, z = self._alpha, self._beta, self._mass
        tail = (a * _std_normal_pdf(a) - b * _std_normal_pdf(b)) / (2.0 * z)
        return (_HALF_LOG_2PI + 0.5 + self.scale.log() + z.log() + tail).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc + self.scale * (_std_normal_pdf(self._alpha) - _std_normal_pdf(self._beta)) / self._mass

    @property
    def mode(self) -> torch.Tensor:
        return self.loc.clamp(self.low, self.high)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode
