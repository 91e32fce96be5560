"""Pure tensor math of DreamerV3: no ``nn.Module``, no ``TensorDict``.

Every function works on arbitrary leading batch dimensions.
"""
from .actor_dists import StraightThroughOneHot, TanhNormal, TruncatedNormal
from .distributions import (
    binary_nll,
    bounded_normal,
    categorical_entropy,
    normal_entropy,
    normal_log_prob,
    sample_onehot_straight_through,
    sample_unimix_onehot,
    unimix_log_probs,
    unimix_probs,
)
from .kl import categorical_kl, dyn_rep_kl
from .returns import (
    imagination_return,
    lambda_return,
    percentile_ema,
    replay_return,
    return_scale,
)
from .symlog import symexp, symlog
from .twohot import symexp_twohot_bins, twohot_encode, twohot_mean, twohot_nll

__all__ = [
    "TanhNormal",
    "TruncatedNormal",
    "StraightThroughOneHot",
    "symlog",
    "symexp",
    "symexp_twohot_bins",
    "twohot_encode",
    "twohot_nll",
    "twohot_mean",
    "unimix_log_probs",
    "sample_onehot_straight_through",
    "unimix_probs",
    "sample_unimix_onehot",
    "categorical_entropy",
    "bounded_normal",
    "normal_log_prob",
    "normal_entropy",
    "binary_nll",
    "categorical_kl",
    "dyn_rep_kl",
    "lambda_return",
    "imagination_return",
    "replay_return",
    "percentile_ema",
    "return_scale",
]
