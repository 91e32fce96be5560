"""EpisodeStream semantics, action normalization and the env factories."""
from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase, GymEnv, SerialEnv
from torchrl.envs.utils import check_env_specs

from torchrl_dreamerv3.envs import (
    EpisodeStream,
    make_atari_env,
    make_env,
    make_gym_env,
    normalize_actions,
)

warnings.filterwarnings("ignore", category=DeprecationWarning)


class CountEnv(EnvBase):
    """Deterministic episodes: obs = steps taken, reward = obs, ends after ``length`` steps.

    The end is a termination, or a truncation when ``truncate=True``. ``actions`` records
    every action the env really received.
    """

    def __init__(self, length: int = 3, truncate: bool = False):
        super().__init__(batch_size=())
        self.length, self.truncate = length, truncate
        self.observation_spec = Composite(observation=Unbounded((1,), dtype=torch.float32))
        self.action_spec = OneHot(2)
        self.reward_spec = Unbounded((1,), dtype=torch.float32)
        flag = Categorical(2, (1,), dtype=torch.bool)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone())
        self.count, self.actions = 0, []

    def _reset(self, tensordict=None, **kwargs):
        self.count = 0
        return self._out(end=False, with_reward=False)

    def _step(self, tensordict):
        self.actions.append(tensordict["action"].clone())
        self.count += 1
        return self._out(end=self.count >= self.length, with_reward=True)

    def _out(self, end: bool, with_reward: bool):
        term, trunc = end and not self.truncate, end and self.truncate
        out = {
            "observation": torch.tensor([float(self.count)]),
            "done": torch.tensor([end]),
            "terminated": torch.tensor([term]),
            "truncated": torch.tensor([trunc]),
        }
        if with_reward:
            out["reward"] = torch.tensor([float(self.count)])
        return TensorDict(out, batch_size=())

    def _set_seed(self, seed):
        pass


def _flags(td):
    return tuple(bool(td[k]) for k in ("is_first", "is_last", "is_terminal"))


def _act(env, index=0):
    action = torch.zeros(env.action_spec.shape, dtype=env.action_spec.dtype)
    action[index] = 1
    return TensorDict({"action": action}, batch_size=())


# --------------------------------------------------------------------------- EpisodeStream
def test_terminal_observation_gets_its_own_step():
    inner = CountEnv(length=3)
    env = EpisodeStream(inner)
    td = env.reset()
    assert _flags(td) == (True, False, False) and td["observation"].item() == 0
    assert td["episode_reward"].item() == 0 and td["episode_length"].item() == 0
    for t in (1, 2, 3):
        nxt = env.step(td.update(_act(env)))["next"]
        assert nxt["observation"].item() == t and nxt["reward"].item() == t
        assert _flags(nxt) == (False, t == 3, t == 3)
        assert not nxt["done"].any() and not nxt["terminated"].any()
        td = nxt.clone()
    assert td["episode_reward"].item() == 6 and td["episode_length"].item() == 3
    # After is_last: the action is ignored and a new episode starts with reward 0.
    n_actions = len(inner.actions)
    nxt = env.step(td.update(_act(env, 1)))["next"]
    assert len(inner.actions) == n_actions
    assert _flags(nxt) == (True, False, False)
    assert nxt["observation"].item() == 0 and nxt["reward"].item() == 0
    assert nxt["episode_reward"].item() == 0 and nxt["episode_length"].item() == 0
    nxt = env.step(nxt.update(_act(env)))["next"]
    assert nxt["observation"].item() == 1 and _flags(nxt) == (False, False, False)


@pytest.mark.parametrize("terminal_on_truncation", [False, True])
def test_truncation_is_last_but_terminal_only_if_asked(terminal_on_truncation):
    env = EpisodeStream(CountEnv(2, truncate=True), terminal_on_truncation=terminal_on_truncation)
    td = env.rollout(6, break_when_any_done=False)
    is_last = td["next", "is_last"].squeeze(-1)
    assert is_last.tolist() == [False, True, False, False, True, False]
    assert td["next", "is_terminal"].squeeze(-1).tolist() == (
        is_last.tolist() if terminal_on_truncation else [False] * 6
    )


def test_check_env_specs():
    check_env_specs(EpisodeStream(CountEnv(3)))
    check_env_specs(EpisodeStream(GymEnv("CartPole-v1")))


def test_rejects_batched_env():
    with pytest.raises(ValueError, match="unbatched"):
        EpisodeStream(SerialEnv(2, lambda: CountEnv(3)))


def test_cartpole_terminal_step_and_episode_stats():
    env = EpisodeStream(GymEnv("CartPole-v1"))
    env.set_seed(0)
    td = env.rollout(200, break_when_any_done=False)
    last = td["next", "is_last"].squeeze(-1).nonzero().squeeze(-1)
    assert len(last) >= 2
    i = last[0].item()
    # The terminal observation is a step of its own: reward 1 arrives with it (pole fell).
    assert td["next", "reward"][i].item() == 1.0 and td["next", "is_terminal"][i].item()
    assert td["next", "episode_length"][i].item() == i + 1
    assert td["next", "episode_reward"][i].item() == td["next", "reward"][: i + 1].sum().item()
    assert td["next", "is_first"][i + 1].item() and td["next", "reward"][i + 1].item() == 0.0
    assert not td["next", "done"].any()


