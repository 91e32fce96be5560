"""The training loop of every run, read top to bottom in :func:`train`; one iteration is::

    for batch in run.collection.receive():    # 1. collect: sync steps the envs for one batch now; parallel
                                              #    takes what the collector thread gathered meanwhile
        add_to_replay(run, batch)             # 2. each batch into the replay (NaN-checked first)
    for each update the train ratio owes:     # 3. train_at_ratio: collection.updates_due() on the steps stored,
        sample, update, write back            # 4. then per update: replay.sample -> learner.update -> write_back
    record_episodes, log, report, evaluate    # each on its own cadence
    at a checkpoint: pause collection, add what the thread gathered, save   # a consistent cut

What is built is in :mod:`.run` (from the plan of :mod:`.plan`); the pacing of collection against updates
in :mod:`.collection.sync` / :mod:`.collection.parallel`; one update in :mod:`torchrl_dreamerv3.agent.learner`.
"""
from __future__ import annotations

import contextlib
import time

from omegaconf import DictConfig
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from ..envs import FLAG_KEYS
from .collection.environment import EnvFactory, make_eval_env
from .compute.distributed import shutdown_distributed
from .evaluation import evaluate
from .guards import check_finite
from .persistence.checkpoint import save_checkpoint
from .plan import RunPlan, as_plan
from .reporting.report import open_loop_report
from .run import Run, start_run
from .signals import StopRequest

__all__ = ["train", "REPLAY_KEYS"]

#: What a replay row keeps besides the observations (each frame once: no ("next", obs)).
REPLAY_KEYS = ("action", "deter", "stoch", *FLAG_KEYS, ("next", "reward"), ("collector", "traj_ids"))


def train(cfg: DictConfig | RunPlan, env_fn: EnvFactory | None = None,
          behaviour_actor: TensorDictModuleBase | None = None) -> dict:
    """Trains as configured (``torchrl_dreamerv3/configs/config.yaml``); returns the final counters.

    Args:
        cfg: the composed Hydra config (or its :class:`~.plan.RunPlan`).
        env_fn: ``seed -> env``, any TorchRL env (wrapped into an EpisodeStream when it is not one);
            by default the env comes from ``cfg.env`` (a preset, ``env=gym env.id=...`` or ``env._target_``).
        behaviour_actor: collect with this module instead of the agent's actor (it reads the posterior
            ``deter``/``stoch`` and writes ``action``); everything is still trained, evaluation uses the
            agent's own actor.
    """
    plan = as_plan(cfg)  # every setting validated in one sweep, resolved once
    run = start_run(plan, env_fn=env_fn, behaviour_actor=behaviour_actor)
    try:
        with run.lock or contextlib.nullcontext(), StopRequest() as stop, run.collection:
            while True:
                for batch in run.collection.receive(timeout=1.0):  # collect (sync) or take the thread's batches
                    add_to_replay(run, batch)
                owed = train_at_ratio(run, stop)  # sample, update, write back: as often as the ratio owes
                record_episodes(run)
                log_progress(run)
                report_open_loop(run)
                evaluate_on_cadence(run)
                # under torchrun every rank must take the same decision at the same round (dp.any)
                stopping, done = run.dp.any(stop.requested), not owed and run.collection.finished
                if stopping or done or run.dp.any(time.time() - run.clock["save"] >= run.plan.loop.save_every):
                    with run.collection.pause():  # a consistent cut: replay rows == env steps counted
                        for batch in run.collection.take_collected():  # what the thread gathered before the cut
                            add_to_replay(run, batch)
                        record_episodes(run)
                        save(run)
                if stopping or done:
                    break
    except BaseException:
        _shutdown_after_error(run)
        raise
    return finish(run)


def add_to_replay(run: Run, batch: TensorDictBase) -> None:
    """Where collected data enters the replay: ``(envs, time)`` rows, one stream per env. A NaN stops the run
    before anything is stored, so the replay (and its checkpoints) stays clean."""
    check_finite(batch, [*run.agent.obs_keys, ("next", "reward")], run.collection.env_steps - batch.numel())
    run.replay.extend(batch.select(*run.agent.obs_keys, *REPLAY_KEYS))


def _shutdown_after_error(run: Run) -> None:
    """Worker processes and Ray actors (and a Ray cluster the run started) end with a failed run too; the
    original error is the one raised."""
    try:
        run.collector.shutdown()
    except Exception as error:  # noqa: BLE001 - the run's own error matters more
        print(f"collector shutdown after the error failed too: {error!r}")


