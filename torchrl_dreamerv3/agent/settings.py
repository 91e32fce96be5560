"""The settings a generation's losses and optimiser read, as one frozen value (the run plan's ``losses``).

The run plan (:mod:`torchrl_dreamerv3.training.plan`) reads them from the config once; each registry
entry's ``loss_config(settings, agent, switches)`` (:mod:`.generations`) maps them onto its loss classes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LossSettings"]


@dataclass(frozen=True)
class LossSettings:
    scales: Mapping[str, float]  # loss_scales.*: rec, rew, con, dyn, rep, policy, value, repval (V1/V2: kl)
    free_nats: float
    horizon: float  # 1 / (1 - discount)
    imag_length: int  # imagination steps
    imag_lam: float  # imag_loss.lam: lambda of the imagined returns
    actent: float  # imag_loss.actent: actor entropy scale
    slowreg: float  # imag_loss.slowreg: value regulariser towards the slow critic
    repl_lam: float  # repl_loss.lam: lambda of the replay returns
    slow_rate: float  # slowvalue.rate: slow-critic EMA rate
    retnorm: Mapping[str, float]  # rate, limit, perclo, perchi of the return normaliser
    opt: Mapping  # the generation's optimiser section (opt: LaProp; opt3: three Adams)
