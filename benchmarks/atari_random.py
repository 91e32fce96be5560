"""Uniformly random agent on the package's Atari preprocessing: the floor a learning run must beat.

    python benchmarks/atari_random.py --games pong boxing krull --episodes 10
    python benchmarks/atari_random.py --games breakout --episodes 30 --preset atari100k --seed 1

The env is the main job's own (``torchrl_dreamerv3.envs.make_env(preset, task=game, seed=seed)``: for
``atari100k`` 64x64 RGB, action repeat 4 with max-pooling, no sticky actions, minimal action set, 0..30
no-op starts, no life loss, the 108k-frame cap). Each step samples the action spec uniformly (one-hot over
the game's actions). Prints mean +- std (population std) of the episode returns and writes
``results/atari_random_<game>.csv`` (episode, return, length, wall seconds).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
from torchrl.envs.utils import step_mdp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_dreamerv3.envs import make_env  # noqa: E402


def random_episodes(game: str, episodes: int, preset: str = "atari100k", seed: int = 0,
                    max_steps: int | None = None) -> list[tuple[float, int, float]]:
    """``(return, length, wall seconds)`` of ``episodes`` finished episodes of a uniformly random agent.

    ``max_steps`` (agent steps, over all episodes) stops early; the unfinished episode is dropped.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    torch.manual_seed(seed)
    env = make_env(preset, task=game, seed=seed)
    spec = env.action_spec
    results, steps, start = [], 0, time.time()
    td = env.reset()
    while len(results) < episodes and (max_steps is None or steps < max_steps):
        td["action"] = spec.rand()
        td = env.step(td)
        steps += 1
        nxt = td["next"]
        if nxt["is_last"].item():
            results.append((nxt["episode_reward"].item(), int(nxt["episode_length"].item()), time.time() - start))
            start = time.time()
        td = step_mdp(td)
    env.close()
    return results


def summarize(returns: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one episode)."""
    return statistics.fmean(returns), statistics.pstdev(returns) if len(returns) > 1 else 0.0


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float, int]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["pong"])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--preset", default="atari100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="agent steps per game at most")
    parser.add_argument("--results", default=str(ROOT / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for game in args.games:
        episodes = random_episodes(game, args.episodes, args.preset, args.seed, args.max_steps)
        if not episodes:
            print(f"{game}: no episode finished within {args.max_steps} steps")
            continue
        path = out / f"atari_random_{game}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["episode", "return", "length", "wall_s"])
            writer.writerows((i, r, n, f"{w:.2f}") for i, (r, n, w) in enumerate(episodes))
        mean, std = summarize([r for r, _, _ in episodes])
        length = statistics.fmean(n for _, n, _ in episodes)
        wall = sum(w for _, _, w in episodes)
        print(f"{game}: random return {mean:.1f} +- {std:.1f} over {len(episodes)} episodes "
              f"(mean length {length:.0f} agent steps, {wall:.0f} s) -> {path}", flush=True)
        summary[game] = (mean, std, len(episodes))
    return summary


if __name__ == "__main__":
    main()
