"""The crash drill at test size, and a resume without the replay (issue #13, defects 1, 2, 5 end to end)."""
import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sigkill_during_training_and_saves_loses_nothing(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from crash_drill import drill

    result = drill(tmp_path / "run", kills=5, steps=96, seed=0, fork=True, max_delay=0.6, train_ratio=8,
                   log=lambda *a: None)
    assert result["kills"] == 5
    assert result["problems"] == [], result
    assert result["replay_rows"] == result["env_steps"] >= 96


def _train(run, steps, *extra):
    from torchrl_dreamerv3.training import train

    overrides = [f"logdir={run}", "env=cartpole", "size=debug", "batch_size=2", "batch_length=8", "threads=1",
                 "run.train_ratio=8", "run.log_every=0", "run.report_every=0", "run.steps_per_collect=8",
                 "run.eval_every=0", "run.save_every=0", "replay.size=2000", "device=cpu", "checkpoint.keep=100",
                 f"run.steps={steps}", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "torchrl_dreamerv3" / "configs"), version_base=None):
        return train(compose("config", overrides=overrides))


def _updates_by_step(run):
    info = [json.loads((p / "info.json").read_text())["counters"] for p in (run / "checkpoint").glob("step_*")]
    return dict(sorted((c["env_steps"], c["updates"]) for c in info))


@pytest.mark.slow
def test_a_resume_without_the_replay_trains_no_burst_for_the_refill(tmp_path):  # defect 1
    run = tmp_path / "run"
    first = _train(run, 48)
    resumed = _train(run, 112, f"resume={run}")
    by_step = _updates_by_step(run)
    rounds = [(step, by_step[step] - by_step[prev]) for prev, step in zip(sorted(by_step), sorted(by_step)[1:])
              if prev >= first["env_steps"]]
    # the refill (batch 2 x 8 = 16 rows): two rounds of 8 steps, then the ratio (8 / 16 = 0.5 per step) afresh
    assert [u for _, u in rounds] == [0, 1, 4, 4, 4, 4, 4, 4], rounds
    assert resumed["updates"] == first["updates"] + sum(u for _, u in rounds)
    assert os.path.isfile(run / "episodes.csv")
