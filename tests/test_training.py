"""The main job end to end (subprocess, size=debug), resume, interruption and bad configurations."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from torchrl_dreamerv3.training.collection.ratio import TrainRatio

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "dreamerv3_atari.py"
FAST = ["size=debug", "batch_size=2", "batch_length=8", "run.train_ratio=4", "run.log_every=0",
        "run.report_every=0", "run.steps_per_collect=8", "threads=1", "replay.size=10000"]


def _run(logdir, *overrides, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), f"logdir={logdir}", *FAST, *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def _counters(logdir):
    from torchrl_dreamerv3.training.persistence.checkpoint import read_counters

    return read_counters(logdir)


@pytest.mark.parametrize("env", ["cartpole", "atari100k"])
def test_main_job_runs_end_to_end_and_resumes(tmp_path, env):
    run = tmp_path / env
    first = _run(run, f"env={env}", "run.steps=160", "checkpoint.replay=true", "run.eval_every=64")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "model=debug" in first.stdout and "env steps" in first.stderr  # the progress bar
    counters = _counters(run)
    assert counters["env_steps"] >= 160 and counters["updates"] > 0
    assert (run / "returns.png").is_file() or counters["episodes"] == 0
    assert (run / "dreamerv3" / "scalars" / "train" / "loss_rec.csv").is_file()
    assert (run / "dreamerv3" / "scalars" / "perf" / "fps.csv").is_file()
    assert (run / "dreamerv3" / "scalars" / "eval" / "return.csv").is_file()
    if env == "atari100k":
        assert list((run / "videos").glob("openloop_*.gif")), "open-loop video report missing"
    else:
        assert (run / "episodes.csv").read_text().count("\n") == counters["episodes"] + 1

    second = _run(run, f"env={env}", "run.steps=320", "checkpoint.replay=true", f"resume={run}")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = _counters(run)
    assert resumed["env_steps"] >= 320 and resumed["updates"] > counters["updates"]
    assert resumed["episodes"] >= counters["episodes"]
    # nothing lost or duplicated: the restored replay plus the new steps hold every env step exactly once
    assert _replay_rows(run) == resumed["env_steps"]


def _replay_rows(run):
    import json

    from torchrl_dreamerv3.training.persistence.checkpoint import resolve_checkpoint_dir

    return json.loads((resolve_checkpoint_dir(run) / "replay" / "manifest.json").read_text())["len"]


@pytest.mark.parametrize("parallel", [False, True], ids=["sync", "parallel"])
def test_sigint_finishes_the_step_saves_and_exits_cleanly(tmp_path, parallel):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a save every round, all kept: with the collector thread running, each must still be a consistent cut
    mode = [f"run.async_collect={str(parallel).lower()}", "checkpoint.replay=true", "run.save_every=0",
            "checkpoint.keep=100000"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), f"logdir={tmp_path}", *FAST, "env=cartpole",
                             "run.steps=1000000", *mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    trained = tmp_path / "dreamerv3" / "scalars" / "train" / "loss.csv"
    while time.time() < deadline and not (trained.exists() and len(list(tmp_path.glob("checkpoint/step_*"))) > 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "saving a checkpoint" in out
    counters = _counters(tmp_path)
    assert 0 < counters["env_steps"] < 1000000 and counters["updates"] > 0
    # every counted env step is in the replay once, in the final save and in those made while collecting
    assert _replay_rows(tmp_path) == counters["env_steps"]
    saves = list((tmp_path / "checkpoint").glob("step_*"))
    assert len(saves) > 4
    for save in saves:
        rows = json.loads((save / "replay" / "manifest.json").read_text())["len"]
        assert rows == json.loads((save / "info.json").read_text())["counters"]["env_steps"], save.name
    _assert_episodes_stamped_at_their_batch(tmp_path / "episodes.csv", per_batch=8)
    if parallel:  # the resumed run continues the counters from the cut
        steps = counters["env_steps"] + 64
        again = _run(tmp_path, "env=cartpole", f"run.steps={steps}", *mode, f"resume={tmp_path}")
        assert again.returncode == 0, again.stderr[-3000:]
        resumed = _counters(tmp_path)
        assert resumed["env_steps"] >= steps and resumed["updates"] > counters["updates"]
        assert _replay_rows(tmp_path) == resumed["env_steps"]


def _assert_episodes_stamped_at_their_batch(path, per_batch):
    """One env: episode i ends at row sum_{j<=i} (length_j + 1) (each episode has its reset row), so the step
    logged for it (the env steps at the end of its batch) lies in [that row, that row + per_batch). In parallel
    mode the learner drains episodes rounds later, so a stamp taken at drain time would fall far behind."""
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    assert rows, "no episode finished"
    end = 0
    for step, _, length in rows:
        end += int(length) + 1
        assert end <= int(step) < end + per_batch, (step, end)


def _compose(*overrides):
    with initialize_config_dir(str(ROOT / "torchrl_dreamerv3" / "configs"), version_base=None):
        return compose("config", overrides=["logdir=unused", *overrides])


@pytest.mark.parametrize("override, message", [
    ("run.train_ratio=-1", "run.train_ratio=-1 is out of range: it must be a number > 0"),
    ("run.envs=0", "run.envs=0 is out of range: it must be an integer >= 1"),
    ("replay_context=0", "replay_context=0 is out of range"),
    ("run.collector=async", r"run.collector='async' is unknown; choose one of \['sync', 'multisync', 'ray'\]"),
])
def test_bad_config_fails_before_training_naming_the_setting(override, message):
    from torchrl_dreamerv3.training.plan import make_plan

    with pytest.raises(ValueError, match=message):
        make_plan(_compose(override))


def test_unknown_presets_and_image_sizes_fail_with_their_names(tmp_path):
    out = _run(tmp_path, "size=size3m", timeout=120)
    assert out.returncode != 0 and "size3m" in out.stderr
    out = _run(tmp_path, "env=cartpole_pixels", "+env.size=50", timeout=120)
    assert out.returncode != 0 and "pixels" in out.stderr and "16" in out.stderr


def test_train_ratio_counts_trained_steps_per_env_step():
    ratio = TrainRatio(train_ratio=32, batch_size=16, batch_length=64)  # the atari preset: 1 update per 32 steps
    total = ratio(1024) + sum(ratio(step) for step in range(1025, 1024 + 3200 + 1))
    assert total == 1 + 100
    state = ratio.state_dict()
    clone = TrainRatio(32, 16, 64)
    clone.load_state_dict(state)
    assert [clone(s) for s in range(4225, 4300)] == [ratio(s) for s in range(4225, 4300)]


def test_train_ratio_cap_keeps_the_rest_owed():
    # 1 update per 4 env steps; at step 100, 25 are owed after the first call's 1 at step 0
    capped, plain = TrainRatio(4, 1, 16), TrainRatio(4, 1, 16)
    assert capped(0) == plain(0) == 1
    grants = [capped(100, at_most=10) for _ in range(4)]
    assert grants == [10, 10, 5, 0]  # nothing lost, nothing granted twice
    assert plain(100) == sum(grants) == 25 and capped.prev == plain.prev


# ---------------------------------------------------------------- DreamerV1 / V2 presets (configs/algo)

@pytest.mark.parametrize("algo", ["dreamerv1", "dreamerv2", "dreamerv2_dmc"])
def test_generation_presets_run_end_to_end(tmp_path, algo):
    # the presets' random-agent prefill (1000 to 50000 steps) shortened so that the run trains
    out = _run(tmp_path, f"algo={algo}", "env=pendulum", "run.steps=64", "run.prefill=16")
    assert out.returncode == 0, out.stderr[-3000:]
    counters = _counters(tmp_path)
    assert counters["updates"] > 0
    assert (tmp_path / "dreamerv3" / "scalars" / "train" / "loss_kl.csv").is_file()


def test_generation_presets_build_their_learners():
    from torchrl_dreamerv3.envs import make_env
    from torchrl_dreamerv3.objectives import (
        DreamerV1ActorLoss,
        DreamerV1WorldModelLoss,
        DreamerV2WorldModelLoss,
        WorldModelLoss,
    )
    from torchrl_dreamerv3.optim import GroupAdam, LaProp
    from torchrl_dreamerv3.training.setup import make_agent, make_learner, validate_config

    env = make_env("pendulum")
    built = {}
    for algo in ("dreamerv3", "dreamerv1", "dreamerv2"):
        cfg = _compose(f"algo={algo}", "size=debug", "env=pendulum")
        validate_config(cfg)
        agent = make_agent(cfg, env, torch.device("cpu"))
        built[algo] = (agent, make_learner(cfg, agent))
    agent, learner = built["dreamerv3"]
    assert agent.cfg.latent == "categorical" and isinstance(learner.optimizer, LaProp)
    assert learner.spec.critic_target == "ema" and learner.spec.context == "replay"
    assert type(learner.world_model_loss) is WorldModelLoss and not learner.spec.eval_deterministic
    agent, learner = built["dreamerv1"]
    assert agent.cfg.latent == "gaussian" and agent.cfg.deter == 8  # size=debug shrinks the V1 preset
    assert isinstance(learner.optimizer, GroupAdam) and learner.spec.critic_target == "online"
    assert learner.spec.context == "zero" and learner.spec.eval_deterministic and learner.spec.expl_noise == 0.3
    assert isinstance(learner.world_model_loss, DreamerV1WorldModelLoss) and learner.world_model_loss.free_nats == 3.0
    assert isinstance(learner.actor_loss, DreamerV1ActorLoss)  # dynamics backprop, start state dropped
    agent, learner = built["dreamerv2"]
    assert agent.cfg.cell == "ln_gru" and learner.spec.critic_target == "hard" and learner.spec.context == "first"
    assert learner.actor_loss.actor_grad == "dynamics"  # auto: pendulum is continuous
    assert learner.actor_loss.target_critic == learner.value_loss.slow_critic  # slow critic for targets
    assert isinstance(learner.world_model_loss, DreamerV2WorldModelLoss) and learner.world_model_loss.kl_balance == 0.8
    assert learner.optimizer.weight_decay == 1e-6 and learner.optimizer.current_lr("actor") == 4e-5
    env.close()


@pytest.mark.parametrize("overrides, message", [
    (["+algo.kl=balanced"], r"algo.kl='balanced' is not a switch of algo.generation=dreamerv3, which fixes kl='dyn_rep'"),
    (["+algo.optimizer=adam"], "algo.optimizer='adam' is not a switch of algo.generation=dreamerv3"),
    (["+algo.actor_grad=dynamics"], "fixes actor_grad='reinforce'"),
    (["algo.generation=dreamerv4"], "algo.generation='dreamerv4' is unknown"),
    (["algo=dreamerv2", "algo.grad_heads=[decoder,value]"], r"algo.grad_heads=\['decoder', 'value'\] is not allowed"),
    (["algo=dreamerv2", "algo.actor_grad=dyn"], "algo.actor_grad='dyn' is not allowed for algo.generation=dreamerv2"),
    (["algo=dreamerv1", "+algo.critic_for_targets=slow"], "fixes critic_for_targets='online'"),
    (["algo=dreamerv1", "+algo.colour=red"], "algo.colour is unknown for algo.generation=dreamerv1"),
    (["algo.expl_noise=-1"], "algo.expl_noise must be >= 0"),
])
def test_bad_algo_switches_fail_before_training(overrides, message):
    from torchrl_dreamerv3.training.setup import validate_config

    with pytest.raises(ValueError, match=message):
        validate_config(_compose(*overrides))


def test_a_saved_config_of_the_former_flat_algo_layout_still_validates():
    """Runs saved before issue 12 list every switch under algo; their generation's values are accepted."""
    from torchrl_dreamerv3.agent.generations import resolve_switches

    old_v3 = dict(name="dreamerv3", generation="dreamerv3", optimizer="laprop", critic_target="ema", hard_interval=100,
                  context="replay", kl="dyn_rep", kl_balance=0.8, free_avg=True, rec_loss="sse", reward_transform="none",
                  gamma=None, grad_heads=None, return_indexing="next_reward", imag_includes_start=True,
                  first_discount_from_data=False, actor_grad="reinforce", actor_grad_mix=0.1,
                  critic_for_targets="online", return_norm="percentile", expl_noise=0.0)
    spec, switches = resolve_switches(old_v3)
    assert spec.name == "dreamerv3" and switches == {}
    old_v2 = dict(old_v3, name="dreamerv2", generation="dreamerv2", optimizer="adam3", critic_target="hard",
                  context="first", kl="balanced", rec_loss="gaussian", reward_transform="tanh", gamma=0.999,
                  grad_heads=["decoder", "reward", "cont"], return_indexing="reward_at_state",
                  first_discount_from_data=True, actor_grad="auto", critic_for_targets="slow", return_norm="none")
    spec, switches = resolve_switches(old_v2)
    assert spec.name == "dreamerv2" and switches["reward_transform"] == "tanh" and switches["gamma"] == 0.999


