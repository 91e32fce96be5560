"""TorchRL's PPO (ClipPPOLoss + GAE) trained only inside a DreamerV3 world model of CartPole-v1.

    python examples/ppo_in_imagination.py                                # world model, PPO, Dyna round, evaluation
    python examples/ppo_in_imagination.py --checkpoint runs/ppo_wm       # reuse a trained world model (a run dir)
    python examples/ppo_in_imagination.py --refine-steps 0               # no Dyna round
    python examples/ppo_in_imagination.py --quick                        # seconds-long smoke run

1. World model: our training loop (``torchrl_dreamerv3.training.train``) on CartPole, small model,
   with ``checkpoint.replay=true`` so the replayed posterior latents can seed imagination.
2. PPO: a :class:`~torchrl_dreamerv3.envs.DreamerWorldModelEnv` of ``--envs`` imagined CartPoles,
   reset from replayed latents, cut by a ``StepCounter``, collected with TorchRL's ``Collector``;
   advantages from ``GAE``, updates from ``ClipPPOLoss``. The real env is never stepped by PPO.
3. Dyna round (``--refine-steps``): the PPO policy collects real data (through
   ``train(cfg, behaviour_actor=...)``), the world model continues its run on it, and PPO continues
   for ``--refine-iterations`` in the refined model. A world model learned from DreamerV3's data has
   rarely seen the cart leave the track, so before this round PPO's policy balances but drifts.
4. Evaluation: ``--eval-episodes`` real CartPole-v1 episodes; the PPO policy reads the posterior
   features that :class:`~torchrl_dreamerv3.envs.LatentFeatures` appends. The last line printed is
   ``mean_real_return: X``.

Measured results are in docs/composing_with_torchrl.md (1 thread: about 15 minutes end to end on a free core).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import GymEnv, StepCounter, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, OneHotCategorical, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from torchrl_dreamerv3.envs import DreamerWorldModelEnv, LatentFeatures, latent_features
from torchrl_dreamerv3.training import TrainRatio, train
from torchrl_dreamerv3.training.persistence.checkpoint import load_checkpoint, read_counters
from torchrl_dreamerv3.replay.buffer import make_replay
from torchrl_dreamerv3.training.collection.environment import env_factory, make_train_env
from torchrl_dreamerv3.training.plan import make_plan
from torchrl_dreamerv3.training.setup import make_agent, make_learner

CONFIGS = Path(__file__).resolve().parent.parent / "torchrl_dreamerv3" / "configs"


@dataclass
class Args:
    checkpoint: str = ""
    """a run directory of the world-model training to load (empty: train one into --logdir)"""
    logdir: str = "runs/ppo_wm"
    """where the world-model run goes when it is trained here"""
    quick: bool = False
    """seconds-long smoke run: tiny world model, two PPO iterations, short evaluation"""
    seed: int = 0
    """seed of torch (world model, imagination, PPO) and of the real evaluation env"""
    wm_steps: int = 12_000
    """env steps of the world-model training run"""
    envs: int = 256
    """imagined envs stepped in parallel"""
    rollout: int = 32
    """imagined steps per env per PPO iteration"""
    max_steps: int = 100
    """imagined episodes are truncated after this many steps (then reset from replayed latents)"""
    iterations: int = 60
    """PPO iterations (each collects envs * rollout imagined steps)"""
    epochs: int = 4
    """PPO epochs per iteration"""
    minibatch: int = 1024
    """PPO minibatch size"""
    lr: float = 3e-4
    """Adam learning rate of actor and critic"""
    gamma: float = 0.99
    """discount"""
    lmbda: float = 0.95
    """GAE lambda"""
    clip_epsilon: float = 0.2
    """the surrogate clipping coefficient"""
    entropy_coeff: float = 0.01
    """entropy bonus"""
    termination: str = "sample"
    """continue-head rule of the imagined env (threshold | sample | never); sampling keeps the head's soft
    risk signal (e.g. cont 0.97 near the track's ends), which a 0.5 threshold throws away"""
    eval_episodes: int = 10
    """real CartPole-v1 episodes of the final evaluation"""
    eval_every: int = 0
    """diagnostic only: a real 3-episode evaluation every N iterations (0: off); never used for training"""
    refine_steps: int = 4_000
    """Dyna round: real env steps collected by the PPO policy to continue the world model's training on (0: off),
    followed by --refine-iterations more PPO iterations in the refined model; the world model's run directory
    (--logdir or --checkpoint) is continued in place"""
    refine_iterations: int = 150
    """PPO iterations after the world model was refined on the PPO policy's own data: the refined model now
    predicts the track's ends, and the policy needs about 100 iterations to learn to keep away from them"""


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(Args):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default)
    args = Args(**vars(parser.parse_args()))
    if args.quick:
        args = dataclasses.replace(args, wm_steps=200, envs=8, rollout=8, max_steps=8, iterations=2, epochs=1,
                                   minibatch=32, eval_episodes=2, refine_steps=min(args.refine_steps, 100),
                                   refine_iterations=min(args.refine_iterations, 1))
        if args.logdir == Args.logdir:
            args.logdir += "_quick"
    return args