def test_collector_rows_follow_reference_layout():
    collector = Collector(
        EpisodeStream(CountEnv(3)),
        policy=None,
        frames_per_batch=10,
        total_frames=40,
        compact_obs=True,
    )
    data = torch.cat([batch.clone() for batch in collector])
    collector.shutdown()
    assert data.shape == (40,)
    assert ("next", "observation") not in data.keys(True)  # each frame stored once
    assert ("next", "is_first") not in data.keys(True)
    assert data["collector", "traj_ids"].unique().numel() == 1  # never reset by TorchRL
    obs = data["observation"].squeeze(-1)
    assert obs.tolist() == [float(t % 4) for t in range(40)]  # 0,1,2,3 (terminal),0,...
    assert data["is_first"].squeeze(-1).tolist() == (obs == 0).tolist()
    assert data["is_last"].squeeze(-1).tolist() == (obs == 3).tolist()
    # Row t holds obs_t and ("next", "reward") = the reward that arrives with obs_{t+1}.
    assert data["next", "reward"].squeeze(-1).tolist() == [float((t + 1) % 4) for t in range(40)]
    ends = data["is_last"].squeeze(-1)
    assert (data["episode_reward"][ends] == 6).all() and (data["episode_length"][ends] == 3).all()


def test_serial_env_of_streams():
    env = SerialEnv(2, [lambda: EpisodeStream(CountEnv(2)), lambda: EpisodeStream(CountEnv(3))])
    check_env_specs(env)
    td = env.rollout(8, break_when_any_done=False)
    assert td.shape == (2, 8)
    assert td["next", "is_last"].squeeze(-1).sum(-1).tolist() == [3, 2]
    collector = Collector(env, policy=None, frames_per_batch=8, total_frames=16)
    for batch in collector:
        assert batch.shape == (2, 4)
        assert (batch["collector", "traj_ids"] == batch["collector", "traj_ids"][:, :1]).all()
    collector.shutdown()


# --------------------------------------------------------------------------- actions
class RecordContinuous(CountEnv):
    def __init__(self):
        super().__init__(length=100)
        self.action_spec = Bounded(
            low=torch.tensor([-2.0, 0.0]), high=torch.tensor([2.0, 10.0]), shape=(2,)
        )


def test_continuous_actions_normalized_and_clipped():
    inner = RecordContinuous()
    env = EpisodeStream(normalize_actions(inner))
    assert env.action_spec.space.low.tolist() == [-1.0, -1.0]
    assert env.action_spec.space.high.tolist() == [1.0, 1.0]
    check_env_specs(env)
    td = env.reset()
    cases = [([1, -1], [2, 0]), ([-1, 1], [-2, 10]), ([0, 0], [0, 5]), ([3, -5], [2, 0])]
    for agent, expected in cases:
        td["action"] = torch.tensor(agent, dtype=torch.float32)
        td = env.step(td)
        assert td["action"].tolist() == agent  # the unclipped action stays in the data
        assert inner.actions[-1].tolist() == expected
        td = td["next"].clone()


def test_discrete_actions_untouched():
    env = normalize_actions(GymEnv("CartPole-v1"))
    assert isinstance(env.action_spec, OneHot)


# --------------------------------------------------------------------------- factories
@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py")
@pytest.mark.parametrize(
    "preset, shape, n_actions",
    [("atari100k", (3, 64, 64), 6), ("atari", (1, 96, 96), 18), ("atari_dreamerv2", (1, 64, 64), 6)],
)
def test_atari_presets(preset, shape, n_actions):
    env = make_atari_env("pong", preset, seed=0, resize="opencv")
    check_env_specs(env)
    assert isinstance(env.action_spec, OneHot) and env.action_spec.shape == (n_actions,)
    td = env.rollout(5, break_when_any_done=False)
    assert td["pixels"].shape == (5, *shape) and td["pixels"].dtype == torch.uint8
    assert td["pixels"].float().std() > 0
    assert td["is_first"][0].item() and not td["is_first"][1:].any()


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py")
def test_atari_preset_names_with_a_game_and_the_time_cap_rule():
    v2 = make_env("atari_dreamerv2_breakout", seed=0, resize="opencv")
    assert v2.reset()["pixels"].shape == (1, 64, 64) and v2.action_spec.shape == (4,)  # breakout's minimal set
    assert not v2.terminal_on_truncation  # DreamerV2: the frame cap ends the episode, it is not terminal
    v3 = make_env("atari_breakout", seed=0, resize="opencv")
    assert v3.reset()["pixels"].shape == (1, 96, 96) and v3.terminal_on_truncation  # the reference's rule


@pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="needs Pillow")
def test_atari_pillow_resize_via_make_env():
    env = make_env("atari100k_pong", seed=0)
    assert env.reset()["pixels"].shape == (3, 64, 64)


def test_gym_vector_presets():
    for name, obs_dim, act_dim in [("cartpole", 4, 2), ("pendulum", 3, 1), ("acrobot", 6, 3)]:
        env = make_env(name, seed=0)
        check_env_specs(env)
        td = env.reset()
        assert td["observation"].shape == (obs_dim,) and td["observation"].dtype == torch.float32
        assert env.action_spec.shape == (act_dim,)
    assert make_env("pendulum").action_spec.space.high.tolist() == [1.0]


@pytest.mark.skipif(importlib.util.find_spec("pygame") is None, reason="needs pygame")
def test_gym_pixels():
    env = make_gym_env("CartPole-v1", pixels=True, size=32, seed=0)
    check_env_specs(env)
    td = env.rollout(3, break_when_any_done=False)
    assert td["pixels"].shape == (3, 3, 32, 32) and td["pixels"].dtype == torch.uint8
    assert "observation" not in td.keys()


def test_make_env_unknown_name():
    with pytest.raises(ValueError, match="cartpole"):
        make_env("no_such_env")


def test_dmc_missing_or_works():
    if importlib.util.find_spec("dm_control") is None:
        with pytest.raises(ImportError, match="dmc"):
            make_env("dmc_cartpole_swingup", pixels=False)
        return
    env = make_env("dmc_cartpole_swingup", pixels=False)
    check_env_specs(env)
    assert env.reset()["observation"].shape == (5,)
