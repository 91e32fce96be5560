"""Everything a training run holds, built from its plan in one place (the ``make_*`` of a sota script)."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tqdm
from omegaconf import DictConfig, OmegaConf
from tensordict.nn import TensorDictModuleBase

from ..envs.any_env import model_observation_keys
from ..modules import DreamerV3Modules, DreamerV3Policy, PrefillActor
from .persistence.checkpoint import load_checkpoint, read_info
from .compute.acceleration import accelerate
from .config_checks import check_resumed_model_size
from .compute.distributed import DataParallel, init_distributed, rank_seed
from .collection.environment import EnvFactory, env_factory, make_collector, make_train_env
from ..agent.learner import DreamerLearner
from .reporting.logging import MetricLogger, MetricMean, cut_episodes_csv, make_logger, wandb_resume_kwargs
from .collection.parallel import ParallelCollection
from .collection.sync import SyncCollection
from .reporting.progress import Progress
from .collection.ratio import TrainRatio
from ..replay.buffer import make_replay
from ..replay.io import replay_feature_spec
from .persistence.run_lock import RunLock
from .plan import RunPlan, as_plan, check_resumed_plan
from .setup import check_resume_config, make_agent, make_learner, unbatched_action_spec

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


def _make_logger(plan: RunPlan, logdir: Path, main: bool) -> MetricLogger:
    if not main:  # under torchrun only rank 0 writes logs, episodes.csv and plots
        return MetricLogger(None, run_dir=None)
    backend, wandb_kwargs = plan.loop.logger_backend, plan.loop.wandb and dict(plan.loop.wandb)
    if backend == "wandb":  # a resumed run continues its own wandb run
        wandb_kwargs = {**(wandb_kwargs or {}), **wandb_resume_kwargs(logdir)}
    return MetricLogger(make_logger(backend, str(logdir), "dreamerv3", wandb_kwargs), run_dir=str(logdir))


def _build(plan: RunPlan, logdir: Path, lock: RunLock | None, dp: DataParallel, make: EnvFactory,
           behaviour_actor: TensorDictModuleBase | None):
    env = make_train_env(make, plan.collection.envs, dp.env_seed(plan.seed))  # ranks collect on seeds of their own
    agent = make_agent(plan, env, plan.device)
    learner = make_learner(plan, agent)
    policy = DreamerV3Policy(agent, expl_noise=plan.generation.expl_noise, actor=behaviour_actor)  # V1: additive noise
    eval_policy = DreamerV3Policy(agent)  # the agent's own actor, without exploration noise
    acceleration = accelerate(learner, plan.compute, policies=(policy, eval_policy))
    replay = make_replay(plan.replay, scratch_dir=str(logdir / ("replay_memmap" + (f"_rank{dp.rank}" if dp.rank else ""))))
    # Each rank runs the ratio on its own env steps with its own batch: with every rank collecting the same
    # steps per round, that is the reference's ratio over the global steps and global batch (N x B).
    ratio = TrainRatio(plan.collection.train_ratio, plan.replay.batch_size, plan.replay.batch_length)
    logger = _make_logger(plan, logdir, dp.is_main)
    return env, Run(plan=plan, logdir=logdir, lock=lock, dp=dp, compute=acceleration.describe(), make_env=make,
                    agent=agent, learner=learner, policy=policy, eval_policy=eval_policy, replay=replay, ratio=ratio,
                    logger=logger)


def _resume(run: Run, env) -> None:
    """Loads the newest complete checkpoint (its replay checked against the env's observation spec)."""
    spec = replay_feature_spec(env.observation_spec.zero().select(*run.agent.obs_keys), len(env.batch_size))
    loaded = load_checkpoint(run.plan.resume, learner=run.learner, ratio=run.ratio, replay=run.replay,
                             replay_spec=spec)
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


def _check_resume(plan: RunPlan, logdir: Path) -> None:
    """A resumed run continues only a run of the same plan identity (saved in its checkpoints); a checkpoint
    from before the plan: the run's config.yaml and resolved model size instead."""
    meta = read_info(plan.resume)["meta"]
    if "plan" in meta:
        check_resumed_plan(plan, meta["plan"])
        return
    if (logdir / "config.yaml").is_file():  # before it is overwritten with this config
        check_resume_config(OmegaConf.create(dict(plan.hparams)), OmegaConf.load(logdir / "config.yaml"))
    check_resumed_model_size(plan.model_size, meta)


def _start_prefill(run: Run, env) -> None:
    """DreamerV1/V2: a uniformly random agent fills the replay first; training waits for it."""
    c = run.plan.collection
    run.prefill = c.prefill
    remaining = run.prefill - run.env_steps
    if remaining > 0:
        copies = dict(sync=1, multisync=c.envs, ray=c.ray_workers)
        per_copy = -(-remaining // copies[c.collector])  # each policy copy (one per worker) counts its rows
        run.policy.actor = PrefillActor(run.policy.actor, unbatched_action_spec(env), per_copy, run.agent.keys.action)
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


def _check_distributed(plan: RunPlan, dp: DataParallel) -> None:
    """What the data-parallel path does not support yet, refused before anything is built."""
    if dp.world_size == 1:
        return
    if plan.collection.async_collect is True:
        raise ValueError("run.async_collect=true is not supported under torchrun yet: every rank must collect the "
                         "same env steps per round (use run.async_collect=false or auto)")
    if plan.collection.collector == "ray":
        raise ValueError("run.collector=ray is not supported under torchrun: every rank would start its own Ray "
                         "workers; use one learner process with run.collector=ray, or torchrun with sync/multisync")
    if plan.loop.checkpoint_replay:
        raise ValueError("checkpoint.replay=true is not supported under torchrun yet (each rank's replay shard "
                         "would need saving); resume refills the replays instead")


_SPEED_HINT = ("Faster: size=debug, a smaller run.train_ratio, or a GPU; the paper's setting: size=size200m on a GPU.")


def start_run(plan: RunPlan | DictConfig, env_fn: EnvFactory | None = None,
              behaviour_actor: TensorDictModuleBase | None = None) -> Run:
    """Builds env, agent, learner, replay, logger and collector from ``plan`` (a config: its plan is made
    first, validating every setting), resuming if asked."""
    plan = as_plan(plan)
    ctx = init_distributed(plan.device)  # no-op without torchrun
    dp = DataParallel(ctx)
    if ctx.enabled:  # the rank's own cuda:<LOCAL_RANK>
        plan = dataclasses.replace(plan, device=ctx.device)
    _check_distributed(plan, dp)
    torch.manual_seed(plan.seed)  # the same initial weights on every rank
    if plan.threads:
        torch.set_num_threads(plan.threads)
    logdir = dp.from_main(plan.logdir)  # ${now:...} in logdir resolves per process: rank 0's wins
    if plan.resume:
        _check_resume(plan, logdir)
    lock = None
    if dp.is_main:
        logdir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(logdir).acquire()  # one process per run directory; the kernel drops it if the process dies
        OmegaConf.save(OmegaConf.create(dict(plan.hparams)), logdir / "config.yaml")
    dp.barrier()

    env, run = _build(plan, logdir, lock, dp, env_factory(plan, env_fn), behaviour_actor)
    # image observations (C, H, W), from the env spec: the encoder may be user-supplied
    spec = env.observation_spec
    run.image_keys = [k for k in model_observation_keys(env) if len(spec[k].shape) - len(env.batch_size) == 3]
    if plan.resume:
        _resume(run, env)
    if dp.world_size > 1:
        dp.attach(run.learner)  # rank 0's state everywhere, gradient all-reduce before AGC, global percentiles
        torch.manual_seed(rank_seed(plan.seed, dp.rank) + run.counters["updates"])  # imagination noise apart
    _start_prefill(run, env)
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