# ---------------------------------------------------------------- 1. world model (our pipeline)

def world_model_overrides(args: Args) -> list[str]:
    common = ["env=cartpole", f"seed={args.seed}", "threads=1", "checkpoint.replay=true", f"run.steps={args.wm_steps}",
              f"logdir={args.logdir}", "logger.backend=csv", "run.log_every=60"]
    if args.quick:
        return common + ["size=debug", "batch_size=2", "batch_length=8", "run.train_ratio=4", "replay.size=10000"]
    # A small model, ~2,200 updates (about 15 min on 2 shared CPU cores): a low train ratio and short windows,
    # a 7.5x higher learning rate than the reference, and a 10x continue-loss scale, because terminal steps are
    # rare (about 1 in 100) and imagination ends only where the continue head says so.
    return common + ["size=size1m", "model.deter=128", "model.hidden=64", "model.classes=8", "model.units=64",
                     "batch_size=16", "batch_length=16", "run.train_ratio=48", "opt.lr=3e-4", "opt.warmup=100",
                     "loss_scales.con=10", f"replay.size={max(args.wm_steps, 1000)}"]


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("config", overrides=overrides)


def train_world_model(args: Args) -> str:
    train(compose_config(world_model_overrides(args)))
    return args.logdir


def refine_world_model(args: Args, run: str, ppo_actor) -> None:
    """Continues the world model's training run for ``refine_steps`` env steps collected by the PPO policy.

    A world model learned from DreamerV3's own data has rarely seen the states a different policy drives
    into (here: the cart drifting off the track), so it cannot warn PPO about them. Letting PPO's policy
    collect, then training on that data, is the Dyna loop; PPO itself still trains only in imagination.
    """
    cfg = OmegaConf.load(Path(run) / "config.yaml")
    done = read_counters(run)["env_steps"]
    cfg.resume, cfg.run.steps = str(run), int(done + args.refine_steps)
    features = TensorDictModule(latent_features, in_keys=["deter", "stoch"], out_keys=["feature"])
    train(cfg, behaviour_actor=TensorDictSequential(features, ppo_actor))


def load_world_model(run: str):
    """The agent and its replayed posterior latents (``deter``/``stoch``) from a training run directory."""
    cfg = OmegaConf.load(Path(run) / "config.yaml")
    plan = make_plan(cfg, torch.device("cpu"))  # the run's settings, validated and resolved once
    env = make_train_env(env_factory(plan), cfg.run.envs, cfg.seed)
    agent = make_agent(plan, env)
    learner = make_learner(plan, agent)
    replay = make_replay(plan.replay)
    ratio = TrainRatio(cfg.run.train_ratio, cfg.batch_size, cfg.batch_length)
    loaded = load_checkpoint(run, learner=learner, ratio=ratio, replay=replay)
    starts = None
    if loaded["replay_restored"]:  # the stored posteriors of every stream
        rows = [m.storage[: len(m.storage)].select("deter", "stoch") for m in replay._rbs]
        starts = torch.cat(rows).clone()
    return agent.eval().requires_grad_(False), env, starts


# ---------------------------------------------------------------- 2. PPO in imagination (TorchRL's)

def make_ppo_agent(feature_dim: int, action_spec) -> tuple[ProbabilisticActor, ValueOperator]:
    net = MLP(in_features=feature_dim, out_features=action_spec.shape[-1], num_cells=[64, 64], activation_class=nn.Tanh)
    actor = ProbabilisticActor(TensorDictModule(net, in_keys=["feature"], out_keys=["logits"]), in_keys=["logits"],
                               distribution_class=OneHotCategorical, spec=action_spec, return_log_prob=True)
    value_net = MLP(in_features=feature_dim, out_features=1, num_cells=[64, 64], activation_class=nn.Tanh)
    return actor, ValueOperator(value_net, in_keys=["feature"])


