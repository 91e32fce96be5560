"""The training loop: collect with the acting policy, replay windows, train at the train ratio.

``train(cfg)`` is what ``examples/dreamerv3_atari.py`` runs; every env preset goes through it.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import torch
import tqdm
from omegaconf import DictConfig, OmegaConf
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp

from ..modules import DreamerV3Policy, PrefillActor
from .acceleration import Acceleration, accelerate
from .checkpoint import load_checkpoint, save_checkpoint
from .logging import MetricLogger, make_logger
from .ratio import TrainRatio
from .report import open_loop_report, read_returns_csv
from .setup import (
    REPLAY_KEYS,
    check_resume_config,
    make_agent,
    make_collector,
    make_learner,
    make_replay,
    make_train_env,
    observation_shapes,
    resolve_device,
    resolve_size,
    unbatched_action_spec,
    validate_config,
    with_primer,
)

__all__ = ["train"]


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes the current update, saves and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: leave now
            raise KeyboardInterrupt
        self.requested = True
        tqdm.tqdm.write(f"signal {signum}: finishing the current step, saving a checkpoint, then exiting")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _evaluate(cfg, agent, policy, episodes: int, mode: bool = False) -> list[float]:
    """Runs ``episodes`` episodes of the policy on a fresh env: sampled actions (DreamerV3's reference), or
    the distribution's mode (``mode=True``: DreamerV1 and V2, whose evaluation takes ``mode()``)."""
    from ..envs import make_env

    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.env, resolve=True).items() if v is not None}
    env = with_primer(make_env(kwargs.pop("name"), seed=cfg.seed + 10_000, **kwargs), agent)
    returns, td = [], env.reset()
    device = next(agent.parameters()).device
    exploration = ExplorationType.DETERMINISTIC if mode else ExplorationType.RANDOM
    while len(returns) < episodes:
        with set_exploration_type(exploration):
            td = policy(td.to(device)).to("cpu")
        td = env.step(td)
        if td["next", "is_last"].item():
            returns.append(td["next", "episode_reward"].item())
        td = step_mdp(td)
    env.close()
    return returns


