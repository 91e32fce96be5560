"""Train DreamerV3 on Atari with the reference protocol (or on any env preset of configs/env).

    python examples/dreamerv3_atari.py                                   # Atari 100k Pong
    python examples/dreamerv3_atari.py env=atari env.task=breakout       # 200M-frame protocol
    python examples/dreamerv3_atari.py env=cartpole size=debug run.steps=5000
    python examples/dreamerv3_atari.py resume=runs/<run>                  # continue a run (same overrides as it)

Every setting is in configs/ (Hydra); see configs/config.yaml for the list.
"""
import hydra
from omegaconf import DictConfig

from torchrl_dreamerv3.training import train


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
