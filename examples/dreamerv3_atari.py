"""Train DreamerV3 on Atari with the reference protocol (or on any env of configs/env, or any gymnasium id).

    python examples/dreamerv3_atari.py                                   # Atari 100k Pong
    python examples/dreamerv3_atari.py env=atari env.task=breakout       # 200M-frame protocol
    python examples/dreamerv3_atari.py env=cartpole size=debug run.steps=5000
    python examples/dreamerv3_atari.py env=gym env.id=MountainCarContinuous-v0
    python examples/dreamerv3_atari.py resume=runs/<run>                  # continue a run (same overrides as it)

Every setting is in configs/ (Hydra); see configs/config.yaml for the list. The loop that runs is
``torchrl_dreamerv3/training/loop.py``, one screen read top to bottom:

    run = start_run(cfg)                  # env, agent, learner, replay, collector; resumed if asked
    for batch in run.collector:           # run.envs x run.steps_per_collect env steps
        record(run, batch)                # episode returns, counters, replay.extend
        train_at_ratio(run, stop)         # the updates the train ratio owes: window -> update -> latents back
        log_progress(run); report_open_loop(run); evaluate_on_cadence(run)
        save(run) when due, on the last step and on SIGINT/SIGTERM

From Python, any TorchRL env: ``train(cfg, env_fn=lambda seed: GymEnv("Pendulum-v1"))``.
"""
import hydra
from omegaconf import DictConfig

from torchrl_dreamerv3.training import train


@hydra.main(config_path="../configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