def train_at_ratio(run: Run, stop: StopRequest) -> int:
    """Runs the updates the train ratio owes for the env steps stored, each on a replay window whose recomputed
    posterior latents go back into the replay; a stop request ends the round early, and the updates not run
    stay owed."""
    owed, batch_size = run.collection.updates_due(), run.plan.replay.batch_size
    for _ in range(owed):
        window, info = run.replay.sample(return_info=True)  # (B * (T + 1)) rows; info: where they came from
        run.metrics, latents = run.learner.update(window.reshape(batch_size, -1).to(run.device))
        run.replay.write_back(info, latents.reshape(batch_size, -1))  # rows 1..T get the fresh posterior
        run.metric_mean.add(run.metrics)
        run.counters["updates"] += 1
        run.collection.update_done()
        if stop.requested and run.dp.world_size == 1:  # ranks stop together, after the round
            break
    if owed:
        run.progress.training_step(run.counters)
    return owed


def record_episodes(run: Run) -> None:
    """Episode returns finished since the last call, and the env steps collected."""
    for value, length, step in run.collection.episodes():  # under torchrun: rank 0's episodes
        run.counters["episodes"] += 1
        run.last_return = value
        run.logger.log_episode(step * run.dp.world_size, value, length)
    env_steps = run.collection.env_steps * run.dp.world_size  # every rank collects the same steps per round
    run.progress.advance(env_steps - run.env_steps)
    run.counters["env_steps"] = env_steps


def log_progress(run: Run) -> None:
    if not run.dp.is_main or time.time() - run.clock["log"] < run.plan.loop.log_every:
        return
    perf = run.progress.throughput(run.counters)
    run.logger.log_scalars(perf, run.env_steps, "perf")
    if run.metric_mean.count:  # the mean over the updates since the last line, as the reference logs
        run.logger.log_scalars(run.metric_mean.pop(), run.env_steps, "train")
    run.progress.show(run.counters, perf, run.last_return)
    run.clock["log"] = time.time()


def report_open_loop(run: Run, force: bool = False) -> None:
    """The reference's open-loop video (first half observed, second half imagined) for image observations."""
    due = time.time() - run.clock["report"] >= run.plan.loop.report_every
    if not run.dp.is_main or run.metrics is None or not run.image_keys or not (due or force):
        return
    window = run.replay.sample_uniform(min(4, run.plan.replay.batch_size)).to(run.device)
    video, scores = open_loop_report(run.agent, window)
    run.logger.log_scalars(scores, run.env_steps, "report")
    run.logger.log_video("openloop", video, run.env_steps)
    run.clock["report"] = time.time()


def evaluate_on_cadence(run: Run) -> None:
    loop = run.plan.loop
    if not loop.eval_every or run.env_steps - run.clock["eval_step"] < loop.eval_every:
        return
    run.clock["eval_step"] = run.env_steps
    if not run.dp.is_main:  # the other ranks wait for rank 0 at the next gradient all-reduce
        return
    env = make_eval_env(run.make_env, run.plan.seed, run.agent)
    with run.collection.pause():  # the exploration type is process-wide: the collector must not act meanwhile
        returns = evaluate(env, run.eval_policy, loop.eval_eps, deterministic=run.plan.generation.eval_deterministic)
    run.logger.log_scalars({"return": sum(returns) / len(returns)}, run.env_steps, "eval")


def save(run: Run) -> None:
    """Checkpoints the run; called with the collection paused (the loop's cut), so the replay's rows, the env
    steps counted and the ratio agree."""
    plan = run.plan
    if run.dp.is_main:  # the other ranks hold the same learner state (under torchrun)
        save_checkpoint(run.logdir / "checkpoint", learner=run.learner, counters=run.counters, ratio=run.ratio,
                        replay=run.replay if plan.loop.checkpoint_replay else None, keep=plan.loop.checkpoint_keep,
                        meta={"model_size": plan.model_size, "plan": dict(plan.identity)})
    run.dp.barrier()  # no rank exits before rank 0 has saved
    run.logger.plot_returns(title=f"DreamerV3 {plan.env_name}")
    run.clock["save"] = time.time()


def finish(run: Run) -> dict:
    run.collector.shutdown()  # the collection's thread has ended with the with-block
    run.progress.close()
    if run.metrics is not None:
        if run.metric_mean.count:
            run.logger.log_scalars(run.metric_mean.pop(), run.env_steps, "train")
        if run.plan.loop.report_every >= 0:
            report_open_loop(run, force=True)
    run.logger.close()
    shutdown_distributed()
    c = run.counters
    if run.dp.is_main:
        print(f"stopped at {c['env_steps']} env steps, {c['updates']} updates, {c['episodes']} episodes; "
              f"checkpoint in {run.logdir / 'checkpoint'}")
    return dict(c)
