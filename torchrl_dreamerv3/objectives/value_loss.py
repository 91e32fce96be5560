"""Critic losses: imagined lambda-returns with the slow-critic regulariser, and the replay value loss (SPEC §6.2-§6.4)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictParams
from tensordict.utils import NestedKey

from ..functional import replay_return, twohot_nll
from ..functional.returns_v1v2 import unit_gaussian_nll
from .common import DreamerLossBase, check_choice

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

    With ``head_dist="normal"`` (DreamerV1/V2, SPEC_V1_V2 §1.4, §2.4) the critic's ``state_value``
    is the mean of a unit-variance Gaussian and the only term is
    ``loss_value = mean(sg(w_i) * 0.5 * (v(s_i) - sg(R_i))^2)`` over the imagined targets; there is
    no slow-critic regulariser and no replay term. The slow critic then only provides targets
    (V2, :meth:`slow_critic`), kept by a hard copy.

    Args:
        critic: module reading ``(deter, stoch)`` and writing ``value_logits``.
        value (1.0), repval (0.3): loss scales. slowreg (1.0): weight of the slow-critic term.
        lam (0.95), horizon (333): replay return parameters (``disc = 1 - 1/horizon``).
        head_dist: ``twohot`` (V3) or ``normal`` (V1/V2).
        slow_critic: create the slow critic's target parameters (True); V1 has none (``normal`` only).
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
        head_dist: str = "twohot",
        slow_critic: bool = True,
    ):
        super().__init__()
        self.head_dist = check_choice("head_dist", head_dist, ("twohot", "normal"))
        if not slow_critic and head_dist == "twohot":
            raise ValueError("head_dist='twohot' (DreamerV3) regularises towards the slow critic: slow_critic=True needed")
        self.convert_to_functional(critic, "critic_network", create_target_params=slow_critic)
        self.scales = dict(value=value, repval=repval) if head_dist == "twohot" else dict(value=value)
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

    def _forward_normal(self, tensordict: TensorDictBase) -> TensorDictBase:
        """V1/V2: unit-Gaussian critic on the imagined states ``s_0..s_{N-2}``, target-aligned weights."""
        keys = self.tensor_keys
        imagined = self._get(tensordict, keys.imagined)
        steps = imagined.shape[-1] - 1
        states = imagined.select(keys.deter, keys.stoch).detach()
        pred = self.critic_network(states.clone(False)).get(keys.state_value).squeeze(-1)[..., :steps]
        targets = self._get(imagined, keys.ret)[..., :steps].detach()
        weight = self._get(imagined, keys.weight)[..., :steps].detach()
        value = weight * unit_gaussian_nll(pred, targets)
        return self._scaled(dict(value=value), dict(value_pred=pred.mean()))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.head_dist == "normal":
            return self._forward_normal(tensordict)
        keys = self.tensor_keys
        imagined = self._get(tensordict, keys.imagined)
        horizon = imagined.shape[-1] - 1
        imag_states = imagined.select(keys.deter, keys.stoch)  # s_0..s_H; _critic_nll drops s_H
        imag_returns = self._get(imagined, keys.ret)
        weight = self._get(imagined, keys.weight)[..., :horizon]
        imag_nll, _ = self._critic_nll(imag_states, imag_returns[..., :horizon], self._shared_logits(imagined, horizon))
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
