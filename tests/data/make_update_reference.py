"""Writes the refactor-equivalence references: what a learner holds after a fixed sequence of updates.

``update_reference.pt``: for every case, the losses, parameters/buffers and optimiser state after two
updates. ``long_run_reference.pt``: the float state of two DreamerV1/V2 learners after updates 0, 99, 100,
101 and 159 of 160 (the settings of their learning benchmarks; past the V2 slow critic's hard copy). Both
were written with the code as it was before DreamerV1/V2 moved out of DreamerV3's loss classes (commit
299b6ba), with this file run against that checkout:

    git worktree add /tmp/old 299b6ba
    PYTHONPATH=/tmp/old OMP_NUM_THREADS=1 python tests/data/make_update_reference.py

Each case builds a tiny learner of one generation through the public config path
(``setup.make_agent`` + ``setup.make_learner``, or ``DreamerV3Learner(agent)`` for the bare defaults), with
a fixed seed, and runs its updates on fixed synthetic replay windows. ``tests/test_refactor_equivalence.py``
rebuilds the same with the current code and compares within float32 tolerance (the values differ in
their last bits from one CPU kernel to another).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, OneHot, Unbounded

REFERENCE = Path(__file__).with_name("update_reference.pt")
VEC, IMG_V3, IMG_K4S2 = {"observation": (3,)}, {"pixels": (3, 16, 16)}, {"pixels": (3, 64, 64)}
# Tiny models (a few thousand parameters) keep the reference file small.
TINY = ["size=debug", "model.deter=8", "model.hidden=4", "model.units=6", "model.stoch=2",
        "model.classes=3", "model.bins=5"]
# Learning rates large enough that two updates move every trained parameter visibly.
FAST = ["opt.lr=1e-3", "opt.warmup=0"]

#: name -> (Hydra overrides or None for ``DreamerV3Learner(agent)``, observation shapes, action spec)
CASES = {
    "v3_defaults_vec_cont": (None, VEC, ("bounded", 2)),
    "v3_config_img_disc": (["algo=dreamerv3", "model.depth=2", *FAST], IMG_V3, ("onehot", 3)),
    "v1_img_cont": (["algo=dreamerv1", "model.depth=1"], IMG_K4S2, ("bounded", 1)),
    "v1_vec_disc_free1": (["algo=dreamerv1", "free_nats=1"], VEC, ("onehot", 3)),
    "v2_img_disc": (["algo=dreamerv2", "model.depth=1"], IMG_K4S2, ("onehot", 3)),
    "v2_vec_cont": (["algo=dreamerv2", "opt3.model_lr=3e-4"], VEC, ("bounded", 2)),
    "v2_vec_disc_both": (["algo=dreamerv2", "algo.actor_grad=both", "algo.reward_transform=none"], VEC, ("onehot", 3)),
    "v2dmc_vec_cont": (["algo=dreamerv2_dmc"], VEC, ("bounded", 2)),
}


def action_spec(kind):
    name, dim = kind
    return OneHot(dim) if name == "onehot" else Bounded(-1.0, 1.0, (dim,))


def config_dir() -> Path:
    """The configs of the ``torchrl_dreamerv3`` on the path: in the package now, at the checkout's top before."""
    import torchrl_dreamerv3

    package = Path(torchrl_dreamerv3.__file__).resolve().parent
    return package / "configs" if (package / "configs").is_dir() else package.parent / "configs"


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return compose(config_name="config", overrides=[*overrides, *TINY, "device=cpu"])


def fake_env(shapes, spec):
    """What ``make_agent`` reads of an env: its observation and action specs and batch size."""
    obs = Composite({k: Unbounded(shape, dtype=torch.uint8 if len(shape) == 3 else torch.float32)
                     for k, shape in shapes.items()})
    return SimpleNamespace(observation_spec=obs, action_spec=spec, batch_size=torch.Size([]))


