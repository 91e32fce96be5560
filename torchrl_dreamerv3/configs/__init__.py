"""The Hydra configs of every run, shipped with the package (``config.yaml`` and the ``algo/``,
``env/``, ``size/`` groups), so that an installed package composes its own defaults.

    >>> from torchrl_dreamerv3.configs import compose_config
    >>> cfg = compose_config(["env=cartpole", "size=debug", "run.steps=200"])
    >>> cfg.env.name, cfg.run.steps
    ('cartpole', 200)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

#: The folder holding ``config.yaml``; ``python examples/dreamerv3_atari.py`` and Hydra's ``--config-dir`` use it.
CONFIG_DIR = Path(__file__).resolve().parent

__all__ = ["CONFIG_DIR", "compose_config"]


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The run config with Hydra ``overrides`` (``"env=cartpole"``, ``"run.steps=2000"``) applied.

    The same composition as the command line of ``examples/dreamerv3_atari.py``, from any working
    directory; pass the result to :func:`torchrl_dreamerv3.train`.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))