def test_resume_with_a_different_model_or_env_fails_naming_the_settings():
    from torchrl_dreamerv3.training.setup import check_resume_config

    saved = _compose("env=pendulum", "algo=dreamerv1", "model.deter=128")
    check_resume_config(_compose("env=pendulum", "algo=dreamerv1", "model.deter=128", "run.steps=99", "opt3.actor_lr=1e-3"),
                        saved)  # budgets and learning rates may change on resume
    with pytest.raises(ValueError) as err:
        check_resume_config(_compose("env=cartpole", "model.deter=256"), saved)
    message = str(err.value)
    for setting in ("env.name='cartpole'", "model.deter=256 (the run has 128)", "algo.generation='dreamerv3'"):
        assert setting in message
    assert "run.steps" not in message and "--config-name config" in message


def test_a_refused_resume_keeps_the_runs_saved_config(tmp_path):
    run = tmp_path / "run"
    first = _run(run, "env=cartpole", "run.steps=64")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = (run / "config.yaml").read_text()
    second = _run(run, "env=pendulum", "run.steps=128", f"resume={run}", timeout=120)
    assert second.returncode != 0 and "differing settings: env.name='pendulum'" in second.stderr
    assert (run / "config.yaml").read_text() == saved


@pytest.mark.parametrize("mode, expected", [(False, "RANDOM"), (True, "DETERMINISTIC")])
def test_evaluation_samples_for_v3_and_takes_the_mode_for_v1_v2(mode, expected):
    from torchrl.envs.utils import exploration_type

    from torchrl_dreamerv3.modules import DreamerV3Policy
    from torchrl_dreamerv3.training.collection.environment import env_factory, make_eval_env, make_train_env
    from torchrl_dreamerv3.training.evaluation import evaluate
    from torchrl_dreamerv3.training.setup import make_agent

    cfg = _compose("env=pendulum", "size=debug", "algo=dreamerv1")
    make = env_factory(cfg)
    agent = make_agent(cfg, make_train_env(make, 1, cfg.seed), torch.device("cpu"))
    seen = []

    class Recording(DreamerV3Policy):
        def forward(self, tensordict):
            seen.append(exploration_type().name)
            return super().forward(tensordict)

    returns = evaluate(make_eval_env(make, cfg.seed, agent), Recording(agent), episodes=1, deterministic=mode)
    assert len(returns) == 1 and len(seen) == 200 and set(seen) == {expected}


