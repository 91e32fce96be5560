"""The settings a generation's losses and optimiser read, as one frozen value (a part of the run plan).

:meth:`LossSettings.from_config` reads them from the Hydra config once; each registry entry's
``loss_config(settings, agent, switches)`` (:mod:`.generations`) maps them onto its loss classes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from omegaconf import OmegaConf

__all__ = ["LossSettings"]


def frozen(mapping) -> Mapping:
    """A read-only plain mapping of a config node (or dict)."""
    if OmegaConf.is_config(mapping):
        mapping = OmegaConf.to_container(mapping, resolve=True)
    return MappingProxyType(dict(mapping))


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

    @classmethod
    def from_config(cls, cfg, opt_section: str = "opt") -> "LossSettings":
        return cls(scales=frozen(cfg.loss_scales), free_nats=cfg.free_nats, horizon=cfg.horizon,
                   imag_length=cfg.imag_length, imag_lam=cfg.imag_loss.lam, actent=cfg.imag_loss.actent,
                   slowreg=cfg.imag_loss.slowreg, repl_lam=cfg.repl_loss.lam, slow_rate=cfg.slowvalue.rate,
                   retnorm=frozen(cfg.retnorm), opt=frozen(cfg[opt_section]))
