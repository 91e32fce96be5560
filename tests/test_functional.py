"""Tests of the pure-math layer against the reference values of SPEC §5, §6.3 and §11."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchrl_dreamerv3 import functional as F

TOL = dict(rtol=1e-5, atol=1e-5)


def _t(values):
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- symlog


def test_symlog_reference_values():
    x = _t([-100, -1, 0, 1, 100])
    expected = _t([-4.61512, -0.693147, 0, 0.693147, 4.61512])
    torch.testing.assert_close(F.symlog(x), expected, **TOL)


def test_symexp_inverts_symlog():
    x = _t([-1e4, -3.5, -1e-3, 0, 2e-3, 7.0, 5e4])
    torch.testing.assert_close(F.symexp(F.symlog(x)), x, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- twohot bins


def test_bins_reference_values():
    bins = F.symexp_twohot_bins(255)
    assert bins.shape == (255,) and bins.dtype == torch.float32
    torch.testing.assert_close(bins[126:129], _t([-0.1705578, 0, 0.1705578]), **TOL)
    expected = _t([-2.011271, -1.57251, -1.197679, -0.877463, -0.603905, -0.370205,
                   -0.170558, 0, 0.170558, 0.370205, 0.603905, 0.877463, 1.197679,
                   1.57251, 2.011271])
    torch.testing.assert_close(bins[120:135], expected, **TOL)
    torch.testing.assert_close(bins[-1], torch.tensor(4.851652e8), rtol=1e-6, atol=0)


@pytest.mark.parametrize("num_bins", [5, 255])
def test_bins_symmetric_sorted_exact_zero(num_bins):
    bins = F.symexp_twohot_bins(num_bins)
    assert bins.shape == (num_bins,)
    assert bins[num_bins // 2].item() == 0.0
    assert torch.equal(bins, -bins.flip(0))
    assert (bins[1:] > bins[:-1]).all()


@pytest.mark.parametrize("num_bins", [4, 256, 1])
def test_bins_reject_invalid_counts(num_bins):
    with pytest.raises(ValueError):
        F.symexp_twohot_bins(num_bins)


# ---------------------------------------------------------------- twohot encode


def test_twohot_between_two_bins_hand_computed():
    bins = F.symexp_twohot_bins(255)
    y = 0.25  # between bins[128] = 0.1705578 and bins[129] = 0.370205
    lo, hi = bins[128].item(), bins[129].item()
    enc = F.twohot_encode(torch.tensor(y), bins)
    w_lo = (hi - y) / (hi - lo)
    assert enc.shape == (255,)
    torch.testing.assert_close(enc[128], torch.tensor(w_lo), **TOL)
    torch.testing.assert_close(enc[129], torch.tensor(1 - w_lo), **TOL)
    assert enc.count_nonzero() == 2
    # the encoded mean reproduces the target (linear interpolation between raw bins)
    torch.testing.assert_close((enc * bins).sum(), torch.tensor(y), **TOL)


def test_twohot_exactly_on_a_bin():
    bins = F.symexp_twohot_bins(255)
    for index in (0, 100, 127, 129, 254):
        enc = F.twohot_encode(bins[index], bins)
        expected = torch.zeros(255)
        expected[index] = 1.0
        torch.testing.assert_close(enc, expected, rtol=0, atol=0)


def test_twohot_clips_outside_the_bin_range():
    bins = F.symexp_twohot_bins(5)
    enc = F.twohot_encode(_t([-1e10, 1e10, 2 * bins[-1].item()]), bins)
    torch.testing.assert_close(enc.sum(-1), torch.ones(3), rtol=0, atol=0)
    assert enc[0, 0] == 1.0 and enc[1, -1] == 1.0 and enc[2, -1] == 1.0


def test_twohot_encode_shapes_and_weights_sum_to_one():
    bins = F.symexp_twohot_bins(255)
    target = torch.randn(3, 7, 5) * 100
    enc = F.twohot_encode(target, bins)
    assert enc.shape == (3, 7, 5, 255)
    torch.testing.assert_close(enc.sum(-1), torch.ones(3, 7, 5))
    assert (enc >= 0).all()


# ---------------------------------------------------------------- twohot loss / mean


def _reference_logits():
    return torch.from_numpy(np.random.default_rng(0).normal(size=(4, 255)).astype(np.float32))


def test_twohot_nll_reference_values():
    bins = F.symexp_twohot_bins(255)
    loss = F.twohot_nll(_reference_logits(), _t([0, 1, -3.5, 1000]), bins)
    torch.testing.assert_close(loss, _t([5.785328, 6.814072, 7.085892, 6.185104]), **TOL)


def test_twohot_nll_equals_dense_cross_entropy_and_no_target_grad():
    bins = F.symexp_twohot_bins(255)
    logits = _reference_logits().requires_grad_()
    target = _t([0, 1, -3.5, 1000]).requires_grad_()
    loss = F.twohot_nll(logits, target, bins)
    dense = -(F.twohot_encode(target, bins) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(loss, dense)
    loss.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert target.grad is None


def test_twohot_mean_reference_values():
    bins = F.symexp_twohot_bins(255)
    pred = F.twohot_mean(_reference_logits(), bins)
    torch.testing.assert_close(pred, _t([6049325, -4665303, 10873454, 4159125.5]), **TOL)


def test_twohot_zero_logits():
    bins = F.symexp_twohot_bins(255)
    logits = torch.zeros(2, 3, 255)
    assert (F.twohot_mean(logits, bins) == 0.0).all()  # exactly, thanks to the symmetric sum
    loss = F.twohot_nll(logits, torch.ones(2, 3), bins)
    torch.testing.assert_close(loss, torch.full((2, 3), math.log(255)), **TOL)
    torch.testing.assert_close(loss[0, 0], torch.tensor(5.541264), **TOL)


# ---------------------------------------------------------------- categorical


def test_unimix_probs_and_entropy_reference_values():
    log_probs = F.unimix_log_probs(_t([0, 1, 2, 3]), 0.01)
    probs = log_probs.exp()
    torch.testing.assert_close(probs, _t([0.034238, 0.088773, 0.237014, 0.639975]), **TOL)
    torch.testing.assert_close(-(probs * log_probs).sum(), torch.tensor(0.9573638), **TOL)


def test_unimix_zero_is_log_softmax():
    logits = torch.randn(3, 4, 6)
    torch.testing.assert_close(F.unimix_log_probs(logits, 0.0), torch.log_softmax(logits, -1))


def test_categorical_entropy_is_plain_softmax_entropy():
    logits = torch.randn(2, 5, 7)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(F.categorical_entropy(logits), expected)
    torch.testing.assert_close(F.categorical_entropy(torch.zeros(9)), torch.tensor(math.log(9)))


def test_straight_through_forward_is_onehot_and_grad_is_that_of_probs():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 32, 16, requires_grad=True)
    log_probs = F.unimix_log_probs(logits, 0.01)
    sample = F.sample_onehot_straight_through(log_probs)
    assert sample.shape == (4, 3, 32, 16)
    assert ((sample == 0) | (sample == 1)).all()
    assert (sample.sum(-1) == 1).all()
    weights = torch.randn_like(sample)
    (grad,) = torch.autograd.grad((sample * weights).sum(), logits, retain_graph=True)
    (expected,) = torch.autograd.grad((log_probs.softmax(-1) * weights).sum(), logits)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, expected)


def test_straight_through_sample_frequencies():
    probs = _t([0.1, 0.2, 0.3, 0.4])
    generator = torch.Generator().manual_seed(0)
    samples = F.sample_onehot_straight_through(probs.log().expand(50_000, 4), generator)
    torch.testing.assert_close(samples.mean(0), probs, rtol=0, atol=0.01)
    # the generator makes sampling reproducible
    again = F.sample_onehot_straight_through(
        probs.log().expand(50_000, 4), torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


# ---------------------------------------------------------------- KL


def test_categorical_kl_reference_value():
    lhs = F.unimix_log_probs(_t([[0, 1, 2, 3], [1, 1, 1, 1]]), 0.01)
    rhs = F.unimix_log_probs(_t([[3, 2, 1, 0], [0, 0, 0, 5]]), 0.01)
    torch.testing.assert_close(F.categorical_kl(lhs, rhs), torch.tensor(4.0695157), **TOL)
    dyn, rep = F.dyn_rep_kl(
        _t([[0, 1, 2, 3], [1, 1, 1, 1]]), _t([[3, 2, 1, 0], [0, 0, 0, 5]]))
    torch.testing.assert_close(dyn, torch.tensor(4.0695157), **TOL)
    torch.testing.assert_close(rep, torch.tensor(4.0695157), **TOL)


def test_dyn_rep_gradients_reach_the_right_side():
    torch.manual_seed(0)
    post = (3 * torch.randn(2, 5, 8, 6)).requires_grad_()
    prior = (3 * torch.randn(2, 5, 8, 6)).requires_grad_()
    dyn, rep = F.dyn_rep_kl(post, prior, free_nats=0.0)
    assert dyn.shape == rep.shape == (2, 5)
    g_post, g_prior = torch.autograd.grad(dyn.sum(), (post, prior), allow_unused=True)
    assert g_post is None and g_prior.abs().sum() > 0
    g_post, g_prior = torch.autograd.grad(rep.sum(), (post, prior), allow_unused=True)
    assert g_prior is None and g_post.abs().sum() > 0


def test_free_nats_clamp_elementwise():
    torch.manual_seed(0)
    post = torch.randn(2, 3, 4, 5)
    prior = post + 0.01 * torch.randn(2, 3, 4, 5)  # tiny KL, well below 1 nat
    prior[1] = 5 * torch.randn(3, 4, 5)  # large KL for the second batch row
    post.requires_grad_()
    prior.requires_grad_()
    dyn, rep = F.dyn_rep_kl(post, prior, free_nats=1.0)
    assert (dyn[0] == 1.0).all() and (rep[0] == 1.0).all()
    assert (dyn[1] > 1.0).all() and (rep[1] > 1.0).all()
    g_post, g_prior = torch.autograd.grad((dyn + rep).sum(), (post, prior))
    assert (g_post[0] == 0).all() and (g_prior[0] == 0).all()
    assert g_post[1].abs().sum() > 0 and g_prior[1].abs().sum() > 0


# ---------------------------------------------------------------- normal / binary


def test_bounded_normal_at_zero():
    mean, std = F.bounded_normal(torch.zeros(3, 2), torch.zeros(3, 2))
    assert (mean == 0).all()
    expected = 0.9 * torch.sigmoid(torch.tensor(2.0)) + 0.1
    torch.testing.assert_close(std, expected.expand(3, 2))
    _, std = F.bounded_normal(torch.zeros(2), _t([-1e4, 1e4]))
    torch.testing.assert_close(std, _t([0.1, 1.0]))


def test_normal_log_prob_and_entropy_match_torch():
    torch.manual_seed(0)
    x, mean = torch.randn(4, 6, 3), torch.randn(4, 6, 3)
    std = torch.rand(4, 6, 3) + 0.1
    dist = torch.distributions.Normal(mean, std)
    torch.testing.assert_close(F.normal_log_prob(x, mean, std), dist.log_prob(x).sum(-1))
    torch.testing.assert_close(F.normal_entropy(std), dist.entropy().sum(-1))


def test_binary_nll_reference_values():
    logits = _t([0, 2])
    target = torch.full((2,), 1 - 1 / 333)
    torch.testing.assert_close(F.binary_nll(logits, target), _t([0.693147, 0.132934]), **TOL)
    torch.testing.assert_close(torch.sigmoid(logits), _t([0.5, 0.880797]), **TOL)
    torch.testing.assert_close(  # boolean targets are accepted
        F.binary_nll(logits, torch.tensor([True, False])),
        torch.nn.functional.binary_cross_entropy_with_logits(
            logits, _t([1, 0]), reduction="none"))


# ---------------------------------------------------------------- returns

REW = [0, 1, 0, 2, 1]
VAL = [0.5, 0.4, 0.3, 0.2, 0.1]
CON = [1, 0.9, 1, 0.5, 1]


def test_imagination_return_reference_values():
    ret = F.imagination_return(_t(REW), _t(CON), _t(VAL), lam=0.95)
    torch.testing.assert_close(ret, _t([3.083787, 2.416125, 2.5275, 1.1]), **TOL)
    # same as the general form with live = c (disc 1) and cont = lam (no last flags)
    general = F.lambda_return(_t(REW), _t(CON), torch.full((5,), 0.95), _t(VAL))
    torch.testing.assert_close(ret, general)


def test_replay_return_reference_values():
    flags = torch.tensor([False, False, True, False, False])
    ret = F.replay_return(_t(REW), flags, flags, _t(VAL), lam=0.95, disc=1 - 1 / 333)
    torch.testing.assert_close(ret, _t([1.01994, 0.0, 3.051548, 1.0997]), **TOL)
    ret_float = F.replay_return(_t(REW), flags.float(), flags.float(), _t(VAL))
    torch.testing.assert_close(ret_float, ret)


def test_lambda_return_uses_next_step_flags():
    # live/cont of step 0 never enter; those of step t+1 act on R_t
    reward, boot = _t(REW), _t(VAL)
    live, cont = torch.ones(5), torch.full((5,), 0.95)
    base = F.lambda_return(reward, live, cont, boot)
    live0 = live.clone()
    live0[0] = 0.0
    torch.testing.assert_close(F.lambda_return(reward, live0, cont, boot), base)
    live1 = live.clone()
    live1[1] = 0.0  # step 1 terminal: R_0 = r_1 exactly
    assert F.lambda_return(reward, live1, cont, boot)[0] == reward[1]


def test_lambda_return_shapes_and_batch_consistency():
    torch.manual_seed(0)
    for shape in [(3, 16), (2, 5, 16)]:
        reward, boot = torch.randn(shape), torch.randn(shape)
        cont = torch.rand(shape)
        ret = F.imagination_return(reward, cont, boot)
        assert ret.shape == (*shape[:-1], 15)
        flat = F.imagination_return(
            reward.reshape(-1, 16)[1], cont.reshape(-1, 16)[1], boot.reshape(-1, 16)[1])
        torch.testing.assert_close(ret.reshape(-1, 15)[1], flat)
    is_term = torch.rand(4, 10) < 0.2
    ret = F.replay_return(torch.randn(4, 10), is_term, is_term, torch.randn(4, 10))
    assert ret.shape == (4, 9)


# ---------------------------------------------------------------- return normalisation


def test_percentile_ema_against_numpy():
    torch.manual_seed(0)
    returns = torch.randn(16, 64, 15) * 3 + 1
    lo, hi = torch.tensor(0.5), torch.tensor(2.0)
    lo_new, hi_new = F.percentile_ema(lo, hi, returns.requires_grad_(), rate=0.01)
    flat = returns.detach().numpy().ravel()
    expected_lo = 0.99 * 0.5 + 0.01 * np.percentile(flat, 5.0)
    expected_hi = 0.99 * 2.0 + 0.01 * np.percentile(flat, 95.0)
    assert lo_new.shape == hi_new.shape == ()
    assert not lo_new.requires_grad and not hi_new.requires_grad
    torch.testing.assert_close(lo_new, torch.tensor(expected_lo, dtype=torch.float32), **TOL)
    torch.testing.assert_close(hi_new, torch.tensor(expected_hi, dtype=torch.float32), **TOL)


def test_percentile_interpolation_on_small_input():
    # 11 sorted values 0..10: percentile 5 -> 0.5, percentile 95 -> 9.5 (linear interpolation)
    returns = torch.arange(11.0).flip(0)
    lo, hi = F.percentile_ema(torch.tensor(0.0), torch.tensor(0.0), returns, rate=1.0)
    torch.testing.assert_close(lo, torch.tensor(0.5))
    torch.testing.assert_close(hi, torch.tensor(9.5))


def test_return_scale_limit():
    assert F.return_scale(torch.tensor(0.2), torch.tensor(0.7)).item() == 1.0
    assert F.return_scale(torch.tensor(-2.0), torch.tensor(3.0)).item() == 5.0
    assert F.return_scale(torch.tensor(0.0), torch.tensor(0.5), limit=0.1).item() == 0.5
