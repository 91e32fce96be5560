"""The learned world model as a TorchRL env, and its latent features as a TorchRL transform.

* :class:`DreamerWorldModelEnv` steps the RSSM with its prior: ``step(action)`` runs
  ``imagine_step``, the twohot reward head and the continue head. It is a
  :class:`~torchrl.envs.model_based.ModelBasedEnvBase`, so ``rollout``, collectors, ``StepCounter``
  and every other TorchRL tool work on it, and it exposes the real env's action, reward and done specs.
* :class:`~torchrl_dreamerv3.envs.latent_features.LatentFeatures` (re-exported here) filters the
  observations of a real env through the encoder and the posterior.

Both write the same ``feature`` entry, so a policy trained in imagination runs unchanged on the
real env behind :class:`LatentFeatures` (see ``examples/ppo_in_imagination.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictSequential
from tensordict.utils import NestedKey
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.model_based import ModelBasedEnvBase

from ..functional import symexp
from ..modules import DreamerV3Modules
from .latent_features import LatentFeatures, latent_features, latent_specs, zero_carry

__all__ = ["DreamerWorldModelEnv", "LatentFeatures", "latent_features"]

TERMINATION = ("threshold", "sample", "never")


def _unbatched(spec, batch_dims: int):
    return spec[(0,) * batch_dims] if batch_dims else spec.clone()


class DreamerWorldModelEnv(ModelBasedEnvBase):
    """A (trained) DreamerV3 world model as a batched, stateless TorchRL env.

    The state lives in the tensordict (``deter``, ``stoch``; observations, so ``step_mdp`` carries
    them); the observation a policy should read is ``feature``. ``step(action)`` advances the RSSM
    with the prior, the reward is the twohot reward head's mean and termination comes from the
    continue head. ``reset`` starts from, in this order:

    1. ``deter``/``stoch`` in the given tensordict (stored posterior latents, e.g. the replay's, or
       the output of :class:`LatentFeatures` on a live env);
    2. the observation keys of the encoder in the given tensordict: one posterior step from the zero
       carry (``is_first``), or from ``prev_deter``/``prev_stoch``/``prev_action`` when all are given;
    3. otherwise (``env.reset()``, and every automatic reset after ``done``): a state drawn uniformly
       from the pool set by :meth:`set_start_states`, or, without a pool, the learned first-step
       prior (zero carry, one prior step), the model's guess of an episode's first state.

    Termination: the continue head is trained on ``(1 - is_terminal) * (1 - 1/horizon)``, so a
    probability near ``0.997`` means "continues". ``termination="threshold"`` (default) ends an
    episode where ``cont_prob < cont_threshold`` (0.5); ``"sample"`` draws
    ``terminated ~ Bernoulli(1 - min(1, cont_prob / (1 - 1/horizon)))``; ``"never"`` never ends
    (fixed-horizon imagination, as DreamerV3's own actor loss). ``truncated`` is always ``False``:
    add a :class:`~torchrl.envs.StepCounter` to cut imagined episodes.

    Args:
        modules: the agent (see :func:`~torchrl_dreamerv3.modules.make_dreamerv3`); only the world
            model parts are used.
        base_env: the real env; its action, reward and done specs are copied (it is never stepped).
            Without it: ``OneHot(action_dim)`` or ``Bounded(-1, 1)`` actions, a float reward ``(1,)``
            and boolean ``done``/``terminated``/``truncated``.

    Keyword Args:
        batch_size: number of imagined envs (default ``(1,)``); with ``()``, ``reset(td)`` takes any
            batch and the env follows it.
        termination, cont_threshold, horizon: see above.
        decode: also write the decoded observations under the observation keys, in the real env's
            units (vectors ``symexp`` of the prediction, images ``uint8``), projected into the real
            env's observation spec (e.g. CartPole's bounds).
        feature_key: where the latent features go (``"feature"``).
        differentiable: keep the autograd graph through steps (default ``False``: ``no_grad``).

    Examples:
        >>> from torchrl.envs.utils import check_env_specs
        >>> from torchrl_dreamerv3.envs import make_env
        >>> from torchrl_dreamerv3.modules import make_dreamerv3
        >>> real = make_env("cartpole")
        >>> agent = make_dreamerv3({"observation": (4,)}, real.action_spec, "debug")
        >>> env = DreamerWorldModelEnv(agent, real, batch_size=[5])
        >>> check_env_specs(env)
        >>> env.rollout(10, break_when_any_done=False)["next", "feature"].shape
        torch.Size([5, 10, 16])
    """

    def __init__(
        self,
        modules: DreamerV3Modules,
        base_env: EnvBase | None = None,
        *,
        batch_size: Sequence[int] = (1,),
        termination: str = "threshold",
        cont_threshold: float = 0.5,
        horizon: float = 333.0,
        decode: bool = False,
        feature_key: NestedKey = "feature",
        differentiable: bool = False,
        device: torch.device | str | None = None,
    ):
        if termination not in TERMINATION:
            raise ValueError(f"termination must be one of {TERMINATION}, got {termination!r}")
        device = torch.device(device) if device is not None else next(modules.parameters()).device
        k = modules.keys
        parts = [modules.imagine_step, modules.reward, modules.cont] + ([modules.decoder] if decode else [])
        super().__init__(TensorDictSequential(*parts), device=device, batch_size=torch.Size(batch_size))
        self.modules_ = modules
        self.termination, self.cont_threshold, self.discount = termination, cont_threshold, 1.0 - 1.0 / horizon
        self.decode, self.feature_key, self.differentiable = decode, feature_key, differentiable
        self._start_states: TensorDictBase | None = None
        self._set_specs(modules, base_env, k)

    # ------------------------------------------------------------------ specs
    def _set_specs(self, modules: DreamerV3Modules, base_env: EnvBase | None, k) -> None:
        batch, device = self.batch_size, self.device
        if base_env is not None:
            dims = len(base_env.batch_size)
            action = _unbatched(base_env.action_spec, dims)
            reward = _unbatched(base_env.full_reward_spec, dims)
            done = _unbatched(base_env.full_done_spec, dims)
        else:
            dim = modules.action_dim
            action = OneHot(dim) if modules.discrete else Bounded(-1.0, 1.0, shape=(dim,))
            reward = Composite(reward=Unbounded(shape=(1,)))
            done = Composite({key: Categorical(2, shape=(1,), dtype=torch.bool)
                              for key in ("done", "terminated", "truncated")})
        self.full_action_spec = Composite({k.action: action}).expand(batch).to(device)
        self.full_reward_spec = reward.expand(batch).to(device)
        self.full_done_spec = done.expand(batch).to(device)
        obs = Composite(latent_specs(modules, self.feature_key), shape=())
        self._decoded_specs = {}
        if self.decode:
            for key, value in self._decoded(self._initial_prior(torch.Size([1]))).items():
                real = None if base_env is None else base_env.observation_spec.get(key, None)
                obs[key] = (_unbatched(real, len(base_env.batch_size)) if real is not None
                            else Unbounded(shape=value.shape[1:], dtype=value.dtype))
                self._decoded_specs[key] = obs[key].to(self.device)
        self.observation_spec = obs.expand(batch).to(device)

    # ------------------------------------------------------------------ start states
    def set_start_states(self, states: TensorDictBase | None) -> DreamerWorldModelEnv:
        """Pool of ``deter``/``stoch`` (any batch shape, flattened) that fresh resets draw from."""
        if states is None:
            self._start_states = None
            return self
        k = self.modules_.keys
        self._start_states = states.select(k.deter, k.stoch).reshape(-1).to(self.device).detach()
        return self

    def _initial_prior(self, batch: torch.Size) -> TensorDictBase:
        """The learned first-step prior: zero carry and action, one prior step (as ``is_first`` does)."""
        k = self.modules_.keys
        carry = zero_carry(self.modules_, batch, self.device)
        zeros = TensorDict({k.deter: carry[k.prev_deter], k.stoch: carry[k.prev_stoch], k.action: carry[k.prev_action]},
                           batch, device=self.device)
        return self.modules_.imagine_step(zeros).select(k.deter, k.stoch)

    def _posterior(self, td: TensorDictBase) -> TensorDictBase:
        m, k = self.modules_, self.modules_.keys
        step = td.select(*m.encoder.in_keys)
        carry = [k.prev_deter, k.prev_stoch, k.prev_action]
        keys = td.keys(True)
        if all(key in keys for key in carry):
            step.update(td.select(*carry))
            step.set(k.is_first, td.get(k.is_first, torch.zeros(*td.batch_size, 1, dtype=torch.bool)))
        else:
            step.update(zero_carry(m, td.batch_size, self.device))
        return m.observe_step(m.encoder(step)).select(k.deter, k.stoch)

    def _fresh(self, batch: torch.Size) -> TensorDictBase:
        if self._start_states is None:
            return self._initial_prior(batch)
        index = torch.randint(len(self._start_states), batch, device=self.device)
        return self._start_states[index]

    # ------------------------------------------------------------------ EnvBase API
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        k, m = self.modules_.keys, self.modules_
        batch = tensordict.batch_size if tensordict is not None else self.batch_size
        keys = set(tensordict.keys(True)) if tensordict is not None else set()
        with torch.set_grad_enabled(self.differentiable):
            if {k.deter, k.stoch} <= keys:
                state = tensordict.select(k.deter, k.stoch).to(self.device)
            elif set(m.encoder.in_keys) <= keys:
                state = self._posterior(tensordict.to(self.device))
            else:
                state = self._fresh(batch)
            out = self._observation(state)
        for key in self.done_keys:
            out.set(key, self._done_like(key, batch))
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        k = self.modules_.keys
        batch = tensordict.batch_size
        with torch.set_grad_enabled(self.differentiable):
            state = self.world_model(tensordict.select(k.deter, k.stoch, k.action).clone(False))
            out = self._observation(state)
            cont = state.get(k.cont_prob)
            terminated = self._terminated(cont)
        reward_spec = self.full_reward_spec[self.reward_key]
        out.set(self.reward_key, state.get(k.reward_pred).to(reward_spec.dtype))
        for key in self.done_keys:
            last = key[-1] if isinstance(key, tuple) else key
            value = terminated if last in ("done", "terminated") else self._done_like(key, batch)
            out.set(key, value.reshape(self._done_like(key, batch).shape))
        return out

    def _set_seed(self, seed: int | None) -> None:
        """The RSSM samples from torch's global generator, so seeding seeds torch."""
        if seed is not None:
            torch.manual_seed(seed)

    # ------------------------------------------------------------------ helpers
    def _terminated(self, cont: torch.Tensor) -> torch.Tensor:
        if self.termination == "threshold":
            return cont < self.cont_threshold
        if self.termination == "sample":
            return torch.bernoulli(1.0 - (cont / self.discount).clamp(max=1.0)).bool()
        return torch.zeros_like(cont, dtype=torch.bool)

    def _done_like(self, key: NestedKey, batch: torch.Size) -> torch.Tensor:
        spec = self.full_done_spec[key]
        return torch.zeros(*batch, *spec.shape[len(self.batch_size):], dtype=spec.dtype, device=self.device)

    def _decoded(self, state: TensorDictBase) -> dict[NestedKey, torch.Tensor]:
        """Decoder outputs in the real env's units: ``symexp`` for vectors, ``uint8`` for images."""
        m, k = self.modules_, self.modules_.keys
        reco = m.decoder(state.select(k.deter, k.stoch).clone(False))
        out = {}
        for key in m.obs_keys:
            value = reco.get((k.reco, key) if isinstance(key, str) else (k.reco, *key))
            is_image = value.dim() - state.batch_dims == 3
            value = (value.clamp(0, 1) * 255).round().to(torch.uint8) if is_image else symexp(value)
            spec = self._decoded_specs.get(key)
            out[key] = value if spec is None else spec.project(value)  # e.g. into the real env's bounds
        return out

    def _observation(self, state: TensorDictBase) -> TensorDictBase:
        k = self.modules_.keys
        deter, stoch = state.get(k.deter), state.get(k.stoch)
        out = TensorDict({k.deter: deter, k.stoch: stoch, self.feature_key: latent_features(deter, stoch)},
                         batch_size=state.batch_size, device=self.device)
        if self.decode:
            out.update(self._decoded(state))
        return out
