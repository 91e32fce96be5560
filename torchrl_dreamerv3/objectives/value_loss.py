"""DreamerV3's critic loss: imagined lambda-returns with the slow-critic regulariser, and the replay value loss.

SPEC §6.2-§6.4. DreamerV1 and DreamerV2 have their own (:class:`~.v1v2.GaussianValueLoss`).
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictParams

from ..functional import replay_return, twohot_nll
from .common import DreamerLossBase, ValueKeys

__all__ = ["ValueLoss"]


class ValueLoss(DreamerLossBase):
    """Twohot critic loss on imagined and on replayed states, regularised towards a slow critic.

    Needs the trajectory that :class:`~torchrl_dreamerv3.objectives.ActorLoss` writes under
    ``imagined`` (states, ``return``, ``weight``, and optionally the online critic's
    ``value_logits``, which are then used instead of a second critic pass), and the posterior
    states of the replayed sequence with ``reward``, ``is_terminal``, ``is_last``.

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

    _AcceptedKeys = ValueKeys
    default_keys = ValueKeys
    critic_network: TensorDictModule
    critic_network_params: TensorDictParams
    target_critic_network_params: TensorDictParams

    def __init__(self, critic: TensorDictModule, *, value: float = 1.0, repval: float = 0.3, slowreg: float = 1.0,
                 lam: float = 0.95, horizon: float = 333.0):
        super().__init__()
        self.convert_to_functional(critic, "critic_network", create_target_params=True)
        self.scales = dict(value=value, repval=repval)
        self.slowreg, self.lam, self.horizon = slowreg, lam, horizon

    def slow_critic(self, states: TensorDictBase) -> TensorDictBase:
        """The slow (target) critic on ``states``: the critic run with ``target_critic_network_params``."""
        with self.target_critic_network_params.to_module(self.critic_network):
            return self.critic_network(states)

    def _critic_nll(self, states: TensorDictBase, target: torch.Tensor,
                    logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL of ``target`` and of the slow critic's prediction under the online critic (``logits`` if given).

        ``states`` may be longer than ``target`` on the last batch dim; the extra steps are
        evaluated and dropped (cheaper than copying a strided slice of ``B * T * H`` states).
        """
        steps = target.shape[-1]
        if logits is None:
            logits = self.critic_network(states.clone(False)).get(self.tensor_keys.value_logits)[..., :steps, :]
        bins = self._bins(logits.shape[-1], logits)
        with torch.no_grad(), self.target_critic_network_params.to_module(self.critic_network):
            slow = self.critic_network(states.clone(False)).get(self.tensor_keys.state_value).squeeze(-1)[..., :steps]
        log_probs = torch.log_softmax(logits, -1)  # shared by both targets
        loss = (twohot_nll(log_probs, target.detach(), bins, normalized=True)
                + self.slowreg * twohot_nll(log_probs, slow, bins, normalized=True))
        return loss, slow

    def _shared_logits(self, imagined: TensorDictBase, horizon: int) -> torch.Tensor | None:
        """The online critic's logits that ActorLoss stored with the trajectory, if usable.

        ActorLoss already ran the online critic on every imagined state; reusing that pass (with
        its graph) saves a critic forward and backward over ``B * T * H`` states. Logits without
        a graph are only reused when no gradient is wanted.
        """
        logits = imagined.get(self.tensor_keys.value_logits, None)
        if logits is None or not (logits.requires_grad or not torch.is_grad_enabled()):
            return None
        return logits[..., :horizon, :]

    def _replay_term(self, tensordict: TensorDictBase, imag_returns: torch.Tensor):
        """``repval`` per step and its metrics: the critic on the replayed posterior states."""
        keys = self.tensor_keys
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
        return repval, dict(replay_return=targets.mean(), slow_value=slow.mean())

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        imagined = self._get(tensordict, keys.imagined)
        horizon = imagined.shape[-1] - 1
        imag_states = imagined.select(keys.deter, keys.stoch)  # s_0..s_H; _critic_nll drops s_H
        imag_returns = self._get(imagined, keys.ret)
        weight = self._get(imagined, keys.weight)[..., :horizon]
        imag_nll, _ = self._critic_nll(imag_states, imag_returns[..., :horizon], self._shared_logits(imagined, horizon))
        value = weight.detach() * imag_nll
        repval, metrics = self._replay_term(tensordict, imag_returns)
        return self._scaled(dict(value=value, repval=repval), metrics)
