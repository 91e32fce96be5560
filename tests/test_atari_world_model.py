"""The world-model evidence script (benchmarks/atari_world_model.py) on a short pixel run: held-out windows
start every model from its own state, step 0 is the run's initial model, and each checkpoint is scored."""

import csv
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
FAST = ["size=debug", "batch_size=2", "batch_length=8", "run.train_ratio=4", "run.log_every=0",
        "run.report_every=0", "run.steps_per_collect=8", "threads=1", "replay.size=10000", "run.eval_every=0"]


def _load():
    return load_benchmark("atari_world_model")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from torchrl_dreamerv3.training import train

    logdir = tmp_path_factory.mktemp("wm") / "run"
    with initialize_config_dir(config_dir=str(ROOT / "torchrl_dreamerv3" / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"logdir={logdir}", *FAST, "env=cartpole_pixels", "run.steps=64"])
    train(cfg)
    return logdir


def test_held_out_windows_ignore_the_collecting_models_latents(run_dir):
    wm = _load()
    from omegaconf import OmegaConf

    from torchrl_dreamerv3.training.collection.environment import env_factory, make_train_env
    from torchrl_dreamerv3.training.setup import make_agent

    cfg = OmegaConf.load(run_dir / "config.yaml")
    torch.manual_seed(0)
    agent = make_agent(cfg, make_train_env(env_factory(cfg), 1, 7), torch.device("cpu"))
    windows = wm.collect_windows(cfg, agent, random_actions=True, steps=40, windows=3, length=8, seed=7)
    assert windows.shape == (3, 9) and windows["is_first"][:, 1].all()
    changed = windows.clone()
    changed["deter"][:, 0] += 5.0  # the context row's stored latents: reset away by is_first
    changed["stoch"][:, 0] = changed["stoch"][:, 0].roll(1, -1)
    assert wm.score(agent, windows) == wm.score(agent, changed)
    changed["pixels"][:, 1:] = 255 - changed["pixels"][:, 1:]  # the observations do count
    assert wm.score(agent, changed) != wm.score(agent, windows)


def test_every_checkpoint_and_the_initial_model_are_scored(run_dir, tmp_path):
    wm = _load()
    rows = wm.main(["--runs", str(run_dir), "--windows", "3", "--length", "8", "--steps", "40",
                    "--results", str(tmp_path), "--name", "t"])
    steps = sorted({r["env_steps"] for r in rows})
    assert steps == [0, 64] and {r["data"] for r in rows} == {"random", "agent"}
    assert all(torch.isfinite(torch.tensor([r[k] for k in wm.METRICS])).all() for r in rows)
    first = {r["data"]: r for r in rows if r["env_steps"] == 0}
    last = {r["data"]: r for r in rows if r["env_steps"] == 64}
    assert first["random"]["openl_mse_obs"] != last["random"]["openl_mse_obs"]  # training moved the model
    with open(tmp_path / "t.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    table = (tmp_path / "t.md").read_text()
    assert "| random | 0 | 0 |" in table and "| agent | 1 | 64 |" in table
    assert (tmp_path / f"t_{run_dir.name}.gif").is_file()
