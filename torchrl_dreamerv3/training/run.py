"""Everything a training run holds, built from the config in one place (the ``make_*`` of a sota script)."""
from __future__ import annotations

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
from .compute.acceleration import Acceleration, accelerate
from .config_checks import check_config, check_resumed_model_size
from .compute.distributed import DataParallel, init_distributed, rank_seed
from .guards import check_finite
from ..agent.generations import generation_spec
from .collection.environment import EnvFactory, env_factory, make_collector, make_train_env
from ..agent.learner import DreamerV3Learner
from .reporting.logging import MetricLogger, MetricMean, cut_episodes_csv, make_logger, wandb_resume_kwargs
from .collection.parallel import ParallelCollection, SyncCollection, use_parallel
from .reporting.progress import Progress
from .collection.ratio import TrainRatio
from ..replay.buffer import make_replay
from ..replay.io import replay_feature_spec
from .persistence.run_lock import RunLock
from .setup import (
    REPLAY_KEYS,
    check_resume_config,
    make_agent,
    make_learner,
    resolve_device,
    resolve_size,
    unbatched_action_spec,
    validate_config,
)

__all__ = ["Run", "start_run"]


@dataclass
class Run:
    """The pieces of one run and its counters; the loop in :mod:`.loop` reads it top to bottom."""

    cfg: DictConfig
    logdir: Path
    compute: str
    lock: RunLock | None
    dp: DataParallel
    model_size: str
    device: torch.device
    make_env: EnvFactory
    agent: DreamerV3Modules
    learner: DreamerV3Learner
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
    deterministic_eval: bool = False
    last_return: float | None = None
    metrics: object = None  # the last update's
    metric_mean: MetricMean = field(default_factory=MetricMean)  # every update's since the last log line
    clock: dict = field(default_factory=dict)

    @property
    def env_steps(self) -> int:
        return self.counters["env_steps"]


def _logdir(cfg: DictConfig) -> Path:
    if cfg.resume:  # a run dir, its checkpoint/ dir, or one checkpoint/step_* dir
        resume = Path(cfg.resume)
        if resume.name.startswith("step_"):
            resume = resume.parent
        return resume.parent if resume.name == "checkpoint" else resume
    return Path(cfg.logdir)


def _describe_size(cfg: DictConfig, device: torch.device) -> tuple[str, str | None]:
    size, note = resolve_size(cfg.model.size, device)
    generation = generation_spec(cfg).name
    if generation != "dreamerv3":  # one size per earlier generation; size presets only shrink it
        return f"{generation} preset" + ("" if cfg.model.size == "auto" else f" with size={cfg.model.size}"), None
    return size, note


def _make_logger(cfg: DictConfig, logdir: Path, main: bool) -> MetricLogger:
    if not main:  # under torchrun only rank 0 writes logs, episodes.csv and plots
        return MetricLogger(None, run_dir=None)
    wandb_kwargs = OmegaConf.to_container(cfg.logger.wandb) if "wandb" in cfg.logger else None
    if cfg.logger.backend == "wandb":  # a resumed run continues its own wandb run
        wandb_kwargs = {**(wandb_kwargs or {}), **wandb_resume_kwargs(logdir)}
    return MetricLogger(make_logger(cfg.logger.backend, str(logdir), "dreamerv3", wandb_kwargs), run_dir=str(logdir))


def _build(cfg: DictConfig, logdir: Path, lock: RunLock | None, dp: DataParallel, model_size: str,
           device: torch.device, make: EnvFactory, behaviour_actor: TensorDictModuleBase | None):
    env = make_train_env(make, cfg.run.envs, dp.env_seed(cfg.seed))  # ranks collect on seeds of their own
    agent = make_agent(cfg, env, device)
    learner = make_learner(cfg, agent)
    spec = generation_spec(cfg)
    policy = DreamerV3Policy(agent, expl_noise=spec.expl_noise, actor=behaviour_actor)  # V1: additive noise
    eval_policy = DreamerV3Policy(agent)  # the agent's own actor, without exploration noise
    acceleration = accelerate(learner, Acceleration.from_config(cfg, device), policies=(policy, eval_policy))
    replay = make_replay(cfg, scratch_dir=str(logdir / ("replay_memmap" + (f"_rank{dp.rank}" if dp.rank else ""))))
    # Each rank runs the ratio on its own env steps with its own batch: with every rank collecting the same
    # steps per round, that is the reference's ratio over the global steps and global batch (N x B).
    ratio = TrainRatio(cfg.run.train_ratio, cfg.batch_size, cfg.batch_length)
    logger = _make_logger(cfg, logdir, dp.is_main)
    return env, Run(cfg=cfg, logdir=logdir, lock=lock, dp=dp, compute=acceleration.describe(), model_size=model_size, device=device, make_env=make, agent=agent, learner=learner,
                    policy=policy, eval_policy=eval_policy, replay=replay, ratio=ratio, logger=logger,
                    deterministic_eval=spec.eval_deterministic)


