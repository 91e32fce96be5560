"""``EpisodeStream``: one never-ending stream of time steps, the way the reference stores them.

DreamerV3's reference gives *every* observation its own time step, the terminal one included
(SPEC §8.1, ``embodied/core/driver.py``): a step carries ``obs_t``, the reward that arrived with
``obs_t`` and the flags ``is_first / is_last / is_terminal``. After an ``is_last`` step the
driver resets the env, so the next step is the first observation of a new episode
(``is_first=True``, reward 0). Replay sequences simply run across episode boundaries.

TorchRL's auto-reset instead drops the terminal observation from the root of the next row.
``EpisodeStream`` wraps an unbatched TorchRL env so that TorchRL never sees an episode end:

* ``done`` / ``terminated`` / ``truncated`` are always ``False``: collectors never reset the
  stream and ``("collector", "traj_ids")`` stays constant for each stream;
* the observation carries the flags ``is_first``, ``is_last``, ``is_terminal`` (bool, ``(1,)``);
* ``step(action)`` after an ``is_last`` step ignores ``action`` and resets the inner env: the
  new observation is the first one of the next episode, with reward 0;
* the observation also carries ``episode_reward`` (float32 ``(1,)``) and ``episode_length``
  (int64 ``(1,)``): return and number of agent steps of the current episode *up to and
  including this observation* (both 0 at ``is_first``). At an ``is_last`` step they are the
  finished episode's return and length, so the training loop logs episode returns with
  ``data["episode_reward"][data["is_last"]]``.

Rows written by a :class:`~torchrl.collectors.Collector` (after ``step_mdp``) hold
``obs_t, flags_t, episode_*_t, action_t`` and ``("next", "reward")`` = the reward that arrives
with ``obs_{t+1}``. With ``compact_obs=True`` the ``("next", obs/flags/stats)`` copies are
dropped and each frame is stored exactly once. The action stored at an ``is_last`` row is the
policy's output, which the stream ignored; the reference driver zeroes it instead
(``driver.py:73-76``). Consumers that care mask it with ``is_last``.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

__all__ = ["EpisodeStream", "FLAG_KEYS", "STAT_KEYS"]

FLAG_KEYS = ("is_first", "is_last", "is_terminal")
STAT_KEYS = ("episode_reward", "episode_length")
_DONE_KEYS = ("done", "terminated", "truncated")


def _flag_spec(device) -> Categorical:
    return Categorical(2, shape=(1,), dtype=torch.bool, device=device)


class EpisodeStream(EnvBase):
    """Turn an episodic, unbatched TorchRL env into a continuing stream with reference flags.

    Args:
        env: an unbatched (``batch_size == ()``) TorchRL env. Its observation, action and
            reward specs are kept as they are (discrete actions stay ``OneHot``). Envs that
            carry their own state in the tensordict (a non-empty ``state_spec``) are not
            supported.

    Keyword Args:
        terminal_on_truncation: if ``True``, an inner truncation (e.g. a time limit) is also
            marked ``is_terminal``. The reference's Atari does this with its 108k-frame cap
            (SPEC §10); keep ``False`` (default) for bootstrapped time limits.

    Examples:
        Plug in any TorchRL env:

        >>> from torchrl.envs import GymEnv
        >>> from torchrl.envs.utils import check_env_specs
        >>> env = EpisodeStream(GymEnv("CartPole-v1"))
        >>> check_env_specs(env)
        >>> td = env.rollout(300, break_when_any_done=False)
        >>> bool(td["next", "done"].any())  # TorchRL never sees an episode end
        False
        >>> ends = td["next", "is_last"].squeeze(-1)
        >>> td["next", "episode_reward"][ends]  # returns of the finished episodes
        tensor([[...]])
    """

    def __init__(self, env: EnvBase, *, terminal_on_truncation: bool = False):
        if tuple(env.batch_size) != ():
            raise ValueError(
                f"EpisodeStream wraps unbatched envs (batch_size=()), got {tuple(env.batch_size)}; "
                "batch streams with SerialEnv/ParallelEnv instead."
            )
        if len(env.full_state_spec.keys()):
            raise NotImplementedError(
                "EpisodeStream does not support inner envs with a state_spec, got "
                f"{list(env.full_state_spec.keys(True, True))}."
            )
        super().__init__(device=env.device, batch_size=())
        self.env = env
        self.terminal_on_truncation = bool(terminal_on_truncation)
        self._obs_keys = list(env.full_observation_spec.keys(True, True))
        for key in (*FLAG_KEYS, *STAT_KEYS):
            if key in self._obs_keys:
                raise ValueError(f"the inner env already has an observation {key!r}")
        self._reward_keys = list(env.reward_keys)
        self._action_keys = list(env.action_keys)

        device = env.device
        obs_spec = env.full_observation_spec.clone()
        for key in FLAG_KEYS:
            obs_spec[key] = _flag_spec(device)
        obs_spec["episode_reward"] = Unbounded(shape=(1,), dtype=torch.float32, device=device)
        obs_spec["episode_length"] = Unbounded(shape=(1,), dtype=torch.int64, device=device)
        self.full_observation_spec = obs_spec
        self.full_action_spec = env.full_action_spec.clone()
        self.full_reward_spec = env.full_reward_spec.clone()
        self.full_done_spec = Composite(
            {key: _flag_spec(device) for key in _DONE_KEYS}, shape=()
        )

        self._zero_rewards = {k: env.full_reward_spec[k].zero() for k in self._reward_keys}
        self._needs_reset = True
        self._return = 0.0
        self._length = 0

    # ------------------------------------------------------------------ EnvBase API
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        return self._first_step(with_reward=False)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._needs_reset:
            # The previous step was is_last: the action is ignored, a new episode begins.
            return self._first_step(with_reward=True)
        action = tensordict.select(*self._action_keys)
        out = self.env.step(action).get("next")
        done = bool(out.get("done"))
        terminated = bool(out.get("terminated", done))
        truncated = done and not terminated
        is_terminal = terminated or (truncated and self.terminal_on_truncation)
        self._needs_reset = done
        reward = out.get(self._reward_keys[0])
        self._return += float(reward.sum())
        self._length += 1
        result = out.select(*self._obs_keys, *self._reward_keys)
        return self._with_flags(result, is_first=False, is_last=done, is_terminal=is_terminal)

    def _set_seed(self, seed: int | None) -> None:
        self.env.set_seed(seed, static_seed=True)
        self._needs_reset = True

    def close(self, *, raise_if_closed: bool = True):
        self.env.close(raise_if_closed=raise_if_closed)
        self.is_closed = True

    # ------------------------------------------------------------------ helpers
    def _first_step(self, with_reward: bool) -> TensorDictBase:
        out = self.env.reset()
        self._needs_reset = False
        self._return = 0.0
        self._length = 0
        result = out.select(*self._obs_keys)
        if with_reward:
            for key, zero in self._zero_rewards.items():
                result.set(key, zero.clone())
        return self._with_flags(result, is_first=True, is_last=False, is_terminal=False)

    def _with_flags(
        self, td: TensorDictBase, *, is_first: bool, is_last: bool, is_terminal: bool
    ) -> TensorDictBase:
        device = self.device
        false = torch.zeros(1, dtype=torch.bool, device=device)
        td.update(
            {
                "is_first": torch.tensor([is_first], device=device),
                "is_last": torch.tensor([is_last], device=device),
                "is_terminal": torch.tensor([is_terminal], device=device),
                "episode_reward": torch.tensor([self._return], dtype=torch.float32, device=device),
                "episode_length": torch.tensor([self._length], dtype=torch.int64, device=device),
                "done": false,
                "terminated": false.clone(),
                "truncated": false.clone(),
            }
        )
        return td

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(env={self.env!r}, "
            f"terminal_on_truncation={self.terminal_on_truncation})"
        )
