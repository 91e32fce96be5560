"""Evaluation episodes on an env of their own, with the acting policy."""
from __future__ import annotations

import torch
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(env: EnvBase, policy, episodes: int, deterministic: bool = False) -> list[float]:
    """Returns of ``episodes`` episodes of ``policy`` on ``env`` (an EpisodeStream with the state primer).

    Actions are sampled (DreamerV3's reference) or, with ``deterministic=True``, the distribution's
    mode (DreamerV1 and V2, whose evaluation takes ``mode()``). ``env`` is closed afterwards.
    """
    device = next(policy.parameters()).device
    exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    returns, td = [], env.reset()
    while len(returns) < episodes:
        with set_exploration_type(exploration):
            td = policy(td.to(device)).to("cpu")
        td = env.step(td)
        if td["next", "is_last"].item():
            returns.append(td["next", "episode_reward"].item())
        td = step_mdp(td)
    env.close()
    return returns