def window(agent, shapes, B=2, T=4, seed=0):
    """A random replay window (B, T + 1) in the collector's layout, with an episode end inside."""
    g = torch.Generator().manual_seed(seed)
    c, L = agent.cfg, T + 1
    obs = {}
    for key, shape in shapes.items():
        obs[key] = (torch.randint(0, 256, (B, L, *shape), generator=g, dtype=torch.uint8) if len(shape) == 3
                    else torch.randn(B, L, *shape, generator=g))
    actions = torch.randn(B, L, agent.action_dim, generator=g)
    if agent.discrete:
        actions = torch.nn.functional.one_hot(actions.argmax(-1), agent.action_dim).float()
    else:
        actions = actions.clamp(-1, 1)
    is_last = torch.zeros(B, L, 1, dtype=torch.bool)
    is_last[0, 2] = True
    is_first = torch.roll(is_last, 1, 1)
    is_first[:, 0] = True
    if c.latent == "gaussian":
        stoch = torch.randn(B, L, c.stoch, 1, generator=g)
    else:
        stoch = torch.nn.functional.one_hot(torch.randint(0, c.classes, (B, L, c.stoch), generator=g), c.classes).float()
    return TensorDict({
        **obs, "action": actions, "is_first": is_first, "is_last": is_last, "is_terminal": is_last.clone(),
        "deter": torch.randn(B, L, c.deter, generator=g), "stoch": stoch,
        ("next", "reward"): torch.randn(B, L, 1, generator=g),
    }, batch_size=[B, L])


def build(name):
    """``(learner, shapes)`` of one case, built the way training builds it."""
    from torchrl_dreamerv3.modules import make_dreamerv3
    from torchrl_dreamerv3.training import DreamerV3Learner
    from torchrl_dreamerv3.training.setup import make_agent, make_learner

    overrides, shapes, kind = CASES[name]
    torch.manual_seed(0)
    if overrides is None:
        agent = make_dreamerv3(shapes, action_spec(kind), "debug")
        return DreamerV3Learner(agent, opt_kwargs=dict(lr=1e-3, warmup=0)), shapes
    cfg = compose_cfg(overrides)
    agent = make_agent(cfg, fake_env(shapes, action_spec(kind)), torch.device("cpu"))
    return make_learner(cfg, agent), shapes


def run(name):
    """Two updates of the case's learner; returns its losses, parameters/buffers and optimiser state."""
    learner, shapes = build(name)
    agent = learner.modules_
    losses = []
    for step in range(2):
        data = window(agent, shapes, seed=step)
        torch.manual_seed(100 + step)
        metrics, latents = learner.update(data)
        losses.append({k: v.clone() for k, v in metrics.items() if k.startswith("loss")})
        losses[-1]["latents"] = latents.get("deter").clone()
    return dict(losses=losses, state_keys=list(learner.state_dict()), state=unique_state(learner),
                optimizer=learner.optimizer.state_dict())


#: Cases run for many updates: past the DreamerV2 slow critic's hard copy (every 100 updates) and the warm-ups.
LONG_CASES = {
    "v2_cartpole_lrs": (["algo=dreamerv2", "opt3.model_lr=3e-4", "opt3.actor_lr=2e-4", "opt3.critic_lr=3e-4"],
                        {"observation": (4,)}, ("onehot", 2)),
    "v1_pendulum": (["algo=dreamerv1"], {"observation": (3,)}, ("bounded", 1)),
}
LONG_UPDATES, LONG_CHECKS = 160, (0, 99, 100, 101, 159)
LONG_REFERENCE = Path(__file__).with_name("long_run_reference.pt")


def long_run(name):
    """``{update: float state}`` of the learner after the updates in ``LONG_CHECKS`` (B4 x T8 windows)."""
    CASES.setdefault(name, LONG_CASES[name])
    learner, shapes = build(name)
    states = {}
    for step in range(LONG_UPDATES):
        data = window(learner.modules_, shapes, B=4, T=8, seed=step)
        torch.manual_seed(100 + step)
        learner.update(data)
        if step in LONG_CHECKS:
            states[step] = {k: v.detach().clone() for k, v in unique_state(learner).items() if v.is_floating_point()}
    return states


def unique_state(learner):
    """The learner's state dict without aliases: a shared module's tensors are stored under their first key."""
    seen, state = set(), {}
    for key, value in learner.state_dict().items():
        if value.data_ptr() not in seen or value.numel() == 0:
            seen.add(value.data_ptr())
            state[key] = value.clone()
    return state


def main(which=("two", "long")):
    torch.set_num_threads(1)
    if "two" in which:
        torch.save({name: run(name) for name in CASES}, REFERENCE)
        print(f"wrote {REFERENCE.name}: {REFERENCE.stat().st_size / 1024:.0f} KiB, cases {list(CASES)}")
    if "long" in which:
        torch.save({name: long_run(name) for name in LONG_CASES}, LONG_REFERENCE)
        print(f"wrote {LONG_REFERENCE.name}: {list(LONG_CASES)} after {LONG_CHECKS} updates, "
              f"{LONG_REFERENCE.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    os.environ.setdefault("RL_WARNINGS", "False")
    main(sys.argv[1:] or ("two", "long"))  # "two" / "long": write only that file
