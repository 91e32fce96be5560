"""The world model's latent features of a real env's observations, as a TorchRL transform.

:class:`LatentFeatures` filters the observations of a real env through the encoder and the
posterior, and appends ``deter``, ``stoch`` and ``feature = concat(deter, flatten(stoch))`` to
each tensordict, so any TorchRL agent can act on the world model's representation (the same
``feature`` that :class:`~torchrl_dreamerv3.envs.DreamerWorldModelEnv` writes).
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs import Transform

from ..modules import DreamerV3Modules

__all__ = ["LatentFeatures", "latent_features", "latent_specs", "zero_carry"]


def latent_features(deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
    """``concat(deter, flatten(stoch))``: the input of every DreamerV3 head, ``(..., D + S * Cl)``."""
    return torch.cat([deter, stoch.flatten(-2)], -1)


def zero_carry(modules: DreamerV3Modules, batch: torch.Size, device=None) -> dict:
    """The filter's start: zero ``prev_deter``/``prev_stoch``/``prev_action`` and ``is_first`` set."""
    cfg, k = modules.cfg, modules.keys
    return {k.prev_deter: torch.zeros(*batch, cfg.deter, device=device),
            k.prev_stoch: torch.zeros(*batch, cfg.stoch, cfg.classes, device=device),
            k.prev_action: torch.zeros(*batch, modules.action_dim, device=device),
            k.is_first: torch.ones(*batch, 1, dtype=torch.bool, device=device)}


def latent_specs(modules: DreamerV3Modules, feature_key, deter_key=None, stoch_key=None, shape=(), device=None):
    cfg, k = modules.cfg, modules.keys
    dims = {deter_key or k.deter: (cfg.deter,), stoch_key or k.stoch: (cfg.stoch, cfg.classes),
            feature_key: (cfg.deter + cfg.stoch * cfg.classes,)}
    return {key: Unbounded(shape=(*shape, *dim), device=device) for key, dim in dims.items()}


class LatentFeatures(Transform):
    """Appends the posterior ``deter``, ``stoch`` and ``feature`` of each real observation.

    At reset the filter starts from the zero carry; each step continues it from the previous
    ``deter``/``stoch`` (kept as observations in the tensordict, so ``step_mdp`` carries them) and the
    action just taken, and restarts wherever the env sets ``is_first`` (e.g. an
    :class:`~torchrl_dreamerv3.envs.EpisodeStream`). Runs without gradient.

    Args:
        modules: the agent whose ``encoder`` and ``observe_step`` do the filtering.

    Keyword Args:
        feature_key, deter_key, stoch_key: output keys (defaults ``feature`` and the modules' keys;
            rename to run next to a :class:`~torchrl_dreamerv3.modules.DreamerV3Policy`).
        action_key: the real env's action key (``"action"``).
        is_first_key: optional restart flag of the real env (``"is_first"``; absent means ``False``).

    Examples:
        >>> from torchrl.envs import GymEnv, TransformedEnv
        >>> from torchrl_dreamerv3.modules import make_dreamerv3
        >>> base = GymEnv("CartPole-v1")
        >>> agent = make_dreamerv3({"observation": (4,)}, base.action_spec, "debug")
        >>> env = TransformedEnv(base, LatentFeatures(agent))
        >>> env.rollout(5)["next", "feature"].shape
        torch.Size([5, 16])
    """

    def __init__(self, modules: DreamerV3Modules, *, feature_key: NestedKey = "feature",
                 deter_key: NestedKey | None = None, stoch_key: NestedKey | None = None,
                 action_key: NestedKey = "action", is_first_key: NestedKey = "is_first"):
        k = modules.keys
        self.deter_key, self.stoch_key = deter_key or k.deter, stoch_key or k.stoch
        super().__init__(in_keys=list(modules.encoder.in_keys), out_keys=[self.deter_key, self.stoch_key, feature_key])
        self.agent = modules
        self.feature_key, self.action_key, self.is_first_key = feature_key, action_key, is_first_key

    @torch.no_grad()
    def _filter(self, obs: TensorDictBase, prev: TensorDictBase | None) -> TensorDictBase:
        m, k = self.agent, self.agent.keys
        batch = obs.batch_size
        device = next(m.parameters()).device
        step = obs.select(*m.encoder.in_keys).to(device)
        if prev is None or self.deter_key not in prev.keys(True):
            step.update(zero_carry(m, batch, device))
        else:
            step.update({k.prev_deter: prev.get(self.deter_key), k.prev_stoch: prev.get(self.stoch_key),
                         k.prev_action: prev.get(self.action_key).float(),
                         k.is_first: obs.get(self.is_first_key, torch.zeros(*batch, 1, dtype=torch.bool))})
        step = m.observe_step(m.encoder(step.to(device)))
        deter, stoch = step.get(k.deter).to(obs.device), step.get(k.stoch).to(obs.device)
        obs.set(self.deter_key, deter)
        obs.set(self.stoch_key, stoch)
        obs.set(self.feature_key, latent_features(deter, stoch))
        return obs

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._filter(tensordict_reset, None)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._filter(next_tensordict, tensordict)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        specs = latent_specs(self.agent, self.feature_key, self.deter_key, self.stoch_key,
                              shape=observation_spec.shape, device=observation_spec.device)
        for key, spec in specs.items():
            observation_spec[key] = spec
        return observation_spec
