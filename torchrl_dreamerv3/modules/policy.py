"""The acting policy for TorchRL collectors: encoder -> one posterior step -> sampled action."""
from __future__ import annotations

import contextlib

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Composite, Unbounded
from torchrl.envs import TensorDictPrimer

from .factory import DreamerV3Modules

__all__ = ["DreamerV3Policy", "PrefillActor", "make_state_primer"]


class DreamerV3Policy(TensorDictModuleBase):
    """Filters each new observation into the RSSM state and samples an action (SPEC §9 "Acting").

    The recurrent carry lives in the tensordict: ``deter`` and ``stoch`` (the posterior of the last
    step) and ``prev_action``. A :class:`~torchrl.envs.TensorDictPrimer` made by
    :func:`make_state_primer` zeroes them at reset and carries them from one step to the next; the
    RSSM also zeroes them wherever ``is_first`` is set. After the call, row ``t`` holds the posterior
    of observation ``t`` in ``deter``/``stoch`` (what the replay stores) and the action in both
    ``action`` and ``prev_action`` (the latter is the carry for step ``t + 1``).

    Actions are always sampled, in evaluation too, as the reference does. Runs without gradient.
    ``expl_noise > 0`` (DreamerV1's ``additive_gaussian`` exploration, 0.3) adds ``N(0, expl_noise)``
    to continuous actions and clips them to ``[-1, 1]``; discrete actions are left as sampled.

    ``actor`` replaces the agent's actor when acting: any module that reads the posterior ``deter``/``stoch``
    and writes ``action`` (e.g. another algorithm's policy on the world model's features) then collects the
    data, while the world model filters the observations as usual.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import OneHot
        >>> from torchrl_dreamerv3.modules import make_dreamerv3
        >>> agent = make_dreamerv3({"observation": (4,)}, OneHot(2), "debug")
        >>> policy = DreamerV3Policy(agent)
        >>> td = TensorDict({"observation": torch.randn(3, 4), "is_first": torch.ones(3, 1, dtype=torch.bool),
        ...                  "deter": torch.zeros(3, 8), "stoch": torch.zeros(3, 2, 4),
        ...                  "prev_action": torch.zeros(3, 2)}, batch_size=[3])
        >>> policy(td)["action"].sum(-1)
        tensor([1, 1, 1])
    """

    def __init__(self, modules: DreamerV3Modules, action_dtype: torch.dtype | None = None, expl_noise: float = 0.0,
                 actor: TensorDictModuleBase | None = None):
        super().__init__()
        if expl_noise < 0:
            raise ValueError(f"expl_noise must be >= 0, got {expl_noise}")
        if actor is not None and modules.keys.action not in actor.out_keys:
            raise ValueError(f"actor must write the action key {modules.keys.action!r}; its out_keys are {actor.out_keys}")
        self.agent = modules
        self.actor = modules.actor if actor is None else actor
        self.expl_noise = expl_noise
        k = modules.keys
        self.action_dtype = action_dtype
        self.in_keys = [*modules.encoder.in_keys, k.is_first, k.deter, k.stoch, k.prev_action]
        self.out_keys = [k.deter, k.stoch, k.action, k.prev_action]
        # Acting runs inside this context (training/compute/acceleration.py sets bf16 autocast).
        self.forward_context = contextlib.nullcontext

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        k, agent = self.agent.keys, self.agent
        for key in self.in_keys:
            if key not in tensordict.keys(True):
                raise KeyError(
                    f"DreamerV3Policy needs {key!r} in the tensordict; the carry keys come from "
                    f"make_state_primer(...), the observation flags from EpisodeStream"
                )
        step = tensordict.select(*agent.encoder.in_keys, k.is_first)
        step.set(k.prev_deter, tensordict.get(k.deter))
        step.set(k.prev_stoch, tensordict.get(k.stoch))
        step.set(k.prev_action, tensordict.get(k.prev_action))
        with self.forward_context():
            step = self.actor(agent.observe_step(agent.encoder(step)))
        action = step.get(k.action)
        if self.expl_noise and not agent.discrete:
            action = (action + self.expl_noise * torch.randn_like(action)).clamp(-1.0, 1.0)
        if self.action_dtype is not None:
            action = action.to(self.action_dtype)
        tensordict.set(k.deter, step.get(k.deter))
        tensordict.set(k.stoch, step.get(k.stoch))
        tensordict.set(k.action, action)
        tensordict.set(k.prev_action, action.to(torch.float32))
        return tensordict


class PrefillActor(TensorDictModuleBase):
    """Uniformly random actions for the first ``steps`` agent steps, then ``actor``'s (DreamerV1/V2 prefill).

    The authors of DreamerV1 and V2 fill the replay with a random agent before training (SPEC_V1_V2
    §1.6, §2.6): one-hot actions drawn uniformly, or continuous ones uniform in ``[-1, 1]``, i.e.
    ``action_spec.rand()`` of the agent's (unbatched) action spec. Used as
    ``DreamerV3Policy(agent, actor=PrefillActor(agent.actor, spec, steps))``, the world model still
    filters every observation, so the replay holds posterior latents for the random steps too.
    ``steps`` counts the rows this module acts on (a batch of ``N`` envs is ``N`` steps).
    """

    def __init__(self, actor: TensorDictModuleBase, action_spec, steps: int, action_key="action"):
        super().__init__()
        if steps < 0:
            raise ValueError(f"prefill steps must be >= 0, got {steps}")
        self.actor, self.action_spec, self.action_key = actor, action_spec, action_key
        self.steps, self.acted = steps, 0
        self.in_keys, self.out_keys = list(actor.in_keys), [action_key]

    @property
    def prefilling(self) -> bool:
        return self.acted < self.steps

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if not self.prefilling:
            return self.actor(tensordict)
        self.acted += tensordict.numel()
        action = self.action_spec.rand(tensordict.batch_size).to(device=tensordict.device, dtype=torch.float32)
        return tensordict.set(self.action_key, action)


def make_state_primer(modules: DreamerV3Modules) -> TensorDictPrimer:
    """Zero-initialised carry ``deter``, ``stoch``, ``prev_action`` for :class:`DreamerV3Policy`."""
    cfg, k = modules.cfg, modules.keys
    spec = Composite({
        k.deter: Unbounded(shape=(cfg.deter,)),
        k.stoch: Unbounded(shape=(cfg.stoch, cfg.classes)),
        k.prev_action: Unbounded(shape=(modules.action_dim,)),
    })
    # expand_specs: the same primer serves a batched env (run.envs > 1 in one SerialEnv)
    return TensorDictPrimer(spec, default_value=0.0, expand_specs=True)
