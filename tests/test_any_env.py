"""Any env plugs in: a gymnasium id, a Hydra ``_target_``, a Python factory; unusable observations are named."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchrl.data import Bounded, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase, GymEnv

from torchrl_dreamerv3.envs.any_env import as_episode_stream, check_observation_spec
from torchrl_dreamerv3.training.collection.ratio import TrainRatio

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "dreamerv3_atari.py"
FAST = ["size=debug", "batch_size=2", "batch_length=8", "run.train_ratio=4", "run.log_every=0",
        "run.report_every=0", "run.steps_per_collect=8", "threads=1", "replay.size=10000", "run.eval_every=0"]


def _run(logdir, *overrides, timeout=240):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), f"logdir={logdir}", *FAST, *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


class _SpecOnlyEnv(EnvBase):
    """An env with the given observation spec; only its specs are read."""

    def __init__(self, **observations):
        super().__init__(batch_size=())
        self.observation_spec = Composite(**observations)
        self.action_spec = OneHot(2)
        self.reward_spec = Unbounded(shape=(1,))

    def _reset(self, td=None):
        raise NotImplementedError

    def _step(self, td):
        raise NotImplementedError

    def _set_seed(self, seed):
        pass


@pytest.mark.parametrize("spec, words", [
    (Unbounded(shape=(64, 64, 3), dtype=torch.uint8), ["'pixels'", "(64, 64, 3)", "channels-last", "PermuteTransform"]),
    (Unbounded(shape=(3, 64, 64), dtype=torch.float32), ["'pixels'", "torch.float32", "uint8"]),
    (Unbounded(shape=(3, 50, 50), dtype=torch.uint8), ["(3, 50, 50)", "multiples of 16"]),
    (Unbounded(shape=(4, 4), dtype=torch.float32), ["(4, 4)", "2-D observations are not supported"]),
    (Bounded(0, 9, shape=(5,), dtype=torch.int64), ["torch.int64", "integer vectors"]),
])
def test_observations_the_encoder_cannot_take_are_named_with_shape_dtype_and_what_is_supported(spec, words):
    env = _SpecOnlyEnv(pixels=spec, observation=Unbounded(shape=(4,)))
    with pytest.raises(ValueError) as err:
        check_observation_spec(env)
    message = str(err.value)
    for word in [*words, "Supported: images (C, H, W) uint8"]:
        assert word in message
    assert "'observation'" not in message  # the good key is not blamed


def test_supported_observations_pass_the_check():
    check_observation_spec(_SpecOnlyEnv(pixels=Unbounded(shape=(3, 64, 64), dtype=torch.uint8),
                                        observation=Unbounded(shape=(4,), dtype=torch.float64)))


def test_a_plain_torchrl_env_becomes_an_episode_stream_with_normalised_actions():
    stream = as_episode_stream(GymEnv("Pendulum-v1"))  # bounds [-2, 2], float32 obs
    assert stream.action_spec.space.low.item() == -1.0 and stream.action_spec.space.high.item() == 1.0
    td = stream.rollout(205, break_when_any_done=False)
    assert td["next", "is_last"].sum() == 1 and not td["next", "done"].any()
    assert as_episode_stream(stream) is stream
    with pytest.raises(TypeError, match="GymWrapper"):
        as_episode_stream("Pendulum-v1")


def test_train_accepts_a_python_env_factory(tmp_path):
    from torchrl_dreamerv3 import compose_config, train

    cfg = compose_config([f"logdir={tmp_path}", *FAST, "env=custom", "run.steps=48"])  # the README's recipe
    seeds = []

    def make(seed):
        seeds.append(seed)
        return GymEnv("MountainCarContinuous-v0")

    counters = train(cfg, env_fn=make)
    assert counters["env_steps"] == 48 and counters["updates"] > 0
    assert seeds and seeds[0] == cfg.seed
    assert (tmp_path / "checkpoint").is_dir()


def test_main_job_takes_any_gymnasium_id_and_any_hydra_target(tmp_path):
    gym = _run(tmp_path / "gym", "env=gym", "env.id=Acrobot-v1", "run.steps=36")
    assert gym.returncode == 0, gym.stderr[-3000:]
    assert "env=gym" in gym.stdout and "rounded up to 40" in gym.stdout  # 36 is not a whole collector round
    target = _run(tmp_path / "target", "env=custom", "env._target_=torchrl.envs.GymEnv",
                  "env.env_name=Pendulum-v1", "run.steps=32")
    assert target.returncode == 0, target.stderr[-3000:]
    bad = _run(tmp_path / "bad", "env=gym", "env.id=NoSuchEnv-v9", "run.steps=32", timeout=120)
    assert bad.returncode != 0 and "env.id='NoSuchEnv-v9' is not a registered gymnasium id" in bad.stderr


def test_the_main_job_estimates_its_duration_from_the_first_updates(tmp_path):
    out = _run(tmp_path, "env=cartpole", "run.steps=96", "run.estimate_after=0")
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout + out.stderr
    assert "estimated time left:" in printed and "env steps/s" in printed and "size=size200m" in printed


def test_a_stop_request_gives_back_the_updates_it_did_not_run():
    ratio = TrainRatio(train_ratio=16, batch_size=4, batch_length=16)  # 1 update per 4 env steps
    assert ratio(1000) == 1
    assert ratio(1064) == 16
    ratio.refund(10)  # stopped after 6 of the 16
    assert ratio(1064) == 10 and ratio(1068) == 1
