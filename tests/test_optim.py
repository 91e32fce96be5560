"""LaProp (SPEC §7): each stage against plain-torch hand computations."""
import io
import math

import pytest
import torch

from torchrl_dreamerv3.optim import LaProp, warmup_lr

HP = dict(lr=0.1, agc=0.3, pmin=1e-3, beta1=0.9, beta2=0.999, eps=1e-20, warmup=2, momentum=True)


def hand_step(theta, g, nu, mu, t, lr, agc, pmin, beta1, beta2, eps, warmup, momentum):
    """SPEC §7 written out for one tensor in float64; returns (theta, nu, mu, clipped)."""
    theta, g = theta.double(), g.double()
    scale = 1.0
    if agc:
        scale = max(1.0, (g.norm() / (agc * max(pmin, theta.norm().item()))).item())
        g = g / scale                                            # 1. AGC
    nu = beta2 * nu + (1 - beta2) * g * g                        # 2. RMS
    u = g / (torch.sqrt(nu / (1 - beta2**t)) + eps)
    if momentum:                                                 # 3. momentum
        mu = beta1 * mu + (1 - beta1) * u
        u = mu / (1 - beta1**t)
    c = t - 1                                                    # 4. lr schedule
    lr_c = lr * min(c, warmup) / warmup if warmup else lr
    return theta - lr_c * u, nu, mu, scale > 1


def run_both(groups, grads_per_step):
    """Run LaProp and the hand computation side by side; return per-step (ours, hand) params."""
    opt = LaProp([dict(g) for g in groups], **HP)  # missing group keys fall back to HP in both
    hand = [(p.detach().double().clone(), torch.zeros_like(p, dtype=torch.float64),
             torch.zeros_like(p, dtype=torch.float64), {**HP, **{k: v for k, v in grp.items() if k != "params"}})
            for grp in groups for p in grp["params"]]
    params = [p for grp in groups for p in grp["params"]]
    history, clipped = [], False
    for t, grads in enumerate(grads_per_step, start=1):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, (theta, nu, mu, hp) in enumerate(hand):
            theta, nu, mu, c = hand_step(theta, grads[i], nu, mu, t, **hp)
            hand[i] = (theta, nu, mu, hp)
            clipped |= c
        history.append(([p.detach().clone() for p in params], [h[0].clone() for h in hand]))
    return opt, history, clipped


def make_params(*shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]


def make_grads(params, steps, seed=1, big_every=2):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen) * (30.0 if t % big_every == 0 else 0.1) for p in params]
            for t in range(steps)]


def test_first_update_is_exactly_zero():
    params = make_params((4, 3), (5,))
    before = [p.detach().clone() for p in params]
    opt = LaProp(params)  # reference defaults, warmup 1000
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert all(opt.state[p]["nu"].abs().sum() > 0 for p in params)  # the moments did advance
    assert opt.param_groups[0]["step"] == 1 and opt.current_lr() == 0.0


def test_updates_match_hand_computation_on_several_tensors():
    params = make_params((4, 3), (5,), (2, 3, 2))
    grads = make_grads(params, steps=3)
    opt, history, clipped = run_both([dict(params=params, **HP)], grads)
    assert clipped  # AGC was active on at least one tensor and step
    prev = [p.detach().clone() for p in make_params((4, 3), (5,), (2, 3, 2))]
    for t, (ours, hand) in enumerate(history, start=1):
        for o, h, b in zip(ours, hand, prev):
            # compare the update itself (θ_t - θ_{t-1}), not only the slowly moving θ
            torch.testing.assert_close((o - b).double(), h - b.double(), rtol=1e-6, atol=1e-6)
        if t == 1:
            assert all(torch.equal(o, b) for o, b in zip(ours, prev))
        else:
            assert all((o - b).abs().max() > 1e-3 for o, b in zip(ours, prev))
        prev = ours


def test_several_param_groups_and_momentum_off():
    p1, p2 = make_params((3, 3), (7,), seed=2)
    p3, = make_params((2, 5), seed=3)
    groups = [dict(params=[p1, p2], lr=0.05, warmup=0, agc=0.3),
              dict(params=[p3], lr=0.2, warmup=3, agc=0.0, momentum=False)]
    grads = make_grads([p1, p2, p3], steps=4, seed=4)
    opt, history, _ = run_both(groups, grads)
    for ours, hand in history:
        for o, h in zip(ours, hand):
            torch.testing.assert_close(o.double(), h, rtol=1e-6, atol=1e-6)
    assert [g["step"] for g in opt.param_groups] == [4, 4]
    assert opt.current_lr(0) == 0.05 and opt.current_lr(1) == pytest.approx(0.2)
    assert not opt.state[p3]["mu"].any()  # momentum off: μ stays zero


@pytest.mark.parametrize("count,expected", [(0, 0.0), (1, 4.0e-8), (500, 2.0e-5), (999, 3.996e-5),
                                            (1000, 4.0e-5), (5000, 4.0e-5)])
def test_lr_schedule_matches_spec(count, expected):
    assert warmup_lr(4e-5, 1000, count) == pytest.approx(expected, rel=1e-12, abs=0)