def train_ppo(args: Args, imagined, actor, critic, real_eval, iterations: int) -> None:
    advantage = GAE(gamma=args.gamma, lmbda=args.lmbda, value_network=critic, average_gae=False)
    loss_fn = ClipPPOLoss(actor, critic, clip_epsilon=args.clip_epsilon, entropy_coeff=args.entropy_coeff,
                          critic_coeff=0.5, loss_critic_type="l2", normalize_advantage=True)
    optim = torch.optim.Adam(loss_fn.parameters(), lr=args.lr)
    frames = args.envs * args.rollout
    collector = Collector(imagined, actor, frames_per_batch=frames, total_frames=frames * iterations,
                          auto_register_policy_transforms=False)
    for it, batch in enumerate(collector):
        # ALGO LOGIC: GAE on the imagined (envs, rollout) batch, then epochs of clipped-surrogate minibatches
        with torch.no_grad():
            advantage(batch)
        flat = batch.reshape(-1)
        for _ in range(args.epochs):
            for index in torch.randperm(frames).split(args.minibatch):
                losses = loss_fn(flat[index])
                loss = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
                optim.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(loss_fn.parameters(), 0.5)
                optim.step()
        ends = batch["next", "done"].squeeze(-1)
        lengths = batch["next", "step_count"][ends].float()
        line = (f"ppo {it + 1}/{iterations}: imagined episodes {int(ends.sum())} "
                f"(terminated {int(batch['next', 'terminated'].sum())}), mean length {lengths.mean().item():.1f}, "
                f"reward {batch['next', 'reward'].mean().item():.3f}, entropy {losses['entropy'].item():.3f}")
        if args.eval_every and (it + 1) % args.eval_every == 0:
            line += f", real return (diagnostic) {sum(real_eval(3)) / 3:.1f}"
        print(line, flush=True)
    collector.shutdown()


# ---------------------------------------------------------------- 3. evaluation in the real CartPole

def make_real_eval(args: Args, agent, actor):
    env = TransformedEnv(GymEnv("CartPole-v1"), LatentFeatures(agent))
    env.set_seed(args.seed + 10_000)
    max_steps = 50 if args.quick else 500

    def evaluate(episodes: int) -> list[float]:
        returns = []
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            for _ in range(episodes):
                td = env.rollout(max_steps, actor)
                returns.append(td["next", "reward"].sum().item())
        return returns

    return evaluate


def imagination(args: Args, run: str):
    """The world model of ``run`` as a batched TorchRL env of imagined CartPoles, and the real-eval agent."""
    agent, real_stream, starts = load_world_model(run)
    imagined = DreamerWorldModelEnv(agent, real_stream, batch_size=[args.envs], termination=args.termination)
    imagined.set_start_states(starts)
    return agent, TransformedEnv(imagined, StepCounter(max_steps=args.max_steps)), starts


def main() -> None:
    args = parse_args()
    # TRY NOT TO MODIFY: seeding, one thread (the CPU is shared)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    start = time.time()
    run = args.checkpoint or train_world_model(args)
    wm_time = time.time() - start
    agent, imagined, starts = imagination(args, run)
    print(f"world model: {run} ({'loaded' if args.checkpoint else f'trained in {wm_time / 60:.1f} min'}), "
          f"{sum(p.numel() for p in agent.parameters()):,} parameters, "
          f"{0 if starts is None else len(starts):,} replayed start states")

    torch.manual_seed(args.seed)
    feature_dim = imagined.observation_spec["feature"].shape[-1]
    actor, critic = make_ppo_agent(feature_dim, imagined.action_spec[0])
    real_eval = make_real_eval(args, agent, actor)

    start = time.time()
    train_ppo(args, imagined, actor, critic, real_eval, args.iterations)
    ppo_time = time.time() - start
    refine_time = 0.0
    if args.refine_steps:
        # Dyna round: the PPO policy collects real data, the world model trains on it, PPO continues inside it.
        returns = real_eval(args.eval_episodes)
        print(f"before refinement: mean real return {sum(returns) / len(returns):.1f} "
              f"({[round(r) for r in returns]})", flush=True)
        start = time.time()
        refine_world_model(args, run, actor)
        agent, imagined, starts = imagination(args, run)
        real_eval = make_real_eval(args, agent, actor)
        refine_time = time.time() - start
        start = time.time()
        train_ppo(args, imagined, actor, critic, real_eval, args.refine_iterations)
        ppo_time += time.time() - start

    start = time.time()
    returns = real_eval(args.eval_episodes)
    print(f"real CartPole-v1 returns: {[round(r) for r in returns]}")
    print(f"time: world model {wm_time / 60:.1f} min{' (loading)' if args.checkpoint else ''}, "
          f"refinement {refine_time / 60:.1f} min, PPO {ppo_time / 60:.1f} min, "
          f"evaluation {(time.time() - start) / 60:.1f} min")
    print(f"mean_real_return: {sum(returns) / len(returns):.1f}")


if __name__ == "__main__":
    main()
