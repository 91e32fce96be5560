"""Code that runs inside the ranks spawned by ``test_distributed.py`` (importable by name in a spawned child)."""
from __future__ import annotations

import copy
import os
import socket
import warnings

import torch
import torch.multiprocessing as mp
from torchrl.data import OneHot
from torchrl.modules import OneHotCategorical

import torchrl_dreamerv3.rssm.latents as latents_mod
import torchrl_dreamerv3.rssm.rssm as rssm_mod
from torchrl_dreamerv3.functional.actor_dists import StraightThroughOneHot
from torchrl_dreamerv3.functional.distributions import unimix_probs
from torchrl_dreamerv3.modules import make_dreamerv3
from torchrl_dreamerv3.training import DreamerV3Learner
from torchrl_dreamerv3.training.compute.distributed import (
    DataParallel, GradSync, fingerprint, global_mean, init_distributed, shutdown_distributed,
)

from test_objectives import VEC, _window

B, T, UPDATES = 4, 4, 3
# eps 1e-6, not the reference 1e-20: with 1e-20 the RMS step of a gradient element that is only float32
# rounding noise has full size and a random sign, so no two float32 computations of one update agree.
OPT = dict(lr=1e-3, warmup=0, agc=0.05, eps=1e-6)


def spawn(fn, *args, world: int = 2) -> None:
    """Runs ``fn(ctx, *args)`` on ``world`` gloo ranks over loopback; a failing rank fails the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_entry, args=(world, port, fn, args), nprocs=world, join=True)


def _entry(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        fn(ctx, *args)
    finally:
        shutdown_distributed()


# ---------------------------------------------------------------- deterministic sampling

def _median_class(probs: torch.Tensor) -> torch.Tensor:
    """The class at CDF 0.41: away from the class edges of near-uniform 2, 3 or 4 classes (0.33, 0.5, ...),
    where a rounding difference between the two runs would flip the class."""
    cdf = probs.detach().cumsum(-1)
    index = torch.searchsorted(cdf, 0.41 * cdf[..., -1:], right=True)
    return torch.zeros_like(cdf).scatter_(-1, index, 1.0)


def _latent_median(logits, unimix=0.01, generator=None):
    probs = unimix_probs(logits, unimix)
    onehot = _median_class(probs)
    return onehot + (probs - probs.detach()) if probs.requires_grad else onehot


def _action_median(self, sample_shape=torch.Size()):
    return _median_class(self.probs)


def _action_median_st(self, sample_shape=torch.Size()):
    return _median_class(self.probs) + (self.probs - self.probs.detach())


def deterministic_sampling(set_attr=setattr) -> None:
    """Latent and action samples become a fixed quantile's class: one rank with B and two with B/2 draw the same.

    (Random draws depend on how many rows share a generator, so a batch split would change them.)
    ``set_attr``: e.g. pytest's ``monkeypatch.setattr``, which undoes the patch after the test.
    """
    set_attr(rssm_mod, "sample_unimix_onehot", _latent_median)
    set_attr(latents_mod, "sample_unimix_onehot", _latent_median)
    for cls in {StraightThroughOneHot, OneHotCategorical}:
        set_attr(cls, "sample", _action_median)
        set_attr(cls, "rsample", _action_median_st)


def make_learner(seed: int = 0) -> DreamerV3Learner:
    torch.manual_seed(seed)
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    return DreamerV3Learner(agent, opt_kwargs=OPT)


def windows(seeds=range(UPDATES)):
    agent = make_dreamerv3(VEC, OneHot(3), "debug")
    return [_window(agent, VEC, B=B, T=T, seed=s) for s in seeds]


def recorded_update(learner, window, record):
    """``learner.update`` that stores the gradients the optimiser sees (after the sync, before AGC)."""
    params = list(learner.modules_.parameters())
    handle = learner.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: record.append([None if p.grad is None else p.grad.clone() for p in params]))
    try:
        return learner.update(window)
    finally:
        handle.remove()


def snapshot(learner) -> dict:
    norm = learner.actor_loss.normalizer
    # deep copies: state dicts hold the live tensors, which the next update changes in place
    return dict(learner=copy.deepcopy(learner.state_dict()), optimizer=copy.deepcopy(learner.optimizer.state_dict()),
                params=[p.detach().clone() for p in learner.modules_.parameters()], lo=norm.lo.clone(), hi=norm.hi.clone())


def single_process_update(before: dict, window) -> tuple[dict, list, torch.Tensor]:
    """The reference: one process, the whole batch, from the state ``before`` (a :func:`snapshot`)."""
    learner = make_learner()
    learner.load_state_dict(before["learner"])
    learner.optimizer.load_state_dict(before["optimizer"])
    grads = []
    metrics, _ = recorded_update(learner, window, grads)
    return snapshot(learner), grads[0], metrics["loss"]


# ---------------------------------------------------------------- rank bodies

def equivalence_rank(ctx, out_dir):
    """Half the batch per rank; the state before and after every update, the synced gradients, the mean loss."""
    deterministic_sampling()
    dp = DataParallel(ctx)
    learner = dp.attach(make_learner())
    shard = slice(ctx.rank * B // 2, (ctx.rank + 1) * B // 2)
    record = []
    for window in windows():
        before, grads = snapshot(learner), []
        metrics, _ = recorded_update(learner, window[shard].clone(), grads)
        loss = dp.mean_metrics(metrics.select("loss"))["loss"]
        record.append(dict(before=before, after=snapshot(learner), grads=grads[0], loss=loss))
    torch.save(record, os.path.join(out_dir, f"rank{ctx.rank}.pt"))


def sync_rank(ctx, out_dir):
    """Different init and different data per rank; attach must make and keep the state identical."""
    dp = DataParallel(ctx)
    learner = dp.attach(make_learner(seed=ctx.rank))
    initial = fingerprint(learner)
    unsynced = make_learner(seed=0)  # same init on every rank, no data parallelism: a control
    local = []
    for k in range(UPDATES):
        window = windows([k if ctx.rank == 0 else 100 + k])[0]
        torch.manual_seed(1000 * ctx.rank + k)  # different imagination noise per rank, as in training
        metrics, _ = learner.update(window.clone())
        unsynced.update(window.clone())
        local.append(metrics["loss"])
    seen = [None] * ctx.world_size
    torch.distributed.all_gather_object(seen, dict(
        state=fingerprint(learner), optimizer=fingerprint(learner.optimizer.state_dict()),
        normalizer=fingerprint(learner.actor_loss.normalizer), slow=fingerprint(learner.value_loss.target_critic_network_params),
        initial=initial, moved=fingerprint(learner) != initial, loss=local[-1].item(),
        unsynced=fingerprint(unsynced)))
    flags = dict(any=dp.any(ctx.rank == 1), all=dp.all(ctx.rank == 1), steps=dp.global_sum(10 + ctx.rank))
    torch.save(dict(seen=seen, flags=flags), os.path.join(out_dir, f"rank{ctx.rank}.pt"))


def global_mean_rank(ctx, out_dir):
    """``max(global_mean(w * x), free)`` per rank + GradSync vs the clamp of the local shard mean."""
    x = torch.tensor([3.0, 0.2, 0.1, 0.3, 0.4, 0.5], dtype=torch.float64).reshape(2, 3)[ctx.rank]
    w = torch.nn.Parameter(torch.ones((), dtype=torch.float64))  # shard means 1.1 and 0.4, global 0.75
    results = {}
    for name, mean in (("global", global_mean), ("local", lambda v: v.mean())):
        w.grad = None
        loss = torch.clamp_min(mean(w * x), 0.6)
        loss.backward()
        GradSync([w])()
        results[name] = (loss.detach(), w.grad.clone())
    torch.save(results, os.path.join(out_dir, f"rank{ctx.rank}.pt"))


def adam3_rank(ctx, out_dir):
    """DreamerV1's three Adams (per-group backward, per-group clip) through the learner's grad_sync hook."""
    from test_generations_losses import V1_LOSSES, _learner
    agent, learner = _learner("dreamerv1", OneHot(3), loss_kwargs=V1_LOSSES)
    torch.manual_seed(ctx.rank)
    for p in agent.parameters():  # different init per rank: attach must replace it by rank 0's
        p.data.add_(torch.randn_like(p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DataParallel(ctx).attach(learner)
    for k in range(2):
        learner.update(_window(agent, VEC, B=2, T=4, seed=10 * ctx.rank + k))
    return dict(hooked=learner.grad_sync is not None, in_sync=DataParallel(ctx).in_sync(learner),
                warned=any("free_avg=True" in str(w.message) for w in caught))


def mismatch_rank(ctx, out_dir):
    """Rank 1 leaves one parameter without a gradient: both ranks must raise instead of pairing wrong buckets."""
    global_mean_rank(ctx, out_dir)  # these share one spawn (process start-up is most of a spawned test's time)
    torch.save(adam3_rank(ctx, out_dir), os.path.join(out_dir, f"adam3_rank{ctx.rank}.pt"))
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    a.grad = torch.ones(3)
    b.grad = torch.ones(2) if ctx.rank == 0 else None
    try:
        GradSync([a, b])()
    except RuntimeError as err:
        open(os.path.join(out_dir, f"rank{ctx.rank}.txt"), "w").write(str(err))
