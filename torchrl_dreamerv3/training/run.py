"""Everything a training run holds, built from its plan in one place (the ``make_*`` of a sota script)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import tqdm
from omegaconf import OmegaConf
from tensordict.nn import TensorDictModuleBase

if TYPE_CHECKING:  # the plan is built by the loop (plan.make_plan); here it is only read
    from .plan import RunPlan

from ..agent.build import make_agent, unbatched_action_spec
from ..agent.learner import DreamerLearner, make_learner
from ..envs.any_env import model_observation_keys
from ..modules import DreamerV3Modules, DreamerV3Policy, PrefillActor
from ..replay.buffer import make_replay
from .collection.environment import EnvFactory, env_factory, make_collector, make_train_env
from .collection.parallel import ParallelCollection
from .collection.ratio import TrainRatio
from .collection.sync import SyncCollection
from .compute.acceleration import accelerate
from .compute.distributed import DataParallel, join_ranks, rank_seed
from .persistence.checkpoint import load_checkpoint
from .persistence.resume import check_resumable
from .persistence.run_lock import RunLock
from .reporting.logging import MetricLogger, MetricMean, cut_episodes_csv, make_logger, wandb_resume_kwargs
from .reporting.progress import Progress

__all__ = ["Run", "start_run"]


@dataclass
class Run:
    """The pieces of one run and its counters; the loop in :mod:`.loop` reads it top to bottom."""

    plan: RunPlan
    logdir: Path
    compute: str
    lock: RunLock | None
    dp: DataParallel
    make_env: EnvFactory
    agent: DreamerV3Modules
    learner: DreamerLearner
    policy: DreamerV3Policy
    eval_policy: DreamerV3Policy
    replay: object
    ratio: TrainRatio
    logger: MetricLogger
    collector: object = None
    collection: SyncCollection | None = None
    action_spec: object = None  # one env's (for the prefill's random actions)
    progress: Progress | None = None
    counters: dict = field(default_factory=lambda: dict(env_steps=0, updates=0, episodes=0))
    prefill: int = 0
    image_keys: list = field(default_factory=list)
    last_return: float | None = None
    metrics: object = None  # the last update's
    metric_mean: MetricMean = field(default_factory=MetricMean)  # every update's since the last log line
    clock: dict = field(default_factory=dict)

    @property
    def env_steps(self) -> int:
        return self.counters["env_steps"]

    @property
    def device(self) -> torch.device:
        return self.plan.device


def _build(plan: RunPlan, logdir: Path, lock: RunLock | None, dp: DataParallel, env_fn: EnvFactory | None,
           behaviour_actor: TensorDictModuleBase | None):
    make = env_factory(plan, env_fn)
    env = make_train_env(make, plan.collection.envs, dp.env_seed(plan.seed))  # ranks collect on seeds of their own
    action_spec = unbatched_action_spec(env)  # one env's (for the prefill's random actions)
    agent = make_agent(plan, env, plan.device)
    learner = make_learner(plan, agent)
    policy = DreamerV3Policy(agent, expl_noise=plan.generation.expl_noise, actor=behaviour_actor)  # V1: additive noise
    eval_policy = DreamerV3Policy(agent)  # the agent's own actor, without exploration noise
    compute = accelerate(learner, plan.compute, policies=(policy, eval_policy)).describe()
    replay = make_replay(plan.replay, scratch_dir=str(logdir / ("replay_memmap" + (f"_rank{dp.rank}" if dp.rank else ""))))
    # Each rank runs the ratio on its own env steps with its own batch: with every rank collecting the same
    # steps per round, that is the reference's ratio over the global steps and global batch (N x B).
    ratio = TrainRatio(plan.collection.train_ratio, plan.replay.batch_size, plan.replay.batch_length)
    logger = MetricLogger(None, run_dir=None)  # under torchrun only rank 0 writes logs, episodes.csv and plots
    if dp.is_main:
        backend, wandb_kwargs = plan.loop.logger_backend, plan.loop.wandb and dict(plan.loop.wandb)
        if backend == "wandb":  # a resumed run continues its own wandb run
            wandb_kwargs = {**(wandb_kwargs or {}), **wandb_resume_kwargs(logdir)}
        logger = MetricLogger(make_logger(backend, str(logdir), "dreamerv3", wandb_kwargs), run_dir=str(logdir))
    return env, Run(plan=plan, logdir=logdir, lock=lock, dp=dp, compute=compute, make_env=make,
                    agent=agent, learner=learner, policy=policy, eval_policy=eval_policy, replay=replay, ratio=ratio,
                    logger=logger, action_spec=action_spec)


def _resume(run: Run, env) -> None:
    """Loads the newest complete checkpoint (its replay checked against the env's observation spec)."""
    observations = env.observation_spec.zero().select(*run.agent.obs_keys)  # batch dims: the env's
    loaded = load_checkpoint(run.plan.resume, learner=run.learner, ratio=run.ratio, replay=run.replay,
                             replay_spec=observations)
    run.counters.update({k: loaded[k] for k in run.counters})
    tqdm.tqdm.write(f"resumed from {loaded['checkpoint']} at {run.env_steps} env steps")
    if not loaded["replay_restored"]:
        run.ratio.restart()  # no catch-up burst for the refill: the ratio starts afresh once a batch fits
        tqdm.tqdm.write("resumed without a saved replay buffer (checkpoint.replay=false): refilling it; the "
                        "train ratio restarts when it holds a batch (no catch-up for the refill)")
    # rows a killed run wrote after its checkpoint belong to a lost timeline
    run.logger.episode_returns = cut_episodes_csv(run.logdir / "episodes.csv", run.counters["episodes"],
                                                  run.env_steps)
    run.logger.plot_returns(title=f"DreamerV3 {run.plan.env_name}")


def _start_prefill(run: Run) -> None:
    """DreamerV1/V2: a uniformly random agent fills the replay first; training waits for it."""
    c = run.plan.collection
    run.prefill = c.prefill
    remaining = run.prefill - run.env_steps
    if remaining > 0:
        copies = dict(sync=1, multisync=c.envs, ray=c.ray_workers)
        per_copy = -(-remaining // copies[c.collector])  # each policy copy (one per worker) counts its rows
        run.policy.actor = PrefillActor(run.policy.actor, run.action_spec, per_copy, run.agent.keys.action)
        tqdm.tqdm.write(f"prefill: {remaining} env steps of a uniformly random agent before training (run.prefill)")


def _announce(run: Run) -> None:
    plan, counts = run.plan, run.agent.parameter_counts()
    print(f"torchrl_dreamerv3: env={plan.env_name} device={run.device} model={plan.model_size} "
          f"params={counts['total']:,} ({', '.join(f'{k} {v:,}' for k, v in counts.items() if k != 'total')}) "
          f"logdir={run.logdir} compute={run.compute}")
    if plan.size_note:
        print(plan.size_note)
    c = plan.collection
    if c.steps % c.per_batch:
        steps = -(-c.steps // c.per_batch) * c.per_batch
        print(f"run.steps={c.steps} is rounded up to {steps}: the collector delivers whole rounds of "
              f"run.envs x run.steps_per_collect = {c.per_batch} env steps")
    run.logger.log_hparams(dict(plan.hparams))


def _replay_ready(run: Run) -> bool:
    """Training starts once the replay holds a batch of windows and the prefill is done."""
    r, rows = run.plan.replay, len(run.replay)
    filled = rows >= r.batch_size * r.batch_length and rows // r.streams > r.batch_length + 1
    return filled and run.collection.env_steps >= run.prefill


def _make_collection(run: Run) -> SyncCollection:
    """Collect-then-train (sync) or a collector thread beside the learner (``run.async_collect``)."""
    c, world = run.plan.collection, run.dp.world_size  # the counters count every rank's env steps; the collection its own
    kwargs = dict(ready=lambda: _replay_ready(run), env_steps=run.env_steps // world, total_steps=-(-c.steps // world))
    # under torchrun every rank collects in step with its updates, so all ranks owe the same updates
    if world == 1 and c.parallel:
        # rounds as long as sync mode's: the updates one collected batch earns
        round_updates = max(1, math.ceil(c.per_batch * run.ratio.ratio))
        return ParallelCollection(run.collector, run.ratio, max_ahead=c.max_ahead, round_updates=round_updates, **kwargs)
    return SyncCollection(run.collector, run.ratio, **kwargs)


_SPEED_HINT = ("Faster: size=debug, a smaller run.train_ratio, or a GPU; the paper's setting: size=size200m on a GPU.")


def start_run(plan: RunPlan, env_fn: EnvFactory | None = None,
              behaviour_actor: TensorDictModuleBase | None = None) -> Run:
    """Builds env, agent, learner, replay, logger and collector from ``plan`` (:func:`~.plan.make_plan`), resuming
    if asked."""
    dp, plan = join_ranks(plan)  # under torchrun: this rank's device, rank 0's logdir; else nothing to join
    torch.manual_seed(plan.seed)  # the same initial weights on every rank
    if plan.threads:
        torch.set_num_threads(plan.threads)
    if plan.resume:
        check_resumable(plan, plan.logdir)  # before this run's config overwrites the saved one
    lock = None
    if dp.is_main:
        plan.logdir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(plan.logdir).acquire()  # one process per run directory; the kernel drops it if the process dies
        OmegaConf.save(OmegaConf.create(dict(plan.hparams)), plan.logdir / "config.yaml")
    dp.barrier()

    env, run = _build(plan, plan.logdir, lock, dp, env_fn, behaviour_actor)
    # image observations (C, H, W), from the env spec: the encoder may be user-supplied
    spec = env.observation_spec
    run.image_keys = [k for k in model_observation_keys(env) if len(spec[k].shape) - len(env.batch_size) == 3]
    if plan.resume:
        _resume(run, env)
    if dp.world_size > 1:
        dp.attach(run.learner)  # rank 0's state everywhere, gradient all-reduce before AGC, global percentiles
        torch.manual_seed(rank_seed(plan.seed, dp.rank) + run.counters["updates"])  # imagination noise apart
    _start_prefill(run)
    if dp.is_main:
        _announce(run)
    # remote workers (run.collector=ray) get the weights after each training round: when the update count moved
    run.collector = make_collector(plan.collection, run.make_env, env, run.policy, plan.device,
                                   version=lambda: run.counters["updates"])
    run.collection = _make_collection(run)
    run.progress = Progress(plan.collection.steps, run.counters, estimate_after=plan.loop.estimate_after,
                            hint=_SPEED_HINT, disable=not dp.is_main)
    now = time.time()
    run.clock = dict(log=now, report=now, save=now, eval_step=run.env_steps)
    return run
