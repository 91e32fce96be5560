"""Both agents at initialisation on the same batch: the first update's losses and internals, side by side.

``benchmarks/reference_probe.py`` (in the reference's venv) saves a batch of real env steps and the
reference's metrics of its first train calls for a few seeds. This script feeds that batch to our agent,
built from our config with the same settings, for as many seeds, and prints one table: per metric the
mean and spread over seeds on each side. With the learning rate ramping from 0 both sides still hold their
initial parameters, so every difference beyond the seeds' spread is a difference in architecture,
initialisation or loss definition, not in learning.

    python benchmarks/init_internals.py --probe probe/ --seeds 0 1 2 -- env=atari100k env.task=kung_fu_master \
        size=size1m batch_size=16 batch_length=32
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Composite, OneHot, Unbounded

from torchrl_dreamerv3 import compose_config
from torchrl_dreamerv3.training.setup import make_agent, make_learner

# name -> (ours: key of learner.update's metrics, reference: key of its train metrics, reference scale)
METRICS = {
    "loss_rec": ("loss_rec", "loss/image", 1.0),
    "loss_rew": ("loss_rew", "loss/rew", 1.0),
    "loss_con": ("loss_con", "loss/con", 1.0),
    "loss_dyn": ("loss_dyn", "loss/dyn", 1.0),
    "loss_rep": ("loss_rep", "loss/rep", 0.1),  # ours is logged times its scale
    "loss_value": ("loss_value", "loss/value", 1.0),
    "loss_repval": ("loss_repval", "loss/repval", 0.3),
    "loss_policy": ("loss_policy", "loss/policy", 1.0),
    "entropy": ("actor/policy_entropy", "ent/action", 1.0),
    "adv_std": ("actor/advantage_std", "adv_std", 1.0),
    "imag_reward": ("actor/imag_reward", "rew", 1.0),
    "dyn_ent": ("world_model/prior_entropy", "dyn_ent", 1.0),
    "rep_ent": ("world_model/post_entropy", "rep_ent", 1.0),
    "grad_norm": ("opt/grad_norm", "opt/grad_norm", 1.0),
}


def window_from_reference(batch: dict, agent) -> TensorDict:
    """The reference's batch ``(B, T + 1)`` in our replay layout: channels first, one-hot actions, and the
    reward that follows each row's action (``("next", "reward")``, the reference's reward of the next row)."""
    image = torch.from_numpy(batch["image"]).permute(0, 1, 4, 2, 3).contiguous()
    B, L = image.shape[:2]
    action = torch.from_numpy(batch["action"]).long()
    reward = torch.from_numpy(batch["reward"]).float()
    next_reward = torch.cat([reward[:, 1:], torch.zeros(B, 1)], 1).unsqueeze(-1)
    flag = lambda k: torch.from_numpy(batch[k]).bool().unsqueeze(-1)  # noqa: E731
    c = agent.cfg
    return TensorDict({
        "pixels": image, "action": torch.nn.functional.one_hot(action, agent.action_dim).float(),
        "is_first": flag("is_first"), "is_last": flag("is_last"), "is_terminal": flag("is_terminal"),
        # the latents the reference's replay holds (its policy's carry), or zeros
        "deter": torch.from_numpy(batch["dyn/deter"]) if "dyn/deter" in batch else torch.zeros(B, L, c.deter),
        "stoch": torch.from_numpy(batch["dyn/stoch"]) if "dyn/stoch" in batch else torch.zeros(B, L, c.stoch, c.classes),
        ("next", "reward"): next_reward,
    }, batch_size=[B, L])


def build_learner(batch: dict, overrides: list[str], seed: int):
    """Our learner for the reference batch's observation and action spaces, built from our config."""
    cfg = compose_config([*overrides, "device=cpu"])
    image = batch["image"]
    env = SimpleNamespace(observation_spec=Composite(pixels=Unbounded((3, *image.shape[2:4]), dtype=torch.uint8)),
                          action_spec=OneHot(int(batch["action"].max()) + 1 if "num_actions" not in batch
                                             else int(batch["num_actions"])),
                          batch_size=torch.Size([]))
    torch.manual_seed(seed)
    return make_learner(cfg, make_agent(cfg, env, torch.device("cpu")))


def ours(batch: dict, overrides: list[str], seeds: list[int]) -> list[dict]:
    records = []
    for seed in seeds:
        learner = build_learner(batch, overrides, seed)
        metrics, _ = learner.update(window_from_reference(batch, learner.modules_))
        records.append({k: float(v) for k, v in metrics.items() if v.numel() == 1})
    return records


def table(ours_records: list[dict], reference_records: list[dict]) -> str:
    lines = ["| metric | ours mean (min..max) | reference mean (min..max) | ratio ref/ours |", "|---|---|---|---|"]
    for name, (our_key, ref_key, scale) in METRICS.items():
        a = [r[our_key] / scale for r in ours_records if our_key in r]
        b = [r[ref_key] for r in reference_records if ref_key in r]
        if not a or not b:
            continue
        ma, mb = statistics.mean(a), statistics.mean(b)
        ratio = f"{mb / ma:.3g}" if ma else "-"
        lines.append(f"| {name} | {ma:.4g} ({min(a):.3g}..{max(a):.3g}) | {mb:.4g} ({min(b):.3g}..{max(b):.3g}) | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", type=Path, required=True, help="reference_probe.py's --out folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--call", type=int, default=0, help="which of the reference's train calls to compare")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(1)
    batch = dict(np.load(args.probe / "batch.npz"))
    reference = [r for r in json.loads((args.probe / "reference_metrics.json").read_text()) if r["call"] == args.call]
    records = ours(batch, [o for o in overrides if o != "--"], args.seeds)
    (args.probe / "ours_metrics.json").write_text(json.dumps(records, indent=1))
    print(table(records, reference))


if __name__ == "__main__":
    sys.exit(main())
