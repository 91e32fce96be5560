"""Nothing lost, nothing silently wrong (issue #13): ratio restart, run lock, config checks, finite guards,
episodes.csv cut, wandb run id, resolved model size. Defect numbers refer to the issue."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_dreamerv3.functional.distributions import sample_unimix_onehot
from torchrl_dreamerv3.training.config_checks import RULES, check_config
from torchrl_dreamerv3.training.persistence.resume import check_resumed_model_size
from torchrl_dreamerv3.training.guards import NonFiniteError, check_finite
from torchrl_dreamerv3.training.reporting.logging import cut_episodes_csv, wandb_resume_kwargs
from torchrl_dreamerv3.training.collection.ratio import TrainRatio
from torchrl_dreamerv3.training.persistence.run_lock import RunLock, RunLockedError

CONFIGS = str(Path(__file__).resolve().parents[1] / "torchrl_dreamerv3" / "configs")


def _cfg(*overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        return compose("config", overrides=list(overrides))


def _updates_per_round(ratio, start, rounds, per_round, ready_at):
    """What the loop runs: each round adds ``per_round`` steps; the ratio is asked once the buffer is ready."""
    counts, filled = [], 0
    for k in range(1, rounds + 1):
        filled += per_round
        counts.append(ratio(start + k * per_round) if filled >= ready_at else 0)
    return counts


def test_resume_without_replay_restarts_the_ratio_instead_of_a_burst():  # defect 1
    trained = TrainRatio(512, 16, 64)  # cartpole: 0.5 updates per env step
    trained(1_024)
    trained(5_000)
    resumed = TrainRatio(512, 16, 64)
    resumed.load_state_dict(trained.state_dict())
    burst = _updates_per_round(resumed, 5_000, 80, 16, ready_at=1_024)
    assert max(burst) == 512  # what today's loop does: the whole refill owed at once
    restarted = TrainRatio(512, 16, 64)
    restarted.load_state_dict(trained.state_dict())
    restarted.restart()
    counts = _updates_per_round(restarted, 5_000, 80, 16, ready_at=1_024)
    first = next(i for i, c in enumerate(counts) if c)
    assert counts[first] == 1 and max(counts) <= math.ceil(16 * 0.5)  # a fresh run's first round, then the ratio
    assert sum(counts) == 1 + int((80 - first - 1) * 16 * 0.5)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_setting_rejects_a_string_naming_itself(name):  # defect 6
    cfg = _cfg()
    if OmegaConf.select(cfg, name) is None:
        pytest.skip(f"{name} not in the default config")
    OmegaConf.update(cfg, name, "abc")
    with pytest.raises(ValueError, match=rf"^{name.replace('.', '[.]')}='abc' \(str\) must be"):
        check_config(cfg)


@pytest.mark.parametrize("override,message", [
    ("opt.lr=abc", r"opt.lr='abc' \(str\) must be a number > 0"),
    ("opt.lr=-1", r"opt.lr=-1 is out of range"),
    ("opt.beta2=1.0", r"opt.beta2=1.0 is out of range: it must be a number >= 0 and < 1"),
    ("run.steps=1e5", r"run.steps=100000.0 \(float\) must be an integer >= 1; write 100000"),
    ("loss_scales.rep=-0.1", r"loss_scales.rep=-0.1 is out of range"),
    ("retnorm.perclo=99", r"retnorm.perclo=99 must be below retnorm.perchi"),
    ("imag_loss.lam=1.5", r"imag_loss.lam=1.5 is out of range"),
    ("horizon=1", r"horizon=1 is out of range"),
    ("logger.backend=mlflow", r"logger.backend='mlflow' is unknown"),
    ("device=gpu", r"device='gpu' is not a device"),
    ("checkpoint.keep=0", r"checkpoint.keep=0 is out of range"),
    ("checkpoint.replay=yes", r"checkpoint.replay='yes' \(str\) must be true or false"),
    ("replay.size=100", r"replay.size=100 cannot hold one batch"),
    ("threads=two", r"threads='two' \(str\) must be an integer >= 0"),
])
def test_bad_values_fail_naming_the_setting_and_what_is_allowed(override, message):  # defect 6
    with pytest.raises(ValueError, match=message):
        check_config(_cfg(override))


@pytest.mark.parametrize("overrides", [[], ["env=cartpole", "size=debug"], ["algo=dreamerv1", "env=pendulum"],
                                       ["algo=dreamerv2"], ["algo=dreamerv2_dmc", "env=pendulum"]])
def test_the_shipped_presets_pass(overrides):
    check_config(_cfg(*overrides))


def test_every_number_of_the_checked_groups_has_a_rule():
    cfg = OmegaConf.to_container(_cfg(), resolve=False)
    groups = ("run", "replay", "opt", "opt3", "retnorm", "slowvalue", "imag_loss", "repl_loss", "checkpoint")

    def flat(node, prefix):  # nested groups such as run.ray
        for k, v in node.items():
            yield from flat(v, f"{prefix}.{k}") if isinstance(v, dict) else [(f"{prefix}.{k}", v)]

    # null: a string setting left unset (run.ray.address, checked with the collector)
    leaves = {name for g in groups for name, v in flat(cfg[g], g) if not isinstance(v, str) and v is not None}
    assert "run.ray.workers" in leaves and leaves - set(RULES) == set()


def test_a_mistyped_resume_fails_before_anything_is_created(tmp_path, monkeypatch):  # defect 9
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"resume='runs/typo': no such directory"):
        check_config(_cfg("resume=runs/typo"))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        check_config(_cfg(f"resume={tmp_path / 'empty_run'}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_run"] and not any((tmp_path / "empty_run").iterdir())


def test_check_finite_names_the_key_and_env_step():  # defect 7
    batch = TensorDict({"vector": torch.zeros(2, 4, 3), ("next", "reward"): torch.zeros(2, 4, 1),
                        "is_first": torch.zeros(2, 4, 1, dtype=torch.bool)}, [2, 4])
    check_finite(batch, ["vector", ("next", "reward"), "is_first"], 100)
    batch["next", "reward"][1, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"next.reward is not finite \(inf\) at env step 106 \(env 1"):
        check_finite(batch, ["vector", ("next", "reward")], 100)
    batch["vector"][0, 0, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"vector is not finite \(nan\) at env step 101"):
        check_finite(batch, ["vector", ("next", "reward")], 100)


def test_nan_logits_give_a_clear_error_not_an_index_error():  # defect 7
    logits = torch.zeros(3, 4)
    assert sample_unimix_onehot(logits).sum(-1).eq(1).all()
    logits[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"1 of 3 categoricals have non-finite"):
        sample_unimix_onehot(logits)


_HOLDER = "import sys, time; from torchrl_dreamerv3.training.persistence.run_lock import RunLock; " \
          "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def test_a_second_process_meets_the_run_lock_and_a_killed_holder_leaves_none(tmp_path):  # defect 8
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"in use by another process \(pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # SIGKILL released it
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()  # a second lock in the same process is refused too
    RunLock(tmp_path).acquire().release()


def test_episodes_csv_is_cut_back_to_the_checkpoint(tmp_path):  # defect 5
    path = tmp_path / "episodes.csv"
    path.write_text("step,return,length\n16,10.0,12\n48,20.0,30\n64,15.0,9\n80,11.0,10\n96,9")  # torn last row
    kept = cut_episodes_csv(path, episodes=2, env_steps=64)
    assert kept == [(16, 10.0), (48, 20.0)]
    assert path.read_text() == "step,return,length\n16,10.0,12\n48,20.0,30\n"
    with pytest.raises(ValueError, match="holds 2 episodes but the checkpoint counted 3"):
        cut_episodes_csv(path, episodes=3, env_steps=64)
    with pytest.raises(ValueError, match="logged at step 48, after the checkpoint's 32 env steps"):
        cut_episodes_csv(path, episodes=2, env_steps=32)


def test_wandb_run_id_is_kept_in_the_run_dir(tmp_path):  # defect 9
    first = wandb_resume_kwargs(tmp_path)
    assert first["resume"] == "allow" and len(first["id"]) == 12
    assert wandb_resume_kwargs(tmp_path) == first
    (tmp_path / "other").mkdir()
    assert wandb_resume_kwargs(tmp_path / "other")["id"] != first["id"]


def test_resumed_model_size_is_compared_resolved():  # defect 9
    check_resumed_model_size("size1m", {"model_size": "size1m"})
    check_resumed_model_size("size1m", {})  # an old checkpoint: nothing recorded
    with pytest.raises(ValueError, match=r"trained with model size 'size1m', this config resolves to 'size200m'"):
        check_resumed_model_size("size200m", {"model_size": "size1m"})
