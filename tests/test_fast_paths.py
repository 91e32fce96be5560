"""The speed-motivated code paths equal the plain formulations they replace (values and gradients).

Each test pins one rewrite made for CPU speed (benchmarks/learner_speed.py) to the straightforward
formula: fused norms, per-phase up-sampling convs, the kernel-padded SAME conv, the split head
layer, the RSSM step with hoisted weights, the inverse-CDF latent sampler, the antisymmetric
twohot mean, and the shared critic / policy passes between ActorLoss and ValueLoss.
"""
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torchrl.data import Bounded, OneHot
from torchrl.modules import ProbabilisticActor

import torchrl_dreamerv3.functional as Fn
from torchrl_dreamerv3.functional.distributions import _log_softmax, _softmax
from torchrl_dreamerv3.modules import make_dreamerv3
from torchrl_dreamerv3.nets import ChannelRMSNorm, MLPHead, SameStridedConv2d, TransposedConv2d, UpsampleConv2d
from torchrl_dreamerv3.nets.layers import _FUSED_NORM_MIN_NUMEL, rms_norm_act
from torchrl_dreamerv3.objectives import ActorLoss, ValueLoss
from torchrl_dreamerv3.rssm import RSSM

from test_rssm import _literal_core

TOL = dict(rtol=1e-5, atol=1e-5)


def _grads(out, inputs, seed=0):
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * weights).sum(), inputs)


def _close(a, b, **tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **(tol or TOL))


# ---------------------------------------------------------------- norms

