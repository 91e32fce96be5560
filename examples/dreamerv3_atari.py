"""Train DreamerV3 on Atari with the reference protocol (or on any env preset, or any gymnasium id).

    python examples/dreamerv3_atari.py                                   # Atari 100k Pong
    python examples/dreamerv3_atari.py env=atari env.task=breakout       # 200M-frame protocol
    python examples/dreamerv3_atari.py env=cartpole size=debug run.steps=5000
    python examples/dreamerv3_atari.py env=gym env.id=MountainCarContinuous-v0
    python examples/dreamerv3_atari.py resume=runs/<run>                  # continue a run (same overrides as it)

Every setting is in ``torchrl_dreamerv3/configs/`` (Hydra); ``config.yaml`` lists them. The loop that runs is
:func:`torchrl_dreamerv3.training.loop.train`, one screen read top to bottom:

    plan = make_plan(cfg)                      # every setting validated in one sweep, resolved once
    run = start_run(plan)                      # env, agent, learner, replay, collection (resumed if asked)
    with run.collection:                       # sync: collect a batch, then train; parallel: a collector thread
        while not finished:
            for batch in run.collection.receive():  # collected now (sync) or by the collector thread
                add_to_replay(run, batch)      # NaN check, then the replay's streams
            train_at_ratio(run)                # the updates the train ratio owes: sample a window,
                                               # learner.update, write the posterior latents back
            record_episodes(run)               # returns and counters of the steps collected meanwhile
            log, report, evaluate, checkpoint  # each on its own cadence; SIGINT/SIGTERM save and stop

From Python, any TorchRL env: ``train(compose_config(["env=custom"]), env_fn=lambda seed: GymEnv("Pendulum-v1"))``
(both from ``torchrl_dreamerv3``).
"""
import hydra
from omegaconf import DictConfig

from torchrl_dreamerv3.training import train


@hydra.main(config_path="../torchrl_dreamerv3/configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