def test_lr_schedule_through_optimizer():
    p, = make_params((2,))
    opt = LaProp([p])
    assert LaProp([p], warmup=0).current_lr() == 4e-5
    lrs = []
    for _ in range(3):
        p.grad = torch.ones(2)
        opt.step()
        lrs.append(opt.current_lr())
    assert lrs == pytest.approx([0.0, 4e-8, 8e-8], rel=1e-12, abs=0)


@pytest.mark.parametrize("theta,g,agc,expected_g", [
    ([3.0, 4.0], [30.0, 40.0], 0.3, [0.9, 1.2]),        # ||g||=50 > 0.3*5: scaled to norm 1.5
    ([3.0, 4.0], [0.3, 0.4], 0.3, [0.3, 0.4]),          # ||g||=0.5 < 1.5: untouched
    ([0.0, 0.0], [3.0, 4.0], 0.3, [1.8e-4, 2.4e-4]),    # zero param: pmin=1e-3 gives norm 3e-4
    ([3.0, 4.0], [30.0, 40.0], 0.0, [30.0, 40.0]),      # agc=0 disables clipping
])
def test_agc_hand_values(theta, g, agc, expected_g):
    p = torch.nn.Parameter(torch.tensor(theta))
    opt = LaProp([p], agc=agc)
    p.grad = torch.tensor(g)
    opt.step()
    # after one step ν = (1-β2) g_clipped², which exposes the clipped gradient
    torch.testing.assert_close(opt.state[p]["nu"], 1e-3 * torch.tensor(expected_g) ** 2, rtol=1e-5, atol=0)
    assert torch.equal(p.grad, torch.tensor(g))  # .grad itself is not modified
    torch.testing.assert_close(opt.last_grad_norm, torch.tensor(g).norm())  # logged before AGC


@pytest.mark.parametrize("momentum", [True, False])
def test_bias_correction_gives_unit_steps_for_constant_grad(momentum):
    # With a constant gradient, bias-corrected ν̂ = g² and μ̂ = sign(g) at every t, so each step
    # moves θ by exactly lr; without the corrections the first steps would be off by 1/(1-β^t).
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = LaProp([p], lr=0.1, warmup=0, agc=0.0, momentum=momentum)
    for t in range(1, 4):
        p.grad = torch.tensor([0.01, -3.0, 7.0])
        opt.step()
        torch.testing.assert_close(p.detach(), torch.tensor([1.0, -2.0, 0.5]) - 0.1 * t * torch.tensor([1.0, -1.0, 1.0]))
    assert opt.state[p]["step"] == 3


def test_state_dict_round_trip_mid_run():
    params_a = make_params((4, 3), (5,))
    grads = make_grads(params_a, steps=6, seed=5)
    opt_a = LaProp(params_a, lr=0.1, warmup=3)
    for grad in grads[:3]:
        for p, g in zip(params_a, grad):
            p.grad = g.clone()
        opt_a.step()
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)
    params_b = [torch.nn.Parameter(p.detach().clone()) for p in params_a]
    opt_b = LaProp(params_b)  # different defaults: the hyper-parameters come from the checkpoint
    buf.seek(0)
    opt_b.load_state_dict(torch.load(buf))
    assert opt_b.param_groups[0]["step"] == 3 and opt_b.param_groups[0]["lr"] == 0.1
    assert opt_b.state[params_b[0]]["step"] == 3
    for grad in grads[3:]:
        for pa, pb, g in zip(params_a, params_b, grad):
            pa.grad, pb.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
        for pa, pb in zip(params_a, params_b):
            assert torch.equal(pa, pb)
    assert all((pa - p0).abs().max() > 0 for pa, p0 in zip(params_a, make_params((4, 3), (5,))))


def test_params_without_grad_are_untouched():
    used, unused = make_params((3,), (2, 2))
    frozen, = make_params((4,), seed=9)
    opt = LaProp([dict(params=[used, unused]), dict(params=[frozen])], lr=0.1, warmup=0)
    before_unused, before_frozen = unused.detach().clone(), frozen.detach().clone()
    for _ in range(3):
        used.grad = torch.ones(3)
        opt.step()
    assert torch.equal(unused, before_unused) and torch.equal(frozen, before_frozen)
    assert unused not in opt.state and frozen not in opt.state
    assert [g["step"] for g in opt.param_groups] == [3, 0]  # a group with no grads does not count
    assert not torch.equal(used, torch.zeros(3))
    # a parameter that starts receiving grads later gets its own bias-correction count
    unused.grad = torch.full((2, 2), 5.0)
    opt.step()
    assert opt.state[unused]["step"] == 1 and opt.param_groups[0]["step"] == 4
    torch.testing.assert_close(unused.detach(), before_unused - 0.1)  # μ̂ = sign(g) at t = 1


def test_last_grad_norm_is_global_and_pre_agc():
    p1, p2 = make_params((3, 4), (6,))
    p3, = make_params((5,), seed=7)
    opt = LaProp([dict(params=[p1, p2]), dict(params=[p3], agc=0.0)])
    grads = [torch.randn(p.shape) * 100 for p in (p1, p2, p3)]
    for p, g in zip((p1, p2, p3), grads):
        p.grad = g
    opt.step()
    expected = math.sqrt(sum(g.double().square().sum().item() for g in grads))
    assert opt.last_grad_norm.shape == () and opt.last_grad_norm.item() == pytest.approx(expected, rel=1e-6)