@pytest.mark.parametrize("shape", [(3, 7, 64), (_FUSED_NORM_MIN_NUMEL // 64 + 5, 64), (5, 8)])
@pytest.mark.parametrize("act", [False, True])
def test_rms_norm_act_equals_rms_norm_and_silu(shape, act):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = (torch.rand(shape[-1]) + 0.5).requires_grad_()
    fast = rms_norm_act(x, w, 1e-4, act)
    plain = F.rms_norm(x, (shape[-1],), w, 1e-4)
    plain = F.silu(plain) if act else plain
    torch.testing.assert_close(fast, plain, **TOL)
    _close(_grads(fast, (x, w)), _grads(plain, (x, w)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", [False, True])
def test_rms_norm_act_in_bf16_is_the_float32_norm_cast_back(act):
    # precision=bfloat16: the norm in float32, its output cast to bf16, SiLU in bf16 (the reference's mixed
    # precision); the fused path must give what the plain ops give, and hold only the bf16 input
    torch.manual_seed(0)
    shape = (_FUSED_NORM_MIN_NUMEL // 64 + 5, 64)
    x = torch.randn(*shape).bfloat16().requires_grad_()
    w = (torch.rand(64) + 0.5).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fast = rms_norm_act(x, w, 1e-4, act)
    plain = F.rms_norm(x.float(), (64,), w, 1e-4).bfloat16()
    plain = F.silu(plain) if act else plain
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast, plain, rtol=1.6e-2, atol=1e-2)  # bf16: 8 bits of mantissa
    gx_fast, gw_fast = _grads(fast.float(), (x, w))
    gx_plain, gw_plain = _grads(plain.float(), (x, w))
    assert gx_fast.dtype == torch.bfloat16 and gw_fast.dtype == torch.float32
    torch.testing.assert_close(gx_fast.float(), gx_plain.float(), rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(gw_fast, gw_plain, rtol=1e-2, atol=1e-1)  # a sum over 16k rows
    assert all(t.dtype != torch.float32 for t in saved if t.shape == x.shape)  # no float32 copy of x held


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("act", [False, True])
def test_channel_rms_norm_is_per_pixel_rms_norm(memory_format, act):
    torch.manual_seed(0)
    norm = ChannelRMSNorm(8, act=act)
    torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
    x = torch.randn(64, 8, 12, 10).contiguous(memory_format=memory_format).requires_grad_()
    fast = norm(x)
    plain = x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-4) * norm.weight[:, None, None]
    plain = F.silu(plain) if act else plain
    torch.testing.assert_close(fast, plain, **TOL)
    _close(_grads(fast, (x, norm.weight)), _grads(plain, (x, norm.weight)), rtol=1e-4, atol=1e-4)


def test_fused_norm_act_keeps_only_its_input_for_the_backward():
    # SiLU's input is recomputed in the backward: of the tensors the size of x, only x itself is held
    x = torch.randn(_FUSED_NORM_MIN_NUMEL // 64 + 5, 64)
    w = torch.ones(64, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer_input = (x * 1.0).requires_grad_()
        rms_norm_act(layer_input, w, 1e-4, act=True)
    full_size = [t for t in saved if t.shape == x.shape]
    assert len(full_size) == 1 and full_size[0] is layer_input


def test_small_class_softmax_equals_torch():
    logits = torch.randn(50, 32, 4, requires_grad=True)
    torch.testing.assert_close(_softmax(logits), torch.softmax(logits, -1))
    torch.testing.assert_close(_log_softmax(logits), torch.log_softmax(logits, -1))
    _close(_grads(_log_softmax(logits), (logits,)), _grads(torch.log_softmax(logits, -1), (logits,)))


# ---------------------------------------------------------------- convs

@pytest.mark.parametrize("kernel", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_transposed_conv_equals_zero_stuffed_same_conv(kernel, memory_format):
    torch.manual_seed(0)
    conv = TransposedConv2d(3, 4, kernel)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 5, 6).contiguous(memory_format=memory_format).requires_grad_()
    up = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
    keep = (torch.arange(10) % 2 == 1)[:, None] & (torch.arange(12) % 2 == 1)[None, :]
    before = (kernel - 1) // 2  # JAX 'SAME': the smaller half of the padding goes first
    after = kernel - 1 - before
    plain = F.conv2d(F.pad(up * keep, (before, after, before, after)), conv.weight, conv.bias)
    fast = conv(x)
    assert fast.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(fast, plain, **TOL)
    _close(_grads(fast, (x, conv.weight, conv.bias)), _grads(plain, (x, conv.weight, conv.bias)))


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_upsample_conv_equals_conv_of_nearest_upsampling(kernel, memory_format):
    torch.manual_seed(0)
    conv = UpsampleConv2d(3, 4, kernel)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 5, 6).contiguous(memory_format=memory_format).requires_grad_()
    plain = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), conv.weight, conv.bias, padding=kernel // 2)
    fast = conv(x)
    assert fast.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(fast, plain, **TOL)
    _close(_grads(fast, (x, conv.weight, conv.bias)), _grads(plain, (x, conv.weight, conv.bias)))


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_same_strided_conv_equals_explicit_padding(kernel):
    torch.manual_seed(0)
    conv = SameStridedConv2d(3, 4, kernel)
    x = torch.randn(2, 3, 16, 12).contiguous(memory_format=torch.channels_last).requires_grad_()
    total = kernel - 2
    pad = (total // 2, total - total // 2) * 2
    plain = F.conv2d(F.pad(x, pad), conv.weight, conv.bias, stride=2)
    fast = conv(x)
    torch.testing.assert_close(fast, plain, **TOL)
    _close(_grads(fast, (x, conv.weight)), _grads(plain, (x, conv.weight)))


# ---------------------------------------------------------------- heads, twohot

def test_head_first_layer_split_equals_concat_features():
    torch.manual_seed(0)
    head = MLPHead(16, 3, 4, layers=2, units=8, out_features=5)
    deter = torch.randn(2, 7, 16, requires_grad=True)
    stoch = torch.randn(2, 7, 3, 4, requires_grad=True)
    fast = head(deter, stoch)
    plain = head.out(head.mlp(torch.cat([deter, stoch.flatten(-2)], -1)))
    torch.testing.assert_close(fast, plain, **TOL)
    params = (deter, stoch, *head.parameters())
    _close(_grads(fast, params), _grads(plain, params))


def test_twohot_mean_is_the_expectation_and_exactly_zero_when_uniform():
    bins = Fn.symexp_twohot_bins(255)
    logits = 3 * torch.randn(100, 255)
    exact = (torch.softmax(logits.double(), -1) * bins.double()).sum(-1)
    # float32 probabilities times bins up to 4.85e8: compare at float32 precision
    torch.testing.assert_close(Fn.twohot_mean(logits, bins).double(), exact, rtol=1e-5, atol=1e-3)
    assert (Fn.twohot_mean(torch.zeros(4, 255), bins) == 0).all()


def test_twohot_nll_on_normalized_log_probs():
    bins = Fn.symexp_twohot_bins(255)
    logits, target = torch.randn(10, 255), 50 * torch.randn(10)
    torch.testing.assert_close(Fn.twohot_nll(torch.log_softmax(logits, -1), target, bins, normalized=True),
                               Fn.twohot_nll(logits, target, bins))


# ---------------------------------------------------------------- RSSM

def test_core_step_with_hoisted_weights_matches_literal_spec_with_gradients():
    torch.manual_seed(0)
    rssm = RSSM(3, 10, deter=16, hidden=4, stoch=3, classes=5, blocks=4)
    for p in rssm.parameters():
        torch.nn.init.normal_(p, std=0.3)
    h = torch.randn(7, 16, requires_grad=True)
    z, a = torch.randn(7, 3, 5), 3 * torch.randn(7, 3)
    core = rssm.core
    fast = core.step(h, z, core.embed_action(a), core.step_weights())
    plain = _literal_core(core, h, z, a)
    torch.testing.assert_close(fast, plain, **TOL)
    params = (h, *core.parameters())
    _close(_grads(fast, params), _grads(plain, params), rtol=1e-4, atol=1e-5)


def test_unimix_sampler_matches_the_distribution_and_straight_through_gradient():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = probs.log().expand(100_000, 4)
    samples = Fn.sample_unimix_onehot(logits, 0.0, torch.Generator().manual_seed(0))
    assert ((samples == 0) | (samples == 1)).all() and (samples.sum(-1) == 1).all()
    torch.testing.assert_close(samples.mean(0), probs, rtol=0, atol=0.01)
    again = Fn.sample_unimix_onehot(logits, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)
    mixed = Fn.sample_unimix_onehot(torch.full((100_000, 5), -1e9).index_fill(1, torch.tensor([0]), 0.0), 0.5)
    assert abs(1 - mixed[:, 0].mean().item() - 0.5 * 4 / 5) < 0.01  # unimix reaches the other classes
    # straight-through: the gradient is that of the unimixed probabilities, as in the Gumbel version
    logits = torch.randn(6, 3, 4, requires_grad=True)
    sample = Fn.sample_unimix_onehot(logits, 0.01)
    expected = Fn.sample_onehot_straight_through(Fn.unimix_log_probs(logits, 0.01))
    _close(_grads(sample, (logits,)), _grads(expected, (logits,)))
    with torch.no_grad():
        assert not Fn.sample_unimix_onehot(logits, 0.01).requires_grad


def test_observe_skips_no_reset_multiplications_without_changing_results():
    torch.manual_seed(0)
    rssm = RSSM(3, 10, deter=16, hidden=4, stoch=3, classes=5, blocks=4)
    B, T = 3, 6
    tokens, actions = torch.randn(B, T, 10), torch.randn(B, T, 3)
    deter0 = torch.randn(B, 16)
    stoch0 = F.one_hot(torch.randint(0, 5, (B, 3)), 5).float()
    for is_first in (torch.zeros(B, T, dtype=torch.bool), torch.ones(B, T, dtype=torch.bool)):
        torch.manual_seed(1)
        seq = rssm.observe(deter0, stoch0, actions, tokens, is_first)
        torch.manual_seed(1)
        deter, stoch = deter0, stoch0
        for t in range(T):
            deter, stoch, _ = rssm.observe_step(deter, stoch, actions[:, t], tokens[:, t], is_first[:, t])
            torch.testing.assert_close(seq[0][:, t], deter, **TOL)


# ---------------------------------------------------------------- actor / value: shared passes

class _ActorWithoutParams(ProbabilisticActor):
    """Hides dist_params_keys, so ActorLoss re-runs the policy on the trajectory (the generic path)."""

    dist_params_keys = None


def _losses(agent, data, share: bool, reuse_policy: bool):
    actor = agent.actor
    if not reuse_policy:
        actor = _ActorWithoutParams(actor.module[0], in_keys=actor.module[-1].in_keys, out_keys=actor.out_keys[-1:],
                                    distribution_class=actor.module[-1].distribution_class,
                                    default_interaction_type=actor.module[-1].default_interaction_type)
    actor_loss = ActorLoss(actor, agent.critic, agent.reward, agent.cont, agent.imagine_step, share_critic=share)
    value_loss = ValueLoss(agent.critic)
    torch.manual_seed(3)
    out = actor_loss(data)
    out.update(value_loss(data))
    return out, data["imagined"]


@pytest.mark.parametrize("spec", [OneHot(3), Bounded(-1.0, 1.0, (2,))])
def test_shared_critic_and_policy_passes_give_the_same_losses_and_gradients(spec):
    torch.manual_seed(0)
    agent = make_dreamerv3({"observation": (5,)}, spec, "debug")
    with torch.no_grad():  # zero-initialised heads would make every gradient below trivially zero
        for p in [*agent.reward.parameters(), *agent.critic.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    data = TensorDict({
        "deter": torch.randn(2, 4, 8), "stoch": F.one_hot(torch.randint(0, 4, (2, 4, 2)), 4).float(),
        "reward": torch.randn(2, 4, 1), "is_terminal": torch.zeros(2, 4, 1, dtype=torch.bool),
        "is_last": torch.zeros(2, 4, 1, dtype=torch.bool),
    }, batch_size=[2, 4])
    fast, fast_traj = _losses(agent, data.clone(), share=True, reuse_policy=True)
    plain, plain_traj = _losses(agent, data.clone(), share=False, reuse_policy=False)
    assert "value_logits" in fast_traj.keys() and "value_logits" not in plain_traj.keys()
    torch.testing.assert_close(fast_traj["action"], plain_traj["action"])  # same samples: same RNG use
    params = [p for p in agent.parameters()]
    for key in ("loss_policy", "loss_value", "loss_repval"):
        torch.testing.assert_close(fast[key], plain[key], **TOL)
        g_fast = torch.autograd.grad(fast[key], params, retain_graph=True, allow_unused=True)
        g_plain = torch.autograd.grad(plain[key], params, retain_graph=True, allow_unused=True)
        for a, b in zip(g_fast, g_plain):
            assert (a is None) == (b is None), key
            if a is not None:
                torch.testing.assert_close(a, b, **TOL)


@pytest.mark.skipif(shutil.which("g++") is None or os.environ.get("ATEN_CPU_CAPABILITY") == "default",
                    reason="inductor's CPU code generation needs g++ and ATen's vectorised ISA")
def test_compiled_twohot_mean_is_exactly_zero_when_uniform():
    """Zero-initialised reward and value heads must predict 0 under compilation too. The reference's
    symmetric sum is meant to give this, but XLA on CPU reassociates it: jitted at uniform probabilities
    it returns -0.166 (docs/results.md, side by side), so its imagined rewards, values and advantages at
    initialisation are that offset's echo. Ours subtracts the mirrored halves first, which no reordering undoes."""
    bins = Fn.symexp_twohot_bins(255)
    compiled = torch.compile(Fn.twohot_mean, backend="inductor", fullgraph=True)
    assert (compiled(torch.zeros(4, 255), bins) == 0).all()
    logits = torch.randn(4, 255)
    torch.testing.assert_close(compiled(logits, bins), Fn.twohot_mean(logits, bins), rtol=1e-5, atol=1e-3)
