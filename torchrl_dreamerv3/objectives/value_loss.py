"""Critic losses: imagined lambda-returns with the slow-critic regulariser, and the replay value loss (SPEC §6.2-§6.4)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictParams
from tensordict.utils import NestedKey

from ..functional import replay_return, twohot_nll
from .common import DreamerLossBase

__all__ = ["ValueLoss"]


class ValueLoss(DreamerLossBase):
    """Twohot critic loss on imagined and on replayed states, regularised towards a slow critic.

    Needs the trajectory that :class:`~torchrl_dreamerv3.objectives.ActorLoss` writes under
    ``imagined`` (states, ``return``, ``weight``), and the posterior states of the replayed
    sequence with ``reward``, ``is_terminal``, ``is_last``.

    - ``loss_value = mean(sg(w_i) * (NLL(sg(R_i)) + slowreg * NLL(sg(v_slow(s_i)))))`` over ``i < H``;
      the imagined states carry no gradient, so only the critic trains.
    - ``loss_repval``: the same on the replayed posterior states (gradients reach the world model),
      with targets from :func:`~torchrl_dreamerv3.functional.replay_return` bootstrapped from the
      imagined return of each start, masked by ``1 - is_last``, over ``t < T - 1``.

    The slow critic lives in ``target_critic_network_params`` (TorchRL target parameters); step a
    :class:`torchrl.objectives.SoftUpdate` with ``tau=0.02`` after every optimiser step.

    Args:
        critic: module reading ``(deter, stoch)`` and writing ``value_logits``.
        value (1.0), repval (0.3): loss scales. slowreg (1.0): weight of the slow-critic term.
        lam (0.95), horizon (333): replay return parameters (``disc = 1 - 1/horizon``).
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys read by the loss."""

        deter: NestedKey = "deter"
        stoch: NestedKey = "stoch"
        value_logits: NestedKey = "value_logits"
        state_value: NestedKey = "state_value"
        imagined: NestedKey = "imagined"
        ret: NestedKey = "return"
        weight: NestedKey = "weight"
        reward: NestedKey = "reward"
        is_terminal: NestedKey = "is_terminal"
        is_last: NestedKey = "is_last"

    default_keys = _AcceptedKeys
    critic_network: TensorDictModule
    critic_network_params: TensorDictParams
    target_critic_network_params: TensorDictParams

    def __init__(
        self,
        critic: TensorDictModule,
        *,
        value: float = 1.0,
        repval: float = 0.3,
        slowreg: float = 1.0,
        lam: float = 0.95,
        horizon: float = 333.0,
    ):
        super().__init__()
        self.convert_to_functional(critic, "critic_network", create_target_params=True)
        self.scales = dict(value=value, repval=repval)
        self.slowreg, self.lam, self.horizon = slowreg, lam, horizon

    def _critic_nll(self, states: TensorDictBase, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL of ``target`` and of the slow critic's prediction under the online critic."""
        logits = self.critic_network(states.clone(False)).get(self.tensor_keys.value_logits)
        bins = self._bins(logits.shape[-1], logits)
        with torch.no_grad(), self.target_critic_network_params.to_module(self.critic_network):
            slow = self.critic_network(states.clone(False)).get(self.tensor_keys.state_value).squeeze(-1)
        loss = twohot_nll(logits, target.detach(), bins) + self.slowreg * twohot_nll(logits, slow, bins)
        return loss, slow

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        imagined = self._get(tensordict, keys.imagined)
        horizon = imagined.shape[-1] - 1
        imag_states = imagined[..., :horizon].select(keys.deter, keys.stoch)
        imag_returns = self._get(imagined, keys.ret)
        weight = self._get(imagined, keys.weight)[..., :horizon]
        imag_nll, _ = self._critic_nll(imag_states, imag_returns[..., :horizon])
        value = weight.detach() * imag_nll

        replay_states = tensordict.select(keys.deter, keys.stoch)
        for key in (keys.deter, keys.stoch):
            self._get(tensordict, key)
        shape = tensordict.batch_size
        flags = [self._get(tensordict, k).reshape(shape) for k in (keys.reward, keys.is_terminal, keys.is_last)]
        reward, is_terminal, is_last = flags[0], flags[1].bool(), flags[2].bool()
        with torch.no_grad():
            targets = replay_return(reward, is_terminal, is_last, imag_returns[..., 0], self.lam, 1.0 - 1.0 / self.horizon)
        rep_nll, slow = self._critic_nll(replay_states[..., :-1], targets)
        repval = (~is_last[..., :-1]).to(rep_nll.dtype) * rep_nll
        metrics = dict(replay_return=targets.mean(), slow_value=slow.mean())
        return self._scaled(dict(value=value, repval=repval), metrics)
