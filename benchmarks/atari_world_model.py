"""World-model evidence of a run: open-loop image and reward errors on held-out windows, per checkpoint.

    python benchmarks/atari_world_model.py --runs runs/atari_cpu/kung_fu_master_seed0 runs/atari_cpu/kung_fu_master_seed1
    python benchmarks/atari_world_model.py --runs RUN --windows 64 --length 64 --name my_world_model

For every run directory (a main-job logdir with ``config.yaml`` and ``checkpoint/step_*``; keep them with
``checkpoint.keep=<large>``) this builds the run's agent, then scores the freshly initialised model (step 0,
the run's own seed gives its initial weights) and every checkpoint on two sets of held-out windows that no
checkpoint was trained on, both collected on an env seeded apart from the run (``--seed``):

- ``random``: a uniformly random agent (the same windows for every checkpoint and every run of a game);
- ``agent``: the run's final policy, sampling as it does while collecting (its own data distribution).

Each window is ``--length`` steps; its first step is marked ``is_first``, so every model starts from its own
initial state and the stored latents of the collecting model are not used. The first half is filtered with
the posterior, the second half is predicted open loop from the recorded actions (the reference's report,
``training/reporting/report.py``). Scores: mean squared per-pixel error (pixels in [0, 1]) and mean squared reward
error (squared env units; the reward head predicts the expected reward), each for the observed (``obs``) and the imagined (``imag``) half. Writes
``results/<name>.md`` and ``.csv`` and the final checkpoint's open-loop video per run as a GIF.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_dreamerv3.modules.policy import DreamerV3Policy, PrefillActor  # noqa: E402
from torchrl_dreamerv3.training.persistence.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from torchrl_dreamerv3.training.collection.environment import env_factory, make_collector, make_train_env  # noqa: E402
from torchrl_dreamerv3.training.collection.ratio import TrainRatio  # noqa: E402
from torchrl_dreamerv3.replay.buffer import make_stream_replay  # noqa: E402
from torchrl_dreamerv3.training.reporting.report import open_loop_report, save_gif  # noqa: E402
from torchrl_dreamerv3.training.plan import make_plan  # noqa: E402
from torchrl_dreamerv3.training.setup import REPLAY_KEYS, make_agent, make_learner, unbatched_action_spec  # noqa: E402

METRICS = ("openl_mse_obs", "openl_mse_imag", "openl_reward_mse_obs", "openl_reward_mse_imag")


def collect_windows(cfg, agent, *, random_actions: bool, steps: int, windows: int, length: int,
                    seed: int) -> torch.Tensor:
    """``windows`` windows ``(windows, length + 1)`` from ``steps`` fresh env steps on env seed ``seed``."""
    torch.manual_seed(seed)
    sync = OmegaConf.merge(cfg, {"run": {"collector": "sync", "envs": 1, "steps_per_collect": 64}})
    make = env_factory(sync)
    env = make_train_env(make, 1, seed)
    policy = DreamerV3Policy(agent)
    if random_actions:
        policy.actor = PrefillActor(policy.actor, unbatched_action_spec(env), steps, agent.keys.action)
    replay = make_stream_replay(capacity=steps, streams=1, slice_len=length + 1, batch_size=windows, online=False)
    collector = make_collector(make_plan(sync, torch.device("cpu")).collection, make, env, policy, torch.device("cpu"))
    keys = (*agent.obs_keys, *REPLAY_KEYS)
    for batch in collector:
        replay.extend(batch.select(*keys).unsqueeze(0))  # (streams=1, time)
        if len(replay) >= steps:
            break
    collector.shutdown()
    batch = replay.sample_uniform(windows)
    batch[agent.keys.is_first][:, 1] = True  # each model starts from its own initial state (see module doc)
    return batch


def score(agent, windows, chunk: int = 16) -> dict[str, float]:
    """Mean of :func:`open_loop_report`'s metrics over the windows, ``chunk`` windows at a time."""
    sums = dict.fromkeys(METRICS, 0.0)
    for start in range(0, windows.shape[0], chunk):
        part = windows[start:start + chunk]
        metrics = open_loop_report(agent, part)[1]
        for k in METRICS:
            sums[k] += metrics[k].item() * part.shape[0]
    return {k: v / windows.shape[0] for k, v in sums.items()}


