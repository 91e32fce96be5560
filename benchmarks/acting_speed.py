"""Time one acting step of the policy (encoder, one RSSM observe step, actor) in float32 and bf16.

    python benchmarks/acting_speed.py --size size1m --obs image64 --steps 200 --threads 1

The collector calls :class:`~torchrl_dreamerv3.modules.DreamerV3Policy` once per env step (``run.envs``
rows at a time). This builds the agent for 64x64x3 images (or a 17-d vector) and a discrete action, then
calls the policy ``--steps`` times per precision, the precisions interleaved in blocks so that a load change
hits both alike, and prints the median ms per call and the ratio. No env is stepped: the env's own cost
(about 1 ms for ALE at action repeat 4) comes on top.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.data import OneHot

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchrl_dreamerv3.modules import DreamerV3Policy, make_dreamerv3, model_config  # noqa: E402
from torchrl_dreamerv3.training.compute.acceleration import accelerate  # noqa: E402
from torchrl_dreamerv3.training.compute.settings import Acceleration  # noqa: E402

OBS = {"image64": ("pixels", (3, 64, 64)), "vector17": ("observation", (17,))}


def make_policy(size: str, obs: str, actions: int, precision: str) -> tuple[DreamerV3Policy, TensorDict]:
    key, shape = OBS[obs]
    agent = make_dreamerv3({key: shape}, OneHot(actions), model_config(size))
    policy = DreamerV3Policy(agent)
    accelerate(None, Acceleration(precision=precision), agent=agent, policies=(policy,))
    c = agent.cfg
    value = torch.randint(0, 256, (1, *shape), dtype=torch.uint8) if len(shape) == 3 else torch.randn(1, *shape)
    step = TensorDict({key: value, "is_first": torch.zeros(1, 1, dtype=torch.bool), "deter": torch.zeros(1, c.deter),
                       "stoch": torch.zeros(1, c.stoch, c.classes), "prev_action": torch.zeros(1, actions)}, [1])
    return policy, step


def time_calls(policy: DreamerV3Policy, step: TensorDict, calls: int) -> list[float]:
    out = []
    with torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter()
            result = policy(step.clone())
            out.append(time.perf_counter() - start)
            step.update(result.select("deter", "stoch", "prev_action"))  # the carry, as the collector keeps it
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="size1m")
    parser.add_argument("--obs", choices=sorted(OBS), default="image64")
    parser.add_argument("--actions", type=int, default=18)
    parser.add_argument("--steps", type=int, default=200, help="timed calls per precision")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    precisions = ("float32", "bfloat16")
    policies = {p: make_policy(args.size, args.obs, args.actions, p) for p in precisions}
    times = {p: [] for p in precisions}
    block = 20
    for p in precisions:
        time_calls(*policies[p], 10)  # warm-up
    for start in range(0, args.steps, block):
        for p in precisions if (start // block) % 2 == 0 else reversed(precisions):
            times[p] += time_calls(*policies[p], min(block, args.steps - start))
    ms = {p: 1e3 * statistics.median(times[p]) for p in precisions}
    print(f"acting, {args.size}, {args.obs}, {args.actions} actions, one env, {args.threads} thread(s), "
          f"{args.steps} calls each | load average {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    for p in precisions:
        print(f"  {p:9s} median {ms[p]:6.2f} ms per call")
    print(f"  bf16 / float32: {ms['bfloat16'] / ms['float32']:.2f}")


if __name__ == "__main__":
    main()
