"""The replay and the collection with the real pieces: a TorchRL collector with the primed policy in a
thread, the learner's update and the latent write-back, as the training loop wires them."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from torchrl_dreamerv3.modules import DreamerV3Policy
from torchrl_dreamerv3.training import TrainRatio
from torchrl_dreamerv3.training.collection.parallel import ParallelCollection
from torchrl_dreamerv3.training.collection.sync import SyncCollection
from torchrl_dreamerv3.replay.buffer import make_replay
from torchrl_dreamerv3.training.collection.environment import env_factory, make_collector, make_train_env
from torchrl_dreamerv3.training.plan import make_plan
from torchrl_dreamerv3.training.setup import REPLAY_KEYS, make_agent, make_learner

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*overrides):
    with initialize_config_dir(str(ROOT / "torchrl_dreamerv3" / "configs"), version_base=None):
        return compose("config", overrides=["logdir=unused", "env=cartpole", "size=debug", "device=cpu",
                                            "batch_size=2", "batch_length=8", "run.envs=2", "replay.size=2000",
                                            "run.steps_per_collect=8", "run.train_ratio=4", *overrides])


@pytest.mark.parametrize("parallel", [True, False])
def test_collect_train_and_write_back(parallel):
    cfg = _cfg()
    device = torch.device("cpu")
    plan = make_plan(cfg)
    make = env_factory(plan)
    env = make_train_env(make, cfg.run.envs, cfg.seed)
    agent = make_agent(plan, env, device)
    learner = make_learner(plan, agent)
    collector = make_collector(plan.collection, make, env, DreamerV3Policy(agent), device)  # 2 streams, a SerialEnv
    replay = make_replay(plan.replay)
    ratio = TrainRatio(cfg.run.train_ratio, cfg.batch_size, cfg.batch_length)
    window_rows = cfg.batch_length + cfg.replay_context

    def ready():
        return len(replay) >= cfg.batch_size * cfg.batch_length and len(replay) // cfg.run.envs > window_rows

    def write(batch):
        assert torch.isfinite(batch["deter"]).all()
        replay.extend(batch.select(*agent.obs_keys, *REPLAY_KEYS))

    common = dict(ready=ready, total_steps=96)
    collection = (ParallelCollection(collector, ratio, max_ahead=64, **common) if parallel
                  else SyncCollection(collector, ratio, **common))
    refreshed = 0
    with collection:
        while True:
            for batch in collection.receive(timeout=5.0):
                write(batch)
            owed = collection.updates_due()
            for _ in range(owed):
                window, info = replay.sample(return_info=True)
                metrics, latents = learner.update(window.reshape(cfg.batch_size, -1))
                refreshed += replay.write_back(info, latents.reshape(cfg.batch_size, -1)).updated_count
                collection.update_done()
            if not owed and collection.finished:
                break
            with collection.pause():
                for batch in collection.take_collected():
                    write(batch)
                assert len(replay) == collection.env_steps == collection.collected
    collector.shutdown()
    assert torch.isfinite(metrics["loss"])
    assert collection.env_steps == len(replay) >= 96
    updates_per_step = cfg.run.train_ratio / (cfg.batch_size * cfg.batch_length)
    first = ratio.prev - (collection.updates - 1) / ratio.ratio  # the step of the first update
    assert collection.updates == 1 + int((collection.env_steps - first) * updates_per_step + 1e-9)
    assert refreshed > 0