def evaluate_run(run_dir: Path, args, out: Path) -> list[dict]:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.device = "cpu"
    torch.manual_seed(cfg.seed)  # the run's initial weights: step 0 is the model the run started from
    env = make_train_env(env_factory(cfg), 1, args.seed)
    agent = make_agent(cfg, env, torch.device("cpu"))
    env.close()
    learner = make_learner(cfg, agent)
    ratio = TrainRatio(cfg.run.train_ratio, cfg.batch_size, cfg.batch_length)
    initial = {k: v.clone() for k, v in learner.state_dict().items()}
    checkpoints = list(reversed(list_checkpoints(run_dir)))  # oldest first
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} has no checkpoint (checkpoint/step_*)")
    load_checkpoint(checkpoints[-1], learner=learner, ratio=ratio)
    data = {"random": collect_windows(cfg, agent, random_actions=True, steps=args.steps, windows=args.windows,
                                      length=args.length, seed=args.seed),
            "agent": collect_windows(cfg, agent, random_actions=False, steps=args.steps, windows=args.windows,
                                     length=args.length, seed=args.seed + 1)}
    rows = []
    learner.load_state_dict(initial)
    points = [(0, None)] + [(None, p) for p in checkpoints]
    for env_steps, path in points:
        if path is not None:
            env_steps = load_checkpoint(path, learner=learner, ratio=ratio)["env_steps"]
        for name, windows in data.items():
            start = time.time()
            rows.append({"run": run_dir.name, "point": len(rows) // len(data), "env_steps": env_steps, "data": name,
                         **score(agent, windows),
                         "seconds": time.time() - start})
            r = rows[-1]
            print(f"{run_dir.name} step {env_steps:>6} {name:>6}: mse obs {r['openl_mse_obs']:.5f} imag "
                  f"{r['openl_mse_imag']:.5f}  reward mse obs {r['openl_reward_mse_obs']:.3f} imag "
                  f"{r['openl_reward_mse_imag']:.3f}", flush=True)
    video = open_loop_report(agent, data["agent"][:4])[0]  # the final checkpoint is loaded last
    save_gif(video, out / f"{args.name}_{run_dir.name}.gif")
    return rows


def write_tables(rows: list[dict], out: Path, name: str, command: str) -> None:
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # the runs save at their own moments: rows pair the i-th checkpoint of every run (step 0 = initial model)
    lines = [f"`{command}`", "",
             "| data | point | env steps (per run) | image MSE, observed | image MSE, open loop | reward MSE, observed | "
             "reward MSE, open loop |", "|---|---|---|---|---|---|---|"]
    for data in ("random", "agent"):
        for point in sorted({r["point"] for r in rows}):
            group = [r for r in rows if r["data"] == data and r["point"] == point]
            if not group:
                continue
            mean = {k: statistics.fmean(r[k] for r in group) for k in METRICS}
            steps = " / ".join(f"{r['env_steps']:,}" for r in group)
            lines.append(f"| {data} | {point} | {steps} | {mean['openl_mse_obs']:.5f} | {mean['openl_mse_imag']:.5f} | "
                         f"{mean['openl_reward_mse_obs']:.3f} | {mean['openl_reward_mse_imag']:.3f} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="main-job run directories")
    parser.add_argument("--windows", type=int, default=64, help="held-out windows per data set")
    parser.add_argument("--length", type=int, default=64, help="steps per window (half observed, half imagined)")
    parser.add_argument("--steps", type=int, default=4000, help="env steps collected per held-out data set")
    parser.add_argument("--seed", type=int, default=54321, help="env seed of the held-out data (not a run's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="atari_world_model")
    parser.add_argument("--results", default=str(ROOT / "results"))
    args = parser.parse_args(argv)
    if args.steps < args.length + 1:
        parser.error(f"--steps {args.steps} must exceed --length {args.length}")
    torch.set_num_threads(args.threads)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for run in args.runs for row in evaluate_run(Path(run), args, out)]
    write_tables(rows, out, args.name, "python benchmarks/atari_world_model.py " + " ".join(argv or sys.argv[1:]))
    return rows


if __name__ == "__main__":
    main()
