"""The run plan: one validation sweep that names every bad value, a frozen result built once, and a
resumed run held against the plan its checkpoint saved."""
import dataclasses

import pytest
import torch

from torchrl_dreamerv3 import compose_config
from torchrl_dreamerv3.training.config_checks import ConfigError
from torchrl_dreamerv3.training.persistence.resume import check_resumed_plan
from torchrl_dreamerv3.training.plan import RunPlan, make_plan

TINY = ["env=cartpole", "size=debug", "device=cpu"]


def test_one_sweep_names_every_bad_value_at_once():
    cfg = compose_config([*TINY, "run.envs=0", "opt.lr=-1", "+algo.kl=balanced", "precision=f16",
                          "run.async_collect=sometimes"])
    with pytest.raises(ConfigError) as caught:
        make_plan(cfg)
    problems = caught.value.problems
    assert len(problems) == 4, problems  # async_collect waits for typed values: run.envs is not one
    message = str(caught.value)
    for name in ("run.envs=0", "opt.lr=-1", "algo.kl='balanced'", "precision"):
        assert name in message, message
    assert message.startswith("4 settings are bad:")


def test_settings_read_once_the_values_are_typed_are_named_too():
    cfg = compose_config([*TINY, "run.async_collect=sometimes", "replay.prefetch=-2", "compile.mode=fast"])
    with pytest.raises(ConfigError) as caught:
        make_plan(cfg)
    assert {p.split(" ")[0] for p in caught.value.problems} == {"run.async_collect", "replay.prefetch", "compile.mode"}


def test_one_bad_value_is_its_message_alone():
    with pytest.raises(ValueError, match=r"^run.envs=0 is out of range"):
        make_plan(compose_config([*TINY, "run.envs=0"]))


def test_the_plan_is_frozen_and_resolved():
    plan = make_plan(compose_config([*TINY, "algo=dreamerv1", "run.envs=2", "model.deter=16"]))
    assert isinstance(plan, RunPlan) and plan.device == torch.device("cpu")
    assert plan.generation.name == "dreamerv1" and plan.model.latent == "gaussian" and plan.model.deter == 16
    assert plan.replay.streams == plan.collection.envs == 2 and plan.replay.slice_len == plan.replay.batch_length + 1
    assert plan.losses.opt["model_lr"] > 0  # V1: the three-Adam section
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.seed = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.replay.size = 1
    with pytest.raises(TypeError):
        plan.switches["gamma"] = 0.5  # read-only mappings
    with pytest.raises(TypeError):
        plan.losses.scales["rep"] = 1.0


def test_size_auto_resolves_by_device_once():
    cfg = compose_config(["env=cartpole", "device=cpu"])
    plan = make_plan(cfg)
    assert plan.model_size == "size1m" and "size=auto on CPU" in plan.size_note
    assert plan.model.deter == make_plan(compose_config(["env=cartpole", "device=cpu", "size=size1m"])).model.deter


def test_a_resumed_plan_must_match_the_saved_one():
    saved = dict(make_plan(compose_config([*TINY, "model.deter=16"])).identity)
    # budgets, cadences and learning rates may change on resume
    check_resumed_plan(make_plan(compose_config([*TINY, "model.deter=16", "run.steps=99", "opt.lr=1e-3"])), saved)
    with pytest.raises(ValueError) as caught:
        check_resumed_plan(make_plan(compose_config([*TINY, "model.deter=32", "batch_length=16"])), saved)
    message = str(caught.value)
    assert "model.deter=32 (the run has 16)" in message and "batch_length=16 (the run has 64)" in message
    assert "run.steps" not in message and "--config-name config" in message
    with pytest.raises(ValueError, match="generation='dreamerv2'"):
        check_resumed_plan(make_plan(compose_config([*TINY, "algo=dreamerv2"])), saved)


def test_builders_take_the_plan():
    from torchrl_dreamerv3.agent.build import make_agent
    from torchrl_dreamerv3.agent.learner import make_learner
    from torchrl_dreamerv3.envs import make_env
    from torchrl_dreamerv3.replay.buffer import make_replay

    plan = make_plan(compose_config([*TINY, "model.deter=16", "slowvalue.rate=0.25", "replay.size=2000", "run.envs=2",
                                     "retnorm.limit=3.0"]))
    env = make_env("cartpole")
    agent = make_agent(plan, env)
    learner = make_learner(plan, agent)
    assert agent.cfg == plan.model and agent.cfg.deter == 16 and learner.spec == plan.generation
    assert learner.slow_critic.eps == pytest.approx(1 - 0.25)  # SoftUpdate keeps 1 - rate of the old weights
    assert learner.actor_loss.normalizer.limit == 3.0
    replay = make_replay(plan.replay)
    assert [rb._storage.max_size for rb in replay._rbs] == [1000, 1000]  # replay.size over the streams
    env.close()
