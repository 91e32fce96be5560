"""DreamerV1/V2 pure math and cells against the hand-computed values of SPEC_V1_V2 §9."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from torchrl_dreamerv3.functional import binary_nll, categorical_kl, dyn_rep_kl, imagination_return, unimix_log_probs
from torchrl_dreamerv3.functional import gaussian as G
from torchrl_dreamerv3.functional import kl_balance as KB
from torchrl_dreamerv3.functional import returns_v1v2 as R
from torchrl_dreamerv3.nets.cells import GRUCell, LayerNormGRUCell

TOL = dict(rtol=1e-5, atol=1e-5)


def _t(values, grad: bool = False):
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


# ---------------------------------------------------------------- §9.1 Gaussian KL, free nats


def test_gaussian_kl_reference_value():
    q_mean, q_std = _t([0.5, -1.0]), _t([1.0, 0.5])
    p_mean, p_std = _t([0.0, 0.0]), _t([1.0, 1.0])
    per_dim = G.gaussian_kl(q_mean[:, None], q_std[:, None], p_mean[:, None], p_std[:, None])
    torch.testing.assert_close(per_dim, _t([0.125, 0.818147]), **TOL)
    torch.testing.assert_close(G.gaussian_kl(q_mean, q_std, p_mean, p_std), _t(0.943147), **TOL)
    # Same as torch.distributions
    dist = torch.distributions
    ref = dist.kl_divergence(dist.Normal(q_mean, q_std), dist.Normal(p_mean, p_std)).sum()
    torch.testing.assert_close(G.gaussian_kl(q_mean, q_std, p_mean, p_std), ref, **TOL)


def test_v1_free_nats_after_batch_mean():
    kl = _t([0.943147, 4.0], grad=True)
    torch.testing.assert_close(kl.mean(), _t(2.471574), **TOL)
    loss = KB.joint_kl_loss(kl, free=3.0)  # V1: max(mean, 3)
    torch.testing.assert_close(loss, _t(3.0), **TOL)
    loss.backward()
    assert torch.equal(kl.grad, torch.zeros(2))  # below the floor: no gradient at all
    # TorchRL's default (clamp per sample, then mean) gives 3.5 and keeps the gradient of the 4.0 sample
    kl2 = _t([0.943147, 4.0], grad=True)
    per_elem = KB.free_nats_clamp(kl2, 3.0, free_avg=False)
    torch.testing.assert_close(per_elem, _t(3.5), **TOL)
    per_elem.backward()
    torch.testing.assert_close(kl2.grad, _t([0.0, 0.5]))


def test_v1_kl_loss_gaussian_both_gradients():
    q_mean, q_std = _t([[0.5, -1.0], [3.0, 1.0]], True), _t([[1.0, 0.5], [0.3, 2.0]], True)
    p_mean, p_std = _t([[0.0, 0.0], [0.0, 0.0]], True), _t([[1.0, 1.0], [1.0, 1.0]], True)
    loss, kl = G.v1_kl_loss(q_mean, q_std, p_mean, p_std, free_nats=3.0)
    assert kl.shape == (2,) and loss.shape == ()
    assert kl.mean() > 3.0
    torch.testing.assert_close(loss, kl.mean())
    loss.backward()
    for x in (q_mean, q_std, p_mean, p_std):  # no stop-gradient in V1
        assert x.grad.abs().sum() > 0
    # below the floor: exact zero
    loss, _ = G.v1_kl_loss(q_mean[:1], q_std[:1], p_mean[:1], p_std[:1], free_nats=3.0)
    torch.testing.assert_close(loss, _t(3.0))
    (grad,) = torch.autograd.grad(loss, q_mean)
    assert torch.equal(grad, torch.zeros_like(q_mean))


def test_gaussian_rsample_reparameterised():
    mean, std = torch.zeros(4000, 3, requires_grad=True), torch.full((4000, 3), 2.0, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    x = G.gaussian_rsample(mean + 1.0, std, generator=gen)
    assert x.shape == (4000, 3)
    assert abs(x.mean().item() - 1.0) < 0.1 and abs(x.std().item() - 2.0) < 0.1
    x.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones(4000, 3))
    assert std.grad.abs().sum() > 0


def test_gaussian_stats_split_order():
    x = _t([[1.0, 2.0, 0.0, 0.0]])
    mean, std = G.gaussian_stats(x)
    torch.testing.assert_close(mean, _t([[1.0, 2.0]]))
    torch.testing.assert_close(std, _t([[0.793147, 0.793147]]), **TOL)
    with pytest.raises(ValueError):
        G.gaussian_stats(_t([[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError):
        G.gaussian_std(x, act="exp")


# ---------------------------------------------------------------- §9.2 V2 KL balancing


POST = [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]
PRIOR = [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
GRAD_PRIOR = [[-0.265526, 0.070884, 0.194642], [0.362922, -0.181461, -0.181461]]
GRAD_POST = [[0.056517, -0.028154, -0.028363], [-0.088889, 0.044444, 0.044444]]


def test_categorical_probs_and_kl_reference_values():
    q, p = torch.softmax(_t(POST), -1), torch.softmax(_t(PRIOR), -1)
    torch.testing.assert_close(q, _t([[0.665241, 0.244728, 0.090031], [1 / 3, 1 / 3, 1 / 3]]), **TOL)
    torch.testing.assert_close(p, _t([[1 / 3, 1 / 3, 1 / 3], [0.786986, 0.106507, 0.106507]]), **TOL)
    per_var = categorical_kl(torch.log_softmax(_t(POST), -1)[:, None], torch.log_softmax(_t(PRIOR), -1)[:, None])
    torch.testing.assert_close(per_var, _t([0.266217, 0.474266]), **TOL)


@pytest.mark.parametrize("balance", [0.8, 0.3, 0.5])
def test_balanced_kl_value_is_kl_for_any_alpha(balance):
    loss, kl = KB.balanced_categorical_kl(_t(POST), _t(PRIOR), balance=balance)
    torch.testing.assert_close(loss, _t(0.740483), **TOL)
    torch.testing.assert_close(kl, _t(0.740483), **TOL)


def test_balanced_kl_gradients_reference_values():
    post, prior = _t(POST, True), _t(PRIOR, True)
    loss, _ = KB.balanced_categorical_kl(post, prior, balance=0.8, free=0.0)
    loss.backward()
    torch.testing.assert_close(prior.grad, _t(GRAD_PRIOR), **TOL)
    torch.testing.assert_close(post.grad, _t(GRAD_POST), **TOL)
    # closed forms: prior gets alpha (p - q); posterior gets (1 - alpha) q (log q - log p - KL_var)
    q, p = torch.softmax(_t(POST), -1), torch.softmax(_t(PRIOR), -1)
    kl_var = (q * (q.log() - p.log())).sum(-1, keepdim=True)
    torch.testing.assert_close(prior.grad, 0.8 * (p - q), **TOL)
    torch.testing.assert_close(post.grad, 0.2 * q * (q.log() - p.log() - kl_var), **TOL)


@pytest.mark.parametrize("alpha", [0.8, 0.3, 0.95])
def test_balanced_kl_stop_gradient_structure(alpha):
    """Each side gets exactly its share of the plain-KL gradient."""
    post, prior = _t(POST, True), _t(PRIOR, True)
    plain = categorical_kl(torch.log_softmax(post, -1), torch.log_softmax(prior, -1))
    g_post, g_prior = torch.autograd.grad(plain, (post, prior))
    post.grad = prior.grad = None
    loss, _ = KB.balanced_categorical_kl(post, prior, balance=alpha)
    loss.backward()
    torch.testing.assert_close(prior.grad, alpha * g_prior, **TOL)
    torch.testing.assert_close(post.grad, (1 - alpha) * g_post, **TOL)
    # forward=True: KL(prior || post) with the prior still getting alpha
    post.grad = prior.grad = None
    rev = categorical_kl(torch.log_softmax(prior, -1), torch.log_softmax(post, -1))
    r_post, r_prior = torch.autograd.grad(rev, (post, prior))
    loss, _ = KB.balanced_categorical_kl(post, prior, balance=alpha, forward=True)
    loss.backward()
    torch.testing.assert_close(loss, rev.detach(), **TOL)
    torch.testing.assert_close(prior.grad, alpha * r_prior, **TOL)
    torch.testing.assert_close(post.grad, (1 - alpha) * r_post, **TOL)


def test_balanced_kl_free_nats_after_mean_kills_gradients():
    post, prior = _t(POST, True), _t(PRIOR, True)
    loss, kl = KB.balanced_categorical_kl(post, prior, balance=0.8, free=1.0, free_avg=True)
    torch.testing.assert_close(loss, _t(1.0))
    loss.backward()
    assert torch.equal(post.grad, torch.zeros(2, 3)) and torch.equal(prior.grad, torch.zeros(2, 3))


def test_balanced_kl_free_nats_each_side_over_batch():
    # batch of two steps with KL 0.740483 and a larger one: the mean (over B, T) decides, per side
    post = torch.stack([_t(POST), _t([[4.0, -2.0, 0.0], [0.0, 3.0, 0.0]])]).requires_grad_()
    prior = torch.stack([_t(PRIOR), _t(PRIOR)]).requires_grad_()
    loss, kl = KB.balanced_categorical_kl(post, prior, balance=0.8, free=1.0)
    assert kl.shape == (2,) and kl.mean() > 1.0 and kl[0] < 1.0
    torch.testing.assert_close(loss, kl.mean())
    loss.backward()
    assert post.grad[0].abs().sum() > 0  # the low-KL step still gets gradient (clamp on the mean)
    # per element (free_avg=False): the low-KL step drops out
    post.grad = prior.grad = None
    loss, _ = KB.balanced_categorical_kl(post, prior, balance=0.8, free=1.0, free_avg=False)
    torch.testing.assert_close(loss, (kl[1] + 1.0) / 2)
    loss.backward()
    assert post.grad[0].abs().sum() == 0 and prior.grad[0].abs().sum() == 0
    assert post.grad[1].abs().sum() > 0


def test_balance_half_is_plain_kl_with_per_element_clamp():
    post = torch.stack([_t(POST), _t([[4.0, -2.0, 0.0], [0.0, 3.0, 0.0]])]).requires_grad_()
    prior = torch.stack([_t(PRIOR), _t(PRIOR)]).requires_grad_()
    loss, kl = KB.balanced_categorical_kl(post, prior, balance=0.5, free=1.0, free_avg=True)
    torch.testing.assert_close(loss, (kl[1] + 1.0) / 2)  # per element even though free_avg=True
    plain = categorical_kl(torch.log_softmax(post, -1), torch.log_softmax(prior, -1))[1] / 2
    g_post, g_prior = torch.autograd.grad(plain, (post, prior), retain_graph=True)
    loss.backward()
    torch.testing.assert_close(post.grad, g_post)  # both sides, full gradient
    torch.testing.assert_close(prior.grad, g_prior)


def test_v3_unimix_same_logits():
    post, prior = _t(POST)[None], _t(PRIOR)[None]
    kl = categorical_kl(unimix_log_probs(post, 0.01), unimix_log_probs(prior, 0.01))
    torch.testing.assert_close(kl, _t([0.722651]), **TOL)
    dyn, rep = dyn_rep_kl(post, prior, unimix=0.01, free_nats=1.0)
    torch.testing.assert_close(dyn, _t([1.0]))
    torch.testing.assert_close(rep, _t([1.0]))


def test_effective_kl_weights():
    assert KB.balance_to_dyn_rep(0.8, 0.1) == pytest.approx((0.08, 0.02))
    assert KB.balance_to_dyn_rep(0.8, 1.0) == pytest.approx((0.8, 0.2))
    alpha, beta = KB.dyn_rep_to_balance(1.0, 0.1)
    assert alpha == pytest.approx(0.909091, abs=1e-6) and beta == pytest.approx(1.1)


def test_balanced_gaussian_kl_gradients():
    pm, ps = _t([[0.3, -0.2]], True), _t([[0.8, 1.5]], True)
    qm, qs = _t([[0.5, -1.0]], True), _t([[1.0, 0.5]], True)
    plain = G.gaussian_kl(qm, qs, pm, ps).sum()
    grads = torch.autograd.grad(plain, (qm, qs, pm, ps))
    loss, kl = KB.balanced_gaussian_kl(qm, qs, pm, ps, balance=0.8)
    torch.testing.assert_close(loss, plain.detach())
    loss.backward()
    for x, g, share in zip((qm, qs, pm, ps), grads, (0.2, 0.2, 0.8, 0.8)):
        torch.testing.assert_close(x.grad, share * g, **TOL)
    # §9.1 numbers through the balanced path
    loss, kl = KB.balanced_gaussian_kl(_t([0.5, -1.0]), _t([1.0, 0.5]), _t([0.0, 0.0]), _t([1.0, 1.0]))
    torch.testing.assert_close(kl, _t(0.943147), **TOL)


def test_kl_shapes_over_batch_and_time():
    B, T, S, C = 3, 5, 4, 6
    loss, kl = KB.balanced_categorical_kl(torch.randn(B, T, S, C), torch.randn(B, T, S, C), free=1.0)
    assert loss.shape == () and kl.shape == (B, T) and (kl >= 0).all()
    loss, kl = KB.balanced_gaussian_kl(torch.randn(B, T, S), torch.rand(B, T, S) + 0.1,
                                       torch.randn(B, T, S), torch.rand(B, T, S) + 0.1)
    assert loss.shape == () and kl.shape == (B, T) and (kl >= 0).all()
    loss, kl = G.v1_kl_loss(torch.randn(B, T, S), torch.rand(B, T, S) + 0.1,
                            torch.randn(B, T, S), torch.rand(B, T, S) + 0.1)
    assert loss.shape == () and kl.shape == (B, T)
    loss, kl = KB.balanced_categorical_kl(torch.randn(B, T, S, C, dtype=torch.float64), torch.randn(B, T, S, C))
    assert loss.dtype == torch.float32  # computed in float32 like the reference


# ---------------------------------------------------------------- §9.3 V1 λ-return


R_V1 = [1.0, 2.0, 3.0, 4.0]
V_V1 = [10.0, 20.0, 30.0, 40.0]


def test_v1_lambda_return_reference_values():
    r, v = _t(R_V1), _t(V_V1)
    pcont = torch.full((4,), 0.99)
    ret = R.lambda_return_v1v2(r[:3], v[:3], pcont[:3], v[3], lam=0.95)
    torch.testing.assert_close(ret, _t([42.949057, 43.550300, 42.600000]), **TOL)
    torch.testing.assert_close(R.imagination_targets_v1v2(r, v, pcont, 0.95), ret, **TOL)
    torch.testing.assert_close(R.imagination_targets_v1v2(r, v, 0.99, 0.95), ret, **TOL)  # float discount
    torch.testing.assert_close(R.imagination_targets_v1v2(r, v, pcont, 0.0), _t([20.8, 31.7, 42.6]), **TOL)
    torch.testing.assert_close(R.imagination_targets_v1v2(r, v, pcont, 1.0), _t([44.73226, 44.174, 42.6]), **TOL)


def test_v1_weights_and_losses_reference_values():
    r, v = _t(R_V1), _t(V_V1)
    pcont = torch.full((4,), 0.99)
    ret = R.imagination_targets_v1v2(r, v, pcont)
    w = R.imagination_weights_v1v2(pcont)
    torch.testing.assert_close(w, _t([1.0, 0.99, 0.9801]), **TOL)
    torch.testing.assert_close(R.v1_actor_loss(ret, w), _t(-42.605371), **TOL)
    torch.testing.assert_close(R.critic_loss_v1v2(v[:3], ret, w), _t(298.385251), **TOL)
    torch.testing.assert_close(R.critic_loss_v1v2(v[:3], ret, w, constant=True), _t(299.295031), **TOL)


def test_v1_actor_gradient_is_dynamics_backprop():
    r, v = _t(R_V1, True), _t(V_V1, True)
    pcont = torch.full((4,), 0.99)
    loss = R.v1_actor_loss(R.imagination_targets_v1v2(r, v, pcont), R.imagination_weights_v1v2(pcont))
    loss.backward()
    assert r.grad[:3].abs().min() > 0 and r.grad[3] == 0  # last reward is never used
    assert v.grad[1:].abs().min() > 0 and v.grad[0] == 0  # v_0 is never read


def test_critic_loss_stops_target_gradient():
    v_pred, target = _t([1.0, 2.0], True), _t([3.0, 1.0], True)
    w = _t([1.0, 0.5], True)
    R.critic_loss_v1v2(v_pred, target, w).backward()
    torch.testing.assert_close(v_pred.grad, _t([-1.0, 0.25]))  # mean(w (v - T)) / n
    assert target.grad is None and w.grad is None


# ---------------------------------------------------------------- §9.4 V2 targets and losses

R_V2 = [0.5, 1.0, 2.0, 3.0]
DISC_V2 = [0.999, 0.999, 0.0, 0.999]
V_V2 = [5.0, 6.0, 7.0, 8.0]


def _v2_disc():
    head = _t([0.3, 0.999, 0.0, 0.999])  # the start's predicted discount is replaced by data
    return R.first_discount_from_data(head, torch.tensor(False), gamma=0.999)


def test_v2_first_discount_from_data():
    torch.testing.assert_close(_v2_disc(), _t(DISC_V2))
    head = torch.rand(3, 5)
    term = torch.tensor([0.0, 1.0, 0.0])
    out = R.first_discount_from_data(head, term, gamma=0.99)
    torch.testing.assert_close(out[:, 0], _t([0.99, 0.0, 0.99]))
    torch.testing.assert_close(out[:, 1:], head[:, 1:])
    torch.testing.assert_close(R.discount_target(torch.tensor([0, 1]), 0.999), _t([0.999, 0.0]))


def test_v2_targets_weights_critic_reference_values():
    r, v, disc = _t(R_V2), _t(V_V2), _v2_disc()
    target = R.imagination_targets_v1v2(r, v, disc, lam=0.95)
    torch.testing.assert_close(target, _t([3.881977, 3.247750, 2.0]), **TOL)
    full = torch.cumprod(torch.cat([torch.ones(1), disc[:-1]]), 0)  # the reference's seq['weight']
    torch.testing.assert_close(full, _t([1.0, 0.999, 0.998001, 0.0]), **TOL)
    w = R.imagination_weights_v1v2(disc)
    torch.testing.assert_close(w, full[:-1])
    torch.testing.assert_close(R.critic_loss_v1v2(v[:3], target, w), _t(5.627884), **TOL)


def test_v2_actor_losses_reference_values():
    r, v, disc = _t(R_V2), _t(V_V2), _v2_disc()
    target = R.imagination_targets_v1v2(r, v, disc)
    w = R.imagination_weights_v1v2(disc)
    logp, ent = _t([-1.2, -0.7]), _t([1.0, 0.9])
    torch.testing.assert_close(target[1:] - v[:2], _t([-1.75225, -4.0]), **TOL)
    rf = R.v2_actor_loss(target, v, logp, ent, w, "reinforce", ent_scale=1e-3)
    torch.testing.assert_close(rf, _t(-2.450900), **TOL)
    dyn = R.v2_actor_loss(target, v, logp, ent, w, "dynamics", ent_scale=1e-3)
    torch.testing.assert_close(dyn, _t(-2.623825), **TOL)
    both = R.v2_actor_loss(target, v, logp, ent, w, "both", mix=0.1, ent_scale=1e-3)
    # the entropy term is shared, so the mixture is linear in the two losses
    torch.testing.assert_close(both, 0.1 * dyn + 0.9 * rf, **TOL)


def test_v2_actor_gradient_paths():
    r, v = _t(R_V2, True), _t(V_V2, True)
    logp, ent = _t([-1.2, -0.7], True), _t([1.0, 0.9], True)
    disc = _v2_disc()
    w = R.imagination_weights_v1v2(disc)
    target = R.imagination_targets_v1v2(r, v, disc)
    R.v2_actor_loss(target, v, logp, ent, w, "reinforce", ent_scale=1e-3).backward()
    assert r.grad is None and v.grad is None  # advantage is stop-gradient
    # d/dlogp = -w * adv / n ; d/dent = -w * eta / n
    torch.testing.assert_close(logp.grad, _t([1.75225 / 2, 0.999 * 4.0 / 2]), **TOL)
    torch.testing.assert_close(ent.grad, _t([-1e-3 / 2, -0.999e-3 / 2]), **TOL)
    logp.grad = ent.grad = None
    target = R.imagination_targets_v1v2(r, v, disc)
    R.v2_actor_loss(target, v, logp, ent, w, "dynamics").backward()
    assert logp.grad is None  # dynamics backprop ignores log-probs
    assert r.grad[1:3].abs().min() > 0 and v.grad[2:].abs().sum() > 0
    with pytest.raises(ValueError):
        R.v2_actor_loss(target, v, logp, ent, w, "auto")
    with pytest.raises(ValueError):
        R.v2_actor_loss(target, v[:3], logp, ent, w)


# ---------------------------------------------------------------- §9.5 V3 indexing on the same inputs


def test_v3_lambda_return_same_inputs():
    r, v = _t(R_V2), _t(V_V2)
    cont = 0.999 * _t([1.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(imagination_return(r, cont, v, 0.95), _t([3.1978, 2.0, 10.992]), **TOL)


def test_v2_and_v3_indexing_differ_by_one_critic_state():
    """V2's T_{t+1} is V3's ret_t once V3's critic is V2's shifted by one state (SPEC_V1_V2 §0)."""
    torch.manual_seed(0)
    B, H = 4, 6
    r, d, v2 = torch.randn(B, H + 1), torch.rand(B, H + 1), torch.randn(B, H + 1)
    t_v2 = R.imagination_targets_v1v2(r, v2, d)
    ret_v3 = imagination_return(r[:, :H], d[:, :H], v2[:, 1:], 0.95)
    torch.testing.assert_close(t_v2[:, 1:], ret_v3, **TOL)


# ---------------------------------------------------------------- returns: shapes over (B, T)


def test_returns_shapes_and_loop_reference():
    B, N = 3, 16  # V2: start + 15 imagined states
    r, v, d = torch.randn(B, N), torch.randn(B, N), torch.rand(B, N)
    T = R.imagination_targets_v1v2(r, v, d)
    w = R.imagination_weights_v1v2(d)
    assert T.shape == (B, N - 1) and w.shape == (B, N - 1)
    # numpy transcription of the authors' loop (time first)
    rn, vn, dn = r.numpy().T, v.numpy().T, d.numpy().T
    nxt, ret, out = vn[1:], vn[-1], []
    for t in reversed(range(N - 1)):
        ret = rn[t] + dn[t] * ((1 - 0.95) * nxt[t] + 0.95 * ret)
        out.append(ret)
    torch.testing.assert_close(T, torch.from_numpy(np.stack(out[::-1], 1)), **TOL)
    # V1: 15 imagined states (start dropped) over B*T starts
    rr = torch.randn(2, 5, 15)
    assert R.imagination_targets_v1v2(rr, rr, 0.99).shape == (2, 5, 14)
    assert R.imagination_weights_v1v2(torch.full((2, 5, 15), 0.99)).shape == (2, 5, 14)
    with pytest.raises(ValueError):
        R.lambda_return_v1v2(rr, rr, 0.99, torch.zeros(3))


def test_unit_gaussian_nll_and_likelihood_constants():
    img = torch.zeros(2, 3, 64, 64, 3)
    nll = R.unit_gaussian_nll(img, img, event_dims=3, constant=True)
    assert nll.shape == (2, 3)
    torch.testing.assert_close(nll, torch.full((2, 3), 11291.9167), rtol=1e-6, atol=1e-3)
    gray = torch.zeros(64, 64, 1)
    torch.testing.assert_close(R.unit_gaussian_nll(gray, gray, 3, True), _t(3763.9722), rtol=1e-6, atol=1e-3)
    # 0.5 * SSE without the constant, same gradient
    mean, target = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4)
    sse = R.unit_gaussian_nll(mean, target, event_dims=1)
    torch.testing.assert_close(sse, 0.5 * (mean - target).square().sum(-1))
    dist = torch.distributions.Independent(torch.distributions.Normal(mean, 1.0), 1)
    torch.testing.assert_close(R.unit_gaussian_nll(mean, target, 1, True), -dist.log_prob(target), **TOL)
    # §9.9 Bernoulli with a soft target (the existing binary_nll)
    torch.testing.assert_close(binary_nll(_t([0.0, 2.0]), _t([0.999, 0.999])), _t([0.693147, 0.128928]), **TOL)


# ---------------------------------------------------------------- §9.7 output mappings


def test_output_mappings_at_zero():
    zero = torch.zeros(1)
    torch.testing.assert_close(G.gaussian_std(zero), _t([0.793147]), **TOL)
    torch.testing.assert_close(G.gaussian_std(zero, "sigmoid2", 0.1), _t([1.1]), **TOL)
    torch.testing.assert_close(G.gaussian_std(zero, "sigmoid", 0.1), _t([0.6]), **TOL)
    mean, std = G.tanh_normal_params(_t([10.0]), zero)
    torch.testing.assert_close(std, _t([5.0001]), **TOL)
    torch.testing.assert_close(mean, _t([4.820138]), **TOL)
    mean, std = G.trunc_normal_params(zero, zero)
    torch.testing.assert_close(std, _t([1.1]), **TOL)
    torch.testing.assert_close(mean, zero)
    # the floor is additive: the std keeps a gradient far below min_std's "clamp" region
    raw = _t([-10.0], True)
    G.gaussian_std(raw).sum().backward()
    assert raw.grad.item() > 0


# ---------------------------------------------------------------- §9.6 LayerNorm GRU and the V1 GRU


def test_layernorm_gru_reference_step():
    cell = LayerNormGRUCell(1, 1)
    W = _t([[0.3, -0.4, 0.8], [0.1, 0.6, -0.5]])  # rows: x, h
    with torch.no_grad():
        cell.linear.weight.copy_(W.T)
        cell.linear.bias.copy_(_t([0.05, -0.1, 0.2]))
    assert cell.norm.eps == 1e-3 and torch.equal(cell.norm.weight, torch.ones(3))
    x, h = _t([[0.5]]), _t([[-0.2]])
    parts = cell.linear(torch.cat([x, h], -1))
    torch.testing.assert_close(parts, _t([[0.18, -0.42, 0.70]]), **TOL)
    torch.testing.assert_close(cell.norm(parts), _t([[0.058133, -1.249860, 1.191727]]), **TOL)
    torch.testing.assert_close(cell(x, h), _t([[-0.401037]]), **TOL)
    # intermediate values of §9.6
    n = cell.norm(parts)[0]
    reset = torch.sigmoid(n[0])
    torch.testing.assert_close(reset, _t(0.514529), **TOL)
    torch.testing.assert_close(torch.tanh(reset * n[1]), _t(-0.566999), **TOL)
    torch.testing.assert_close(torch.sigmoid(n[2] - 1), _t(0.547785), **TOL)


def test_layernorm_gru_shapes_init_and_options():
    B, T, I, H = 3, 4, 5, 6
    cell = LayerNormGRUCell(I, H)
    assert cell.linear.bias.abs().sum() == 0
    limit = math.sqrt(6 / (I + H + 3 * H))
    assert cell.linear.weight.abs().max() <= limit
    out = cell(torch.randn(B, T, I), torch.randn(B, T, H))
    assert out.shape == (B, T, H)
    # zero pre-activations: update = sigmoid(-1), cand = 0 -> h' = (1 - sigmoid(-1)) h
    with torch.no_grad():
        cell.linear.weight.zero_()
    h = torch.randn(B, H)
    torch.testing.assert_close(cell(torch.randn(B, I), h), (1 - torch.sigmoid(_t(-1.0))) * h, **TOL)
    plain = LayerNormGRUCell(I, H, norm=False, update_bias=0.0)
    assert plain.norm is None and plain(torch.randn(B, I), h).shape == (B, H)
    with pytest.raises(ValueError):
        LayerNormGRUCell(I, H, init="xavier")


def _keras_gru_numpy(x, h, kernel, rec, bias):
    """Keras GRUCell, reset_after=True, gate order (z, r, h), written from the Keras equations."""
    H = h.shape[-1]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    xi = x @ kernel + bias[0]
    hr = h @ rec + bias[1]
    z = sig(xi[:, :H] + hr[:, :H])
    r = sig(xi[:, H:2 * H] + hr[:, H:2 * H])
    hh = np.tanh(xi[:, 2 * H:] + r * hr[:, 2 * H:])
    return z * h + (1 - z) * hh


def test_gru_cell_matches_keras_equations():
    rng = np.random.default_rng(0)
    B, I, H = 4, 3, 5
    kernel = rng.normal(size=(I, 3 * H)).astype(np.float32)
    rec = rng.normal(size=(H, 3 * H)).astype(np.float32)
    bias = rng.normal(size=(2, 3 * H)).astype(np.float32)
    x = rng.normal(size=(B, I)).astype(np.float32)
    h = rng.normal(size=(B, H)).astype(np.float32)
    cell = GRUCell(I, H)
    cell.load_keras_weights(torch.from_numpy(kernel), torch.from_numpy(rec), torch.from_numpy(bias))
    expected = torch.from_numpy(_keras_gru_numpy(x, h, kernel, rec, bias))
    torch.testing.assert_close(cell(torch.from_numpy(x), torch.from_numpy(h)), expected, **TOL)
    # and it is torch's GRUCell, so torch state dicts load as-is
    ref = nn.GRUCell(I, H)
    cell.load_state_dict(ref.state_dict())
    xt, ht = torch.from_numpy(x), torch.from_numpy(h)
    torch.testing.assert_close(cell(xt, ht), ref(xt, ht))


def test_gru_cell_keras_init_and_shapes():
    I, H = 7, 4
    cell = GRUCell(I, H)
    assert cell.bias_ih.abs().sum() == 0 and cell.bias_hh.abs().sum() == 0
    assert cell.weight_ih.abs().max() <= math.sqrt(6 / (I + 3 * H))
    torch.testing.assert_close(cell.weight_hh.T @ cell.weight_hh, torch.eye(H), **TOL)  # orthogonal
    out = cell(torch.randn(2, 3, I), torch.zeros(2, 3, H))
    assert out.shape == (2, 3, H)
    assert GRUCell(I, H, init="torch").bias_ih.abs().sum() > 0
    with pytest.raises(ValueError):
        cell(torch.randn(2, I), torch.zeros(3, H))


# ---------------------------------------------------------------- §9.8 shapes (the k4s2 CNNs to integrate)


@pytest.mark.parametrize("depth,channels,embed", [(32, 3, 1024), (48, 1, 1536)])
def test_v1v2_cnn_shapes(depth, channels, embed):
    """Valid-padding k4s2 encoder and the k(5,5,6,6) s2 decoder (SPEC_V1_V2 §1.2, §2.2)."""
    sizes, x = [], torch.zeros(1, channels, 64, 64)
    c = channels
    for i in range(4):
        x = nn.Conv2d(c, depth * 2**i, 4, stride=2)(x)
        c = depth * 2**i
        sizes.append(x.shape[-1])
    assert sizes == [31, 14, 6, 2] and x.flatten(1).shape[-1] == embed == 32 * depth
    y, c, sizes = torch.zeros(1, 32 * depth, 1, 1), 32 * depth, []
    for i, k in enumerate((5, 5, 6, 6)):
        out = channels if i == 3 else depth * 2 ** (2 - i)
        y = nn.ConvTranspose2d(c, out, k, stride=2)(y)
        c = out
        sizes.append(y.shape[-1])
    assert sizes == [5, 13, 30, 64] and y.shape[1] == channels


def test_feature_sizes():
    assert 30 + 200 == 230  # V1: stoch + deter
    assert 32 * 32 + 600 == 1624 and 32 * 32 + 200 == 1224  # V2 Atari / DMC
    assert 50 * 50 == 2500 and 16 * 50 == 800  # imagination starts: V1 [15, 2500, 230], V2 [16, 800, 1624]
