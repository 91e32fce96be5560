"""The training loop of every run, read top to bottom in :func:`train`.

    run = start_run(cfg)                          # env, agent, learner, replay, collector (resumed if asked)
    for batch in run.collector:                   # run.envs x run.steps_per_collect env steps
        record(run, batch)                        # episode returns, counters, replay.extend
        train_at_ratio(run)                       # the updates the train ratio owes: sample a window,
                                                  # learner.update, write the posterior latents back
        log, report, evaluate, checkpoint         # each on its own cadence; SIGINT/SIGTERM save and stop

Each step is a small function below; the pieces they call live in :mod:`.run` (construction),
:mod:`.learner` (one update), :mod:`.checkpoint`, :mod:`.evaluation` and :mod:`.report`.
"""
from __future__ import annotations

import time

from omegaconf import DictConfig
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from .checkpoint import save_checkpoint
from .environment import EnvFactory, make_eval_env
from .evaluation import evaluate
from .report import open_loop_report
from .run import Run, start_run
from .setup import REPLAY_KEYS
from .signals import StopRequest

__all__ = ["train"]


def train(cfg: DictConfig, env_fn: EnvFactory | None = None,
          behaviour_actor: TensorDictModuleBase | None = None) -> dict:
    """Trains as configured (``configs/config.yaml``); returns the final counters.

    Args:
        cfg: the composed Hydra config.
        env_fn: ``seed -> env``, any TorchRL env (wrapped into an EpisodeStream when it is not one);
            by default the env comes from ``cfg.env`` (a preset, ``env=gym env.id=...`` or ``env._target_``).
        behaviour_actor: collect with this module instead of the agent's actor (it reads the posterior
            ``deter``/``stoch`` and writes ``action``); everything is still trained, evaluation uses the
            agent's own actor.
    """
    run = start_run(cfg, env_fn=env_fn, behaviour_actor=behaviour_actor)
    with StopRequest() as stop:
        for batch in run.collector:
            record(run, batch)
            train_at_ratio(run, stop)
            log_progress(run)
            report_open_loop(run)
            evaluate_on_cadence(run)
            done = run.env_steps >= cfg.run.steps
            if stop.requested or done or time.time() - run.clock["save"] >= cfg.run.save_every:
                save(run)
            if stop.requested or done:
                break
    return finish(run)


def record(run: Run, batch: TensorDictBase) -> None:
    """Episode returns of the batch, the env-step counter, and the rows into the replay."""
    batch = batch if batch.batch_dims == 2 else batch.unsqueeze(0)  # (envs, time)
    finished = batch["is_last"].squeeze(-1)
    episodes = zip(batch["episode_reward"].squeeze(-1)[finished].tolist(),
                   batch["episode_length"].squeeze(-1)[finished].tolist())
    for value, length in episodes:
        run.counters["episodes"] += 1
        run.last_return = value
        run.logger.log_episode(run.env_steps, value, length)
    run.replay.extend(batch.select(*run.agent.obs_keys, *REPLAY_KEYS))
    run.counters["env_steps"] += batch.numel()
    run.progress.advance(batch.numel())


def _replay_ready(run: Run) -> bool:
    cfg = run.cfg
    filled = len(run.replay) >= cfg.batch_size * cfg.batch_length
    return filled and len(run.replay) // cfg.run.envs > cfg.batch_length + 1 and run.env_steps >= run.prefill


def train_at_ratio(run: Run, stop: StopRequest) -> None:
    """Runs the updates the train ratio owes for the env steps so far; a stop request ends the round early."""
    if not _replay_ready(run):
        return
    owed = run.ratio(run.env_steps)
    for done in range(1, owed + 1):
        train_step(run)
        if stop.requested:
            run.ratio.refund(owed - done)  # updates counted but not run stay owed
            break
    if owed:
        run.progress.training_step(run.counters)


def train_step(run: Run) -> None:
    """One update on a replay window; the recomputed posterior latents go back into the replay."""
    batch_size = run.cfg.batch_size
    window, info = run.replay.sample(return_info=True)
    window = window.reshape(batch_size, -1).to(run.device)
    run.metrics, latents = run.learner.update(window)
    index = tuple(i.reshape(batch_size, -1)[:, 1:].reshape(-1) for i in info["index"])
    # write back without moving the write cursor, which the sampler uses as the data end
    run.replay.storage.set(index, latents.reshape(-1).to("cpu"), set_cursor=False)
    run.counters["updates"] += 1


def log_progress(run: Run) -> None:
    if time.time() - run.clock["log"] < run.cfg.run.log_every:
        return
    perf = run.progress.throughput(run.counters)
    run.logger.log_scalars(perf, run.env_steps, "perf")
    if run.metrics is not None:
        run.logger.log_scalars(run.metrics, run.env_steps, "train")
    run.progress.show(run.counters, perf, run.last_return)
    run.clock["log"] = time.time()


def report_open_loop(run: Run, force: bool = False) -> None:
    """The reference's open-loop video (first half observed, second half imagined) for image observations."""
    due = time.time() - run.clock["report"] >= run.cfg.run.report_every
    if run.metrics is None or not run.image_keys or not (due or force):
        return
    cfg = run.cfg
    window = run.replay.sample().reshape(cfg.batch_size, -1)[: min(4, cfg.batch_size)].to(run.device)
    video, scores = open_loop_report(run.agent, window)
    run.logger.log_scalars(scores, run.env_steps, "report")
    run.logger.log_video("openloop", video, run.env_steps)
    run.clock["report"] = time.time()


def evaluate_on_cadence(run: Run) -> None:
    cfg = run.cfg
    if not cfg.run.eval_every or run.env_steps - run.clock["eval_step"] < cfg.run.eval_every:
        return
    env = make_eval_env(run.make_env, cfg.seed, run.agent)
    returns = evaluate(env, run.eval_policy, cfg.run.eval_eps, deterministic=run.deterministic_eval)
    run.logger.log_scalars({"return": sum(returns) / len(returns)}, run.env_steps, "eval")
    run.clock["eval_step"] = run.env_steps


def save(run: Run) -> None:
    save_checkpoint(run.logdir / "checkpoint", learner=run.learner, counters=run.counters, ratio=run.ratio,
                    replay=run.replay if run.cfg.checkpoint.replay else None)
    run.logger.plot_returns(title=f"DreamerV3 {run.cfg.env.get('name', 'custom')}")
    run.clock["save"] = time.time()


def finish(run: Run) -> dict:
    run.collector.shutdown()
    run.progress.close()
    if run.metrics is not None:
        run.logger.log_scalars(run.metrics, run.env_steps, "train")
        if run.cfg.run.report_every >= 0:
            report_open_loop(run, force=True)
    run.logger.close()
    c = run.counters
    print(f"stopped at {c['env_steps']} env steps, {c['updates']} updates, {c['episodes']} episodes; "
          f"checkpoint in {run.logdir / 'checkpoint'}")
    return dict(c)
