"""Data parallelism (training/compute/distributed.py): 2 gloo ranks on the CPU against one process.

Each spawned test starts two fresh Python processes (a few seconds of imports each).
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchrl_dreamerv3.training.persistence.checkpoint import resolve_checkpoint_dir
import torch.distributed as dist
from tensordict import TensorDict

import dist_workers as W
from torchrl_dreamerv3.objectives.actor_loss import ReturnNormalizer
from torchrl_dreamerv3.training.compute.distributed import (
    DataParallel, GatheredReturnNormalizer, GradSync, all_gather_flat, global_mean, init_distributed, rank_seed,
)

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _load(tmp_path, world=2, ext="pt"):
    return [torch.load(tmp_path / f"rank{r}.{ext}", weights_only=False) if ext == "pt"
            else (tmp_path / f"rank{r}.{ext}").read_text() for r in range(world)]


def test_two_ranks_with_half_batches_make_the_single_process_update(tmp_path, monkeypatch):
    """Each of 3 updates, from the ranks' state before it: the mean loss, the synced gradients (what AGC
    sees), and after AGC + LaProp the parameters, the moments and the return normaliser."""
    W.spawn(W.equivalence_rank, str(tmp_path))
    ranks = _load(tmp_path)
    W.deterministic_sampling(monkeypatch.setattr)
    windows = W.windows()
    close = dict(rtol=1e-4, atol=1e-6)
    clipped = 0
    for k, window in enumerate(windows):
        ref, ref_grads, ref_loss = W.single_process_update(ranks[0][k]["before"], window)
        # float32 rounding, relative to the largest gradient (some tensors' gradients are ~1e-7 of it)
        grad_atol = 1e-6 * max(g.abs().max().item() for g in ref_grads if g is not None)
        for rank in ranks:
            step = rank[k]
            torch.testing.assert_close(step["loss"], ref_loss, **close)
            for g, g_ref in zip(step["grads"], ref_grads):
                assert (g is None) == (g_ref is None)
                if g is not None:
                    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=grad_atol)
            # The step: LaProp's RMS scaling gives tiny gradient elements (float32 noise in relative terms)
            # a full-size step, so a few elements may differ by a fraction of lr = 1e-3, the total much less.
            diff = torch.cat([(p - q).abs().reshape(-1) for p, q in zip(step["after"]["params"], ref["params"])])
            moved = torch.cat([(q - p).abs().reshape(-1) for p, q in zip(step["before"]["params"], ref["params"])])
            assert diff.max() < 1e-4 and diff.sum() < 1e-3 * moved.sum(), (k, diff.max(), diff.sum() / moved.sum())
            torch.testing.assert_close(step["after"]["lo"], ref["lo"], **close)
            torch.testing.assert_close(step["after"]["hi"], ref["hi"], **close)
            for s, s_ref in zip(step["after"]["optimizer"]["state"].values(), ref["optimizer"]["state"].values()):
                assert s["step"] == s_ref["step"] == k + 1
                torch.testing.assert_close(s["nu"], s_ref["nu"], rtol=1e-3, atol=1e-12)
        params = ranks[0][k]["before"]["params"]
        clipped += sum(bool(g.norm() > W.OPT["agc"] * max(1e-3, p.norm())) for g, p in zip(ref_grads, params) if g is not None)
    assert ref["hi"] - ref["lo"] > 0, "the return normaliser must have left its initial (0, 0)"
    assert clipped > 0, "AGC must have clipped some tensors, or the test cannot tell AGC before/after the sync"


def test_ranks_stay_bitwise_equal_on_different_data(tmp_path):
    W.spawn(W.sync_rank, str(tmp_path))
    ranks = _load(tmp_path)
    a, b = ranks[0]["seen"]  # rank 0's gather of both ranks' fingerprints
    assert a["initial"] == b["initial"], "attach must broadcast rank 0's initial state (the ranks were seeded apart)"
    for key in ("state", "optimizer", "normalizer", "slow"):
        assert a[key] == b[key], f"{key} differs between the ranks"
    assert a["moved"] and b["moved"]
    assert a["loss"] != b["loss"], "the ranks must have trained on different data"
    assert a["unsynced"] != b["unsynced"], "control: without attach the same init drifts apart on different data"
    # the loop's agreements: a stop request or a not-ready shard on one rank holds for all; global env steps
    for rank in ranks:
        assert rank["flags"] == dict(any=True, all=False, steps=21)


def test_global_mean_grad_sync_checks_and_the_three_adams(tmp_path):
    """V1/V2's free nats clamp the batch mean: per rank the clamp must see the global mean. And GradSync
    refuses ranks whose gradient sets differ instead of pairing up the wrong buckets."""
    W.spawn(W.mismatch_rank, str(tmp_path))
    for message in _load(tmp_path, ext="txt"):
        assert "different parameters" in message
    # DreamerV1 (three Adams, per-group backward and clip) syncs through the learner's hook and stays bitwise
    # equal; its free nats on the batch mean are reported
    for r in range(2):
        assert torch.load(tmp_path / f"adam3_rank{r}.pt") == dict(hooked=True, in_sync=True, warned=True)
    w = torch.ones((), dtype=torch.float64, requires_grad=True)
    x = torch.tensor([3.0, 0.2, 0.1, 0.3, 0.4, 0.5], dtype=torch.float64)
    torch.clamp_min((w * x).mean(), 0.6).backward()  # global mean 0.75 > 0.6: d/dw = 0.75
    for rank in _load(tmp_path):
        loss, grad = rank["global"]
        torch.testing.assert_close(loss, torch.tensor(0.75, dtype=torch.float64))
        torch.testing.assert_close(grad, w.grad)
        # the per-rank clamp is wrong: rank 1's shard mean 0.4 < 0.6 is clamped, so its half is lost: 0.55
        torch.testing.assert_close(rank["local"][1], torch.tensor(0.55, dtype=torch.float64))


# ---------------------------------------------------------------- single process (no spawn)

def test_single_process_is_a_no_op(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert not dist.is_initialized()
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, 2.0])
    GradSync([p])()
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0]))
    dp = DataParallel(ctx)
    metrics = TensorDict({"loss": torch.tensor(1.5)}, [])
    assert dp.mean_metrics(metrics) is metrics and dp.global_sum(7) == 7 and dp.any(True) and dp.in_sync(p)
    x = torch.arange(4.0, requires_grad=True)
    assert global_mean(x).item() == 1.5 and torch.equal(all_gather_flat(x.reshape(2, 2)), x.detach())


def test_init_distributed_names_bad_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        init_distributed("cpu")


def test_rank_seeds_are_apart_and_rank_zero_keeps_the_seed():
    seeds = [rank_seed(5, r) for r in range(8)]
    assert seeds[0] == 5 and len(set(seeds)) == 8
    # each rank's run.envs seeds (seed + i) and the eval env (seed + 10_000) do not meet another rank's
    assert min(b - a for a, b in zip(seeds, seeds[1:])) > 10_000 + 64


def test_gathered_normalizer_shares_the_state_dict_of_the_plain_one():
    plain = ReturnNormalizer()
    plain.update(torch.linspace(-3, 7, 101))
    expected = ReturnNormalizer()
    expected.load_state_dict(plain.state_dict())
    gathered = GatheredReturnNormalizer(plain, gather=lambda x: torch.cat([x, x + 10]))
    assert gathered.state_dict().keys() == plain.state_dict().keys()
    assert torch.equal(gathered.lo, plain.lo)
    gathered.update(torch.zeros(10))  # percentiles of the gathered [0]*10 + [10]*10: 0 and 10
    expected.update(torch.cat([torch.zeros(10), torch.full((10,), 10.0)]))
    assert torch.equal(gathered.lo, expected.lo) and torch.equal(gathered.hi, expected.hi)


# ---------------------------------------------------------------- torchrun

def _torchrun(directory, *extra, start_new_session=False):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).with_name("dist_loop.py")), "--dir", str(directory), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=start_new_session)


@pytest.mark.slow
def test_sigint_under_torchrun_stops_every_rank_at_one_update_and_resume_continues(tmp_path):
    """A terminal's Ctrl-C (SIGINT to torchrun's process group): torchrun runs each worker in a session of its
    own and forwards the signal once. Every rank must stop at the same update, rank 0 must save, and a resumed
    run must continue the update counter with the ranks in sync."""
    run = _torchrun(tmp_path, "--max-updates", "100000", start_new_session=True)
    deadline = time.monotonic() + 180
    while not (tmp_path / "ready").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out = run.communicate(timeout=120)[0]
    stops = re.findall(r"rank (\d) stopped at (\d+) updates, in_sync=(\w+)", out)
    assert len(stops) == 2, out
    assert len({n for _, n, _ in stops}) == 1 and all(s == "True" for _, _, s in stops), out
    assert out.count("got 1 signal(s)") == 2, out  # one SIGINT per worker: a plain "second signal = leave now" is safe
    stopped = int(stops[0][1])
    saved = torch.load(resolve_checkpoint_dir(tmp_path) / "state.pt", weights_only=False)
    assert saved["counters"]["updates"] == stopped >= 3

    resumed = _torchrun(tmp_path, "--max-updates", str(stopped + 2), "--resume")
    out = resumed.communicate(timeout=180)[0]
    assert resumed.returncode == 0, out
    assert out.count(f"started at {stopped} updates, step {stopped}") == 2, out  # both ranks restored
    assert sorted(re.findall(r"rank (\d) stopped at (\d+) updates, in_sync=(\w+)", out)) == [
        ("0", str(stopped + 2), "True"), ("1", str(stopped + 2), "True")], out
    assert torch.load(resolve_checkpoint_dir(tmp_path) / "state.pt", weights_only=False)["optimizer"]["param_groups"][0]["step"] == stopped + 2
