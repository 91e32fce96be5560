"""What a checkpoint save costs (seconds, bytes) at a few replay fill levels, with synthetic rows.

    python benchmarks/save_cost.py                       # cartpole size=debug and atari100k (size1m, size200m rows)
    python benchmarks/save_cost.py --preset atari100k --size size200m --fills 1000 10000

The replay is the loop's (``setup.make_replay``), filled with rows of the shapes the loop stores (observation,
action, deter, stoch, flags, reward, trajectory id); the learner is the real one for the preset and size
(``--no-learner`` skips building it, e.g. for size200m on a small machine). Times include the fsyncs.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from tensordict import TensorDict

from torchrl_dreamerv3.modules import model_config
from torchrl_dreamerv3.training.persistence.checkpoint import load_checkpoint, save_checkpoint
from torchrl_dreamerv3.training.collection.ratio import TrainRatio
from torchrl_dreamerv3.replay.buffer import make_replay
from torchrl_dreamerv3.training.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]
OBS = {"cartpole": ("vector", (4,), torch.float32, 2), "atari100k": ("image", (3, 64, 64), torch.uint8, 6)}


def _rows(preset: str, size: str, n: int) -> TensorDict:
    key, shape, dtype, actions = OBS[preset]
    cfg = model_config(size)
    obs = torch.randint(0, 255, (1, n, *shape), dtype=torch.uint8).to(dtype)
    return TensorDict({key: obs, "action": torch.zeros(1, n, actions), "deter": torch.randn(1, n, cfg.deter),
                       "stoch": torch.rand(1, n, cfg.stoch, cfg.classes),
                       **{f: torch.zeros(1, n, 1, dtype=torch.bool) for f in ("is_first", "is_last", "is_terminal")},
                       ("next", "reward"): torch.zeros(1, n, 1),
                       ("collector", "traj_ids"): torch.zeros(1, n, dtype=torch.int64)}, [1, n])


class _NoLearner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))])


def _learner(cfg):
    from torchrl_dreamerv3.training.collection.environment import env_factory, make_train_env
    from torchrl_dreamerv3.training.setup import make_agent, make_learner

    env = make_train_env(env_factory(cfg), cfg.run.envs, cfg.seed)
    learner = make_learner(cfg, make_agent(cfg, env, torch.device("cpu")))
    env.close()
    return learner


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(preset: str, size: str, fills: list[int], with_learner: bool = True) -> list[dict]:
    with initialize_config_dir(config_dir=str(ROOT / "torchrl_dreamerv3" / "configs"), version_base=None):
        cfg = compose("config", overrides=[f"env={preset}", f"size={size}", "device=cpu"])
    learner = _learner(cfg) if with_learner else _NoLearner()
    replay_settings = make_plan(cfg).replay
    ratio, filled, out = TrainRatio(cfg.run.train_ratio, cfg.batch_size, cfg.batch_length), 0, []
    replay = make_replay(replay_settings)
    scratch = Path(tempfile.mkdtemp(prefix="save_cost_"))
    try:
        for fill in fills:
            while filled < fill:
                chunk = min(10_000, fill - filled)
                replay.extend(_rows(preset, size, chunk))
                filled += chunk
            counters = dict(env_steps=filled, updates=0, episodes=0)
            start = time.perf_counter()
            path = save_checkpoint(scratch / "checkpoint", learner=learner, counters=counters, ratio=ratio,
                                   replay=replay, keep=1)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            load_checkpoint(scratch, learner=learner, ratio=ratio, replay=make_replay(replay_settings))
            out.append(dict(preset=preset, size=size, capacity=int(cfg.replay.size), rows=filled,
                            save_s=round(seconds, 2), load_s=round(time.perf_counter() - start, 2),
                            replay_mb=round(_du(path / "replay") / 2**20, 1),
                            state_mb=round((path / "state.pt").stat().st_size / 2**20, 2)))
            print(out[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(OBS), default=None)
    parser.add_argument("--size", default=None)
    parser.add_argument("--fills", type=int, nargs="+", default=None)
    parser.add_argument("--no-learner", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.preset:
        measure(args.preset, args.size or "debug", args.fills or [1_000, 10_000], not args.no_learner)
        return
    measure("cartpole", "debug", args.fills or [1_200, 10_000, 50_000])
    measure("atari100k", "size1m", args.fills or [1_000, 10_000, 110_000])


if __name__ == "__main__":
    main()