def _resume(run: Run, env) -> None:
    """Loads the newest complete checkpoint (its replay checked against the env's observation spec)."""
    spec = replay_feature_spec(env.observation_spec.zero().select(*run.agent.obs_keys), len(env.batch_size))
    loaded = load_checkpoint(run.cfg.resume, learner=run.learner, ratio=run.ratio, replay=run.replay,
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
    run.logger.plot_returns(title=f"DreamerV3 {run.cfg.env.get('name', 'custom')}")


def _start_prefill(run: Run, env) -> None:
    """DreamerV1/V2: a uniformly random agent fills the replay first; training waits for it."""
    cfg = run.cfg
    run.prefill = int(cfg.run.get("prefill", 0))
    remaining = run.prefill - run.env_steps
    if remaining > 0:
        copies = dict(sync=1, multisync=cfg.run.envs, ray=OmegaConf.select(cfg, "run.ray.workers", default=1))
        per_copy = -(-remaining // copies[cfg.run.collector])  # each policy copy (one per worker) counts its rows
        run.policy.actor = PrefillActor(run.policy.actor, unbatched_action_spec(env), per_copy, run.agent.keys.action)
        tqdm.tqdm.write(f"prefill: {remaining} env steps of a uniformly random agent before training (run.prefill)")


def _announce(run: Run, size: str, note: str | None) -> None:
    cfg, counts = run.cfg, run.agent.parameter_counts()
    print(f"torchrl_dreamerv3: env={cfg.env.get('name', 'custom')} device={run.device} model={size} "
          f"params={counts['total']:,} ({', '.join(f'{k} {v:,}' for k, v in counts.items() if k != 'total')}) "
          f"logdir={run.logdir} compute={run.compute}")
    if note:
        print(note)
    per_round = cfg.run.envs * cfg.run.steps_per_collect
    if cfg.run.steps % per_round:
        steps = -(-cfg.run.steps // per_round) * per_round
        print(f"run.steps={cfg.run.steps} is rounded up to {steps}: the collector delivers whole rounds of "
              f"run.envs x run.steps_per_collect = {per_round} env steps")
    run.logger.log_hparams(OmegaConf.to_container(cfg, resolve=True))


def _replay_ready(run: Run) -> bool:
    """Training starts once the replay holds a batch of windows and the prefill is done."""
    cfg, rows = run.cfg, len(run.replay)
    filled = rows >= cfg.batch_size * cfg.batch_length and rows // cfg.run.envs > cfg.batch_length + 1
    return filled and run.collection.env_steps >= run.prefill


def max_ahead(cfg: DictConfig, ratio: TrainRatio) -> int:
    """``run.max_ahead`` in env steps; ``auto``: 4 collected batches (at least 2 updates' worth), so that the
    acting policy lags the learner by the same few batches on a 10k-step CartPole run as on Atari."""
    if cfg.run.max_ahead != "auto":
        return int(cfg.run.max_ahead)
    return max(4 * cfg.run.envs * cfg.run.steps_per_collect, math.ceil(2 / ratio.ratio))


def _make_collection(run: Run) -> SyncCollection:
    """Collect-then-train (sync) or a collector thread beside the learner (``run.async_collect``)."""
    cfg, keys = run.cfg, (*run.agent.obs_keys, *REPLAY_KEYS)

    def write(batch):  # (envs, time); in parallel mode this runs in the collector's thread
        # before anything is stored: a NaN stops the run and the replay (and its checkpoints) stays clean
        check_finite(batch, [*run.agent.obs_keys, ("next", "reward")], run.collection.env_steps)
        run.replay.extend(batch.select(*keys))

    world = run.dp.world_size  # the counters count every rank's env steps; the collection counts its own
    kwargs = dict(ready=lambda: _replay_ready(run), env_steps=run.env_steps // world,
                  total_steps=-(-int(cfg.run.steps) // world))
    # under torchrun every rank collects in step with its updates, so all ranks owe the same updates
    if world == 1 and use_parallel(cfg.run.get("async_collect", "auto"), run.device):
        per_batch = cfg.run.envs * cfg.run.steps_per_collect
        # rounds as long as sync mode's: the updates one collected batch earns
        round_updates = max(1, math.ceil(per_batch * run.ratio.ratio))
        return ParallelCollection(run.collector, write, run.ratio, max_ahead=max_ahead(cfg, run.ratio),
                                  round_updates=round_updates, **kwargs)
    return SyncCollection(run.collector, write, run.ratio, **kwargs)


def _check_distributed(cfg: DictConfig, dp: DataParallel) -> None:
    """What the data-parallel path does not support yet, refused before anything is built."""
    if dp.world_size == 1:
        return
    if cfg.run.get("async_collect", "auto") is True:
        raise ValueError("run.async_collect=true is not supported under torchrun yet: every rank must collect the "
                         "same env steps per round (use run.async_collect=false or auto)")
    if cfg.run.collector == "ray":
        raise ValueError("run.collector=ray is not supported under torchrun: every rank would start its own Ray "
                         "workers; use one learner process with run.collector=ray, or torchrun with sync/multisync")
    if cfg.checkpoint.replay:
        raise ValueError("checkpoint.replay=true is not supported under torchrun yet (each rank's replay shard "
                         "would need saving); resume refills the replays instead")


_SPEED_HINT = ("Faster: size=debug, a smaller run.train_ratio, or a GPU; the paper's setting: size=size200m on a GPU.")


def start_run(cfg: DictConfig, env_fn: EnvFactory | None = None,
              behaviour_actor: TensorDictModuleBase | None = None) -> Run:
    """Validates ``cfg``, then builds env, agent, learner, replay, logger and collector, resuming if asked."""
    check_config(cfg)  # types and ranges of every setting; resume must hold a checkpoint; creates nothing
    validate_config(cfg)
    ctx = init_distributed(None if cfg.device == "auto" else cfg.device)  # no-op without torchrun
    dp = DataParallel(ctx)
    _check_distributed(cfg, dp)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = ctx.device if ctx.enabled else resolve_device(cfg.device)
    size, note = _describe_size(cfg, device)
    logdir = dp.from_main(_logdir(cfg))  # ${now:...} in logdir resolves per process: rank 0's wins
    if cfg.resume and (logdir / "config.yaml").is_file():  # before it is overwritten with this config
        check_resume_config(cfg, OmegaConf.load(logdir / "config.yaml"))
    if cfg.resume:
        check_resumed_model_size(size, read_info(cfg.resume)["meta"])
    lock = None
    if dp.is_main:
        logdir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(logdir).acquire()  # one process per run directory; the kernel drops it if the process dies
        OmegaConf.save(cfg, logdir / "config.yaml")
    dp.barrier()

    env, run = _build(cfg, logdir, lock, dp, size, device, env_factory(cfg, env_fn), behaviour_actor)
    # image observations (C, H, W), from the env spec: the encoder may be user-supplied
    spec = env.observation_spec
    run.image_keys = [k for k in model_observation_keys(env) if len(spec[k].shape) - len(env.batch_size) == 3]
    if cfg.resume:
        _resume(run, env)
    if dp.world_size > 1:
        dp.attach(run.learner)  # rank 0's state everywhere, gradient all-reduce before AGC, global percentiles
        torch.manual_seed(rank_seed(cfg.seed, dp.rank) + run.counters["updates"])  # imagination noise apart
    _start_prefill(run, env)
    if dp.is_main:
        _announce(run, size, note)
    # remote workers (run.collector=ray) get the weights after each training round: when the update count moved
    run.collector = make_collector(cfg, run.make_env, env, run.policy, device, version=lambda: run.counters["updates"])
    run.collection = _make_collection(run)
    run.progress = Progress(int(cfg.run.steps), run.counters, estimate_after=cfg.run.get("estimate_after", 60),
                            hint=_SPEED_HINT, disable=not dp.is_main)
    now = time.time()
    run.clock = dict(log=now, report=now, save=now, eval_step=run.env_steps)
    return run