def train(cfg: DictConfig, behaviour_actor: TensorDictModuleBase | None = None) -> dict:
    """Trains DreamerV3 as configured; returns the final counters. See ``configs/config.yaml``.

    ``behaviour_actor``: collect with this module instead of the agent's actor (it reads the posterior
    ``deter``/``stoch`` and writes ``action``; see :class:`~torchrl_dreamerv3.modules.DreamerV3Policy`).
    Everything is still trained as usual; evaluation uses the agent's own actor.
    """
    validate_config(cfg)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    size, note = resolve_size(cfg.model.size, device)
    generation = cfg.algo.generation if "algo" in cfg else "dreamerv3"
    if generation != "dreamerv3":  # one size per earlier generation; size presets only shrink it
        size = f"{generation} preset" + ("" if cfg.model.size == "auto" else f" with size={cfg.model.size}")
        note = None
    logdir = Path(cfg.resume).parent if cfg.resume and Path(cfg.resume).name == "checkpoint" else Path(cfg.resume or cfg.logdir)
    if cfg.resume and (logdir / "config.yaml").is_file():  # before it is overwritten with this config
        check_resume_config(cfg, OmegaConf.load(logdir / "config.yaml"))
    logdir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, logdir / "config.yaml")

    env = make_train_env(cfg)
    agent = make_agent(cfg, env, device)
    # image observations (C, H, W), from the env spec: the encoder may be user-supplied
    image_keys = [k for k, shape in observation_shapes(env).items() if len(shape) == 3]
    learner = make_learner(cfg, agent)
    expl_noise = cfg.algo.expl_noise if "algo" in cfg else 0.0
    # collection (V1: additive exploration noise)
    policy = DreamerV3Policy(agent, expl_noise=expl_noise, actor=behaviour_actor)
    eval_policy = DreamerV3Policy(agent)
    acceleration = accelerate(learner, Acceleration.from_config(cfg, device), policies=(policy, eval_policy))
    replay = make_replay(cfg, scratch_dir=str(logdir / "replay_memmap"))
    ratio = TrainRatio(cfg.run.train_ratio, cfg.batch_size, cfg.batch_length)
    counters = dict(env_steps=0, updates=0, episodes=0)
    if cfg.resume:
        counters.update(load_checkpoint(cfg.resume, learner=learner, ratio=ratio, replay=replay))
        if not counters.pop("replay_restored"):
            tqdm.tqdm.write("resumed without a saved replay buffer (checkpoint.replay=false): refilling it")
    # DreamerV1/V2: a random agent fills the replay first; training waits for it
    prefill = int(cfg.run.get("prefill", 0))
    if prefill > counters["env_steps"]:
        remaining = prefill - counters["env_steps"]
        per_copy = remaining if cfg.run.collector == "sync" else -(-remaining // cfg.run.envs)  # one copy per worker
        policy.actor = PrefillActor(policy.actor, unbatched_action_spec(env), per_copy, agent.keys.action)
        tqdm.tqdm.write(f"prefill: {remaining} env steps of a uniformly random agent before training (run.prefill)")
    logger = MetricLogger(make_logger(cfg.logger.backend, str(logdir), "dreamerv3",
                                      OmegaConf.to_container(cfg.logger.wandb) if "wandb" in cfg.logger else None),
                          run_dir=str(logdir))
    if cfg.resume and (logdir / "episodes.csv").is_file():
        logger.episode_returns = [(int(s), r) for s, r in zip(*read_returns_csv(logdir / "episodes.csv"))]
    counts = agent.parameter_counts()
    print(f"torchrl_dreamerv3: env={cfg.env.name} device={device} model={size} params={counts['total']:,} "
          f"({', '.join(f'{k} {v:,}' for k, v in counts.items() if k != 'total')}) logdir={logdir} "
          f"compute={acceleration.describe()}")
    if note:
        print(note)
    logger.log_hparams(OmegaConf.to_container(cfg, resolve=True))

    env = with_primer(env, agent) if cfg.run.collector == "sync" else env
    collector = make_collector(cfg, env, policy, device)
    min_fill = cfg.batch_size * cfg.batch_length
    bar = tqdm.tqdm(total=int(cfg.run.steps), initial=counters["env_steps"], unit="step", dynamic_ncols=True,
                    desc="env steps")
    last = dict(log=time.time(), report=time.time(), save=time.time(), eval_step=counters["env_steps"])
    rate = dict(t=time.time(), steps=counters["env_steps"], updates=counters["updates"])
    last_return, metrics = None, None
    with _StopRequest() as stop:
        for batch in collector:
            batch = batch if batch.batch_dims == 2 else batch.unsqueeze(0)  # (envs, time)
            finished = batch["is_last"].squeeze(-1)
            episodes = zip(batch["episode_reward"].squeeze(-1)[finished].tolist(),
                           batch["episode_length"].squeeze(-1)[finished].tolist())
            for value, length in episodes:
                counters["episodes"] += 1
                last_return = value
                logger.log_episode(counters["env_steps"], value, length)
            replay.extend(batch.select(*agent.obs_keys, *REPLAY_KEYS))
            counters["env_steps"] += batch.numel()
            bar.update(batch.numel())

            ready = len(replay) >= min_fill and len(replay) // cfg.run.envs > cfg.batch_length + 1
            if ready and counters["env_steps"] >= prefill:
                for _ in range(ratio(counters["env_steps"])):
                    window, info = replay.sample(return_info=True)
                    window = window.reshape(cfg.batch_size, -1).to(device)
                    metrics, latents = learner.update(window)
                    index = tuple(i.reshape(cfg.batch_size, -1)[:, 1:].reshape(-1) for i in info["index"])
                    # write back without moving the write cursor, which the sampler uses as the data end
                    replay.storage.set(index, latents.reshape(-1).to("cpu"), set_cursor=False)
                    counters["updates"] += 1
                    if stop.requested:
                        break

            now = time.time()
            if now - last["log"] >= cfg.run.log_every:
                elapsed = now - rate["t"]
                perf = {"fps": (counters["env_steps"] - rate["steps"]) / elapsed,
                        "ups": (counters["updates"] - rate["updates"]) / elapsed}
                logger.log_scalars(perf, counters["env_steps"], "perf")
                if metrics is not None:
                    logger.log_scalars(metrics, counters["env_steps"], "train")
                rate.update(t=now, steps=counters["env_steps"], updates=counters["updates"])
                last["log"] = now
                bar.set_postfix(updates=counters["updates"], sps=f"{perf['fps']:.0f}", ups=f"{perf['ups']:.2f}",
                                ret=None if last_return is None else f"{last_return:.1f}")
            if metrics is not None and now - last["report"] >= cfg.run.report_every:
                _report(agent, replay, cfg, logger, counters["env_steps"], device, image_keys)
                last["report"] = now
            if cfg.run.eval_every and counters["env_steps"] - last["eval_step"] >= cfg.run.eval_every:
                returns = _evaluate(cfg, agent, eval_policy, cfg.run.eval_eps, mode=generation != "dreamerv3")
                logger.log_scalars({"return": sum(returns) / len(returns)}, counters["env_steps"], "eval")
                last["eval_step"] = counters["env_steps"]
            done = counters["env_steps"] >= cfg.run.steps
            if stop.requested or done or now - last["save"] >= cfg.run.save_every:
                save_checkpoint(logdir / "checkpoint", learner=learner, counters=counters, ratio=ratio,
                                replay=replay if cfg.checkpoint.replay else None)
                logger.plot_returns(title=f"DreamerV3 {cfg.env.name}")
                last["save"] = now
            if stop.requested or done:
                break
    collector.shutdown()
    bar.close()
    if metrics is not None:
        logger.log_scalars(metrics, counters["env_steps"], "train")
    if metrics is not None and cfg.run.report_every >= 0:
        _report(agent, replay, cfg, logger, counters["env_steps"], device, image_keys)
    logger.close()
    print(f"stopped at {counters['env_steps']} env steps, {counters['updates']} updates, "
          f"{counters['episodes']} episodes; checkpoint in {logdir / 'checkpoint'}")
    return counters


def _report(agent, replay, cfg, logger, step, device, image_keys):
    """Open-loop prediction video (first half observed, second half imagined), as the reference reports."""
    if not image_keys:
        return
    window = replay.sample().reshape(cfg.batch_size, -1)[: min(4, cfg.batch_size)].to(device)
    video, scores = open_loop_report(agent, window)
    logger.log_scalars(scores, step, "report")
    logger.log_video("openloop", video, step)