def test_prefill_steps_come_before_any_update(tmp_path):
    run = tmp_path / "run"
    out = _run(run, "env=pendulum", "run.steps=96", "run.prefill=104")  # FAST trains from step 16 without prefill
    assert out.returncode == 0, out.stderr[-3000:]
    assert _counters(run) == {"env_steps": 96, "updates": 0, "episodes": 0}
    assert "prefill: 104 env steps of a uniformly random agent" in out.stdout
    resumed = _run(run, "env=pendulum", "run.steps=120", "run.prefill=104", f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _counters(run)["updates"] > 0  # the prefill counts the steps done before the resume


@pytest.mark.parametrize("overrides, name, deterministic, noise", [
    ([], "dreamerv3", False, 0.0),
    (["algo=dreamerv1"], "dreamerv1", True, 0.3),
    (["algo=dreamerv1", "algo.expl_noise=0.1"], "dreamerv1", True, 0.1),
    (["algo=dreamerv2"], "dreamerv2", True, 0.0),
    (["algo=dreamerv2_dmc"], "dreamerv2_dmc", True, 0.0),
])
def test_generation_spec_gives_the_loop_its_eval_mode_and_exploration_noise(overrides, name, deterministic, noise):
    from torchrl_dreamerv3.training import generation_spec

    spec = generation_spec(_compose(*overrides))
    assert (spec.name, spec.eval_deterministic, spec.expl_noise) == (name, deterministic, noise)
